"""Result tables on disk: CSV (fixed columns) or JSON (a list of row objects), chosen by the
file name and written atomically; and the tables of `--shard` runs merged into one."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from tumorcli.errors import BadInput, first_line
from tumorcli.io.atomic import atomic_file

DECIMALS = 6


def check_table_path(path: Path) -> None:
    """BadInput unless `path` ends in .csv or .json (call before any work is done)."""
    if path.suffix.lower() not in (".csv", ".json"):
        raise BadInput(f"{path}: output must end in .csv or .json", "name it e.g. results.csv")


def write_rows(path: Path, columns: tuple[str, ...], rows: list[dict]) -> Path:
    """Write `rows` (dicts with at least `columns`) to `path`: CSV with exactly `columns`, or
    JSON. Floats are rounded to 6 decimals; None becomes an empty CSV cell / JSON null."""
    check_table_path(path)
    cleaned = [{column: _clean(row.get(column)) for column in columns} for row in rows]
    with atomic_file(path) as temporary:
        if path.suffix.lower() == ".json":
            temporary.write_text(json.dumps(cleaned, indent=1) + "\n")
        else:
            with open(temporary, "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=list(columns))
                writer.writeheader()
                writer.writerows({k: "" if v is None else v for k, v in row.items()}
                                 for row in cleaned)
    return path


def _clean(value):
    if isinstance(value, float):
        return round(value, DECIMALS)
    if hasattr(value, "item"):  # numpy scalars
        return _clean(value.item())
    return value


def json_safe(rows: list[dict]) -> list[dict]:
    """Strict JSON has no infinity or NaN: write them as the strings "inf", "-inf", "nan"."""
    return [{k: str(v) if isinstance(v, float) and not math.isfinite(v) else v
             for k, v in row.items()} for row in rows]


SUMMARY_CASES = ("mean", "sd")  # the first key column of a summary row holds one of these


@dataclass(frozen=True)
class TableLayout:
    """One kind of result table, for merging shards: its columns, the columns that name a row,
    and how its summary rows are computed from the others (every other column a number)."""

    columns: tuple[str, ...]
    key: tuple[str, ...]  # e.g. ("case", "region"): one row per key
    summary: Callable[[list[dict]], list[dict]] | None = None  # rows → "mean"/"sd" rows
    order: Callable[[dict], Any] | None = None  # sort key of the rows; default the first key


@dataclass(frozen=True)
class MergedTable:
    """Rows of several tables of one layout, sorted, without duplicates, and new summary rows."""

    layout: TableLayout
    json: bool  # read from (and to be written as) .json tables
    rows: list[dict]
    summary: list[dict]
    duplicates: int  # rows dropped because an earlier table held the same row


def read_table(path: Path) -> tuple[tuple[str, ...] | None, list[dict]]:
    """(columns, rows) of a table written by `write_rows`, cells as written (CSV: text). An
    empty JSON table has no columns (None). BadInput naming the file when it is not a table."""
    check_table_path(path)
    if not path.is_file():
        raise BadInput(f"{path}: not found", "give the tables written by the --shard runs")
    try:
        if path.suffix.lower() == ".json":
            return _read_json_table(path)
        with open(path, newline="", encoding="utf-8") as handle:
            lines = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error, json.JSONDecodeError) as error:
        raise BadInput(f"{path}: cannot be read as a table ({first_line(error)})",
                       "give the tables written by the --shard runs") from None
    if not lines:
        raise BadInput(f"{path}: is empty, not even a header", "rerun the shard that wrote it")
    columns = tuple(lines[0])
    for number, cells in enumerate(lines[1:], start=2):
        if len(cells) != len(columns):
            raise BadInput(f"{path}: line {number} has {len(cells)} cells, the header "
                           f"{len(columns)}", "rerun the shard that wrote it")
    return columns, [dict(zip(columns, cells)) for cells in lines[1:]]


def _read_json_table(path: Path) -> tuple[tuple[str, ...] | None, list[dict]]:
    rows = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise BadInput(f"{path}: not a table (a JSON list of row objects)",
                       "give the tables written by the --shard runs")
    if not rows:
        return None, []
    columns = tuple(rows[0])
    for number, row in enumerate(rows, start=1):
        if tuple(row) != columns:
            raise BadInput(f"{path}: row {number} has other columns than row 1",
                           "rerun the shard that wrote it")
    return columns, rows


def merge_tables(paths: Sequence[Path], layouts: Sequence[TableLayout],
                 verb: str) -> MergedTable:
    """The rows of `paths` (tables of `tumor <verb>`, all .csv or all .json, all with the columns
    of one of `layouts`) sorted by case, rows seen before dropped and the summary rows
    ("mean", "sd") computed anew from all the others. BadInput naming the file whose columns
    differ, or that holds another value for a row seen before."""
    for path in paths:
        check_table_path(path)
    if len({path.suffix.lower() for path in paths}) > 1:
        raise BadInput(f"{', '.join(map(str, paths))}: a mix of .csv and .json tables",
                       "merge tables of one format")
    first: Path | None = None
    layout: TableLayout | None = None
    seen: dict[tuple, tuple[dict, dict, Path]] = {}  # key → (row as read, numbers, table)
    duplicates = 0
    for path in paths:
        columns, rows = read_table(path)
        if columns is None:
            continue  # an empty JSON table (a shard without cases)
        if layout is None:
            layout = next((kind for kind in layouts if kind.columns == columns), None)
            if layout is None:
                raise BadInput(f"{path}: not a table of tumor {verb} (columns "
                               f"{','.join(columns)})",
                               f"give the tables written by tumor {verb} --shard … -o")
            first = path
        elif columns != layout.columns:
            raise BadInput(f"{path}: its columns differ from those of {first} "
                           f"({_difference(columns, layout.columns)})",
                           "merge tables of one verb run with the same options on every shard")
        for row in rows:
            if layout.summary is not None and row[layout.key[0]] in SUMMARY_CASES:
                continue  # recomputed below over every case
            key = tuple(row[column] for column in layout.key)
            if key in seen:
                earlier, _, where = seen[key]
                if earlier != row:
                    raise BadInput(f"{path}: {'/'.join(map(str, key))} differs from the same "
                                   f"row in {where}", "keep one run per case, e.g. drop the "
                                   "older shard's table")
                duplicates += 1
                continue
            seen[key] = (row, _numbers(row, layout, path) if layout.summary else row, path)
    if layout is None:  # only empty JSON tables: nothing to merge, nothing lost
        return MergedTable(TableLayout((), ()), True, [], [], duplicates)
    order = layout.order or (lambda row: row[layout.key[0]])
    kept = sorted(seen.values(), key=lambda entry: order(entry[0]))
    rows = [row for row, _, _ in kept]
    summary = layout.summary([numbers for _, numbers, _ in kept]) \
        if layout.summary is not None and rows else []
    return MergedTable(layout, paths[0].suffix.lower() == ".json", rows, summary, duplicates)


def _difference(columns: tuple[str, ...], expected: tuple[str, ...]) -> str:
    missing = [c for c in expected if c not in columns]
    extra = [c for c in columns if c not in expected]
    parts = ([f"missing {','.join(missing)}"] if missing else []) + \
        ([f"extra {','.join(extra)}"] if extra else [])
    return "; ".join(parts) or "in another order"


def _numbers(row: dict, layout: TableLayout, path: Path) -> dict:
    """The row with every cell outside the key as a float (empty or None → NaN), for the
    summary rows."""
    numbers = {}
    for column, cell in row.items():
        if column in layout.key:
            numbers[column] = cell
            continue
        try:
            numbers[column] = math.nan if cell is None or cell == "" else float(cell)
        except (TypeError, ValueError):
            key = "/".join(str(row[c]) for c in layout.key)
            raise BadInput(f"{path}: {column} of {key} is {cell!r}, not a number",
                           "rerun the shard that wrote it") from None
    return numbers


def write_merged(path: Path, merged: MergedTable) -> Path:
    """Write a MergedTable to `path`, in the format it was read in."""
    if (path.suffix.lower() == ".json") != merged.json:
        raise BadInput(f"{path}: the merged tables are {'.json' if merged.json else '.csv'}",
                       "name the output with the tables' own suffix")
    summary = json_safe(merged.summary) if merged.json else merged.summary
    return write_rows(path, merged.layout.columns, merged.rows + summary)
