"""Result tables on disk: CSV (fixed columns) or JSON (a list of row objects), chosen by the
file name and written atomically."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from tumorcli.errors import BadInput
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
