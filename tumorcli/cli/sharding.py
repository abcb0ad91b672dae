"""`--shard I/N|auto`: one part of a cohort per cluster array task, and `--merge`: the parts'
tables joined into one. Shared by preprocess, segment, volumes, evaluate, evaluate-image
and predict-post --cohort.

Part I of N (1-based) holds the items at positions I−1, I−1+N, … of the items sorted by name
(subject or case id), so N tasks cover every item exactly once, whatever order they run in.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Callable, Optional, Sequence

import typer

from tumorcli.errors import BadInput

SLURM_ARRAY = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_COUNT")


def shard_option(items: str) -> Any:
    """The --shard option of a verb whose work is `items` ("the subjects sorted by name")."""
    return Annotated[Optional[str], typer.Option(
        "--shard", help=f"I/N: only part I of N (1-based) of {items}, for cluster arrays; "
        "auto: this SLURM array task's part (SLURM_ARRAY_TASK_ID − SLURM_ARRAY_TASK_MIN of "
        "SLURM_ARRAY_TASK_COUNT).", show_default=False)]


Merge = Annotated[bool, typer.Option(
    "--merge", help="Join the tables of --shard runs, given as arguments, into -o (same "
    "format): rows sorted by case, duplicates dropped, the mean/SD rows recomputed.")]


def shard_part(shard: str) -> tuple[int, int]:
    """(part, parts) of `--shard`, part 0-based: I/N gives (I − 1, N); auto reads the SLURM
    array task. BadInput for anything else."""
    if shard.strip().lower() == "auto":
        return _slurm_array_part()
    try:
        part, parts = (int(n) for n in shard.split("/"))
    except ValueError:
        part, parts = 0, 0
    if not 1 <= part <= parts:
        raise BadInput(f"--shard {shard}: expected I/N with 1 ≤ I ≤ N, or auto",
                       "e.g. --shard 2/8, or --shard auto in a SLURM array job")
    return part - 1, parts


def check_shard(shard: str | None) -> None:
    """BadInput for a --shard that is neither I/N nor auto in a SLURM array (before any work)."""
    if shard is not None:
        shard_part(shard)


def _slurm_array_part() -> tuple[int, int]:
    missing = [name for name in SLURM_ARRAY if not os.environ.get(name, "").strip()]
    if missing:
        raise BadInput(f"--shard auto: {', '.join(missing)} not set, so this is not a SLURM "
                       "array task", "run it inside a SLURM array job (sbatch --array=1-N), "
                       "or give --shard I/N")
    try:
        task, first, count = (int(os.environ[name]) for name in SLURM_ARRAY)
        last = int(os.environ.get("SLURM_ARRAY_TASK_MAX") or first + count - 1)
    except ValueError:
        found = ", ".join(f"{name}={os.environ[name]}" for name in SLURM_ARRAY)
        raise BadInput(f"--shard auto: {found}: not whole numbers",
                       "run it inside a SLURM array job, or give --shard I/N") from None
    # A stepped or gapped array (--array=0-9:2, 1-3,7) would leave parts that no task runs.
    if count < 1 or last - first + 1 != count:
        raise BadInput(f"--shard auto: the {count} SLURM array tasks are numbered {first}–"
                       f"{last}, not one after another", "submit with --array=1-N (no step, "
                       "no gaps), or give --shard I/N")
    if not first <= task <= last:
        raise BadInput(f"--shard auto: SLURM_ARRAY_TASK_ID {task} lies outside the array's "
                       f"{first}–{last}", "run it inside a SLURM array job, or give --shard I/N")
    return task - first, count


def take_shard(items: Sequence, shard: str | None,
               key: Callable[[Any], Any] = lambda subject: subject.name) -> list:
    """Part `shard` (I/N or auto) of `items` sorted by `key` (default: their .name); every item,
    in its given order, without --shard."""
    if shard is None:
        return list(items)
    part, parts = shard_part(shard)
    return [item for index, item in enumerate(sorted(items, key=key)) if index % parts == part]


def shard_pairs(matched, shard: str | None, case_of: Callable[[Path], str]):
    """The CasePairs of part `shard` of the cases sorted by case id: the pairs and the files
    found on one side only (their case id by `case_of`), so each shard reports its own."""
    from tumorcli.metrics.cases import CasePairs

    if shard is None:
        return matched
    cases = {case for case, _, _ in matched.pairs}
    cases |= {case_of(path) for path in matched.prediction_only + matched.reference_only}
    kept = set(take_shard(sorted(cases), shard, key=str))
    return CasePairs([pair for pair in matched.pairs if pair[0] in kept],
                     [path for path in matched.prediction_only if case_of(path) in kept],
                     [path for path in matched.reference_only if case_of(path) in kept])


def check_merge(tables: list[Path] | None, output: Path | None, **not_with_merge: Any) -> None:
    """BadInput unless --merge has tables to join and an -o, and none of the options that
    choose what to measure (named by keyword: their values, None when not given)."""
    given = [name for name, value in not_with_merge.items() if value not in (None, False, [])]
    if given:
        options = ", ".join(f"--{name.replace('_', '-')}" for name in given)
        raise BadInput(f"--merge joins finished tables: {options} cannot go with it",
                       "e.g. tumor evaluate --merge shard-*.csv -o all.csv")
    if not tables:
        raise BadInput("--merge needs the tables of the shards as arguments",
                       "e.g. --merge shard-*.csv -o all.csv")
    if output is None:
        raise BadInput("--merge needs -o/--output for the joined table", "e.g. -o all.csv")


def merge_shard_tables(tables: list[Path], output: Path, layouts: Sequence, verb: str,
                       quiet: bool, as_json: bool) -> None:
    """Join the tables of a verb's shards into `output` (see metrics.tables.merge_tables)."""
    from tumorcli.cli.common import console, finish
    from tumorcli.metrics.tables import check_table_path, merge_tables, write_merged

    check_table_path(output)
    merged = merge_tables(tables, layouts, verb)
    write_merged(output, merged)
    result = {"merged": [str(path) for path in tables], "output": str(output),
              "rows": len(merged.rows), "duplicates_dropped": merged.duplicates,
              "summary_rows": len(merged.summary)}

    def show(result: dict) -> None:
        dropped = result["duplicates_dropped"]
        console().print(f"[green]merged[/] {len(result['merged'])} tables ({result['rows']} rows"
                        + (f", {dropped} duplicates dropped" if dropped else "")
                        + f") into {result['output']}")

    finish(result, as_json=as_json, quiet=quiet, human=show)


def merged_or_checked(merge: bool, tables: list[Path] | None, output: Path | None,
                      layouts: Sequence, verb: str, quiet: bool, as_json: bool,
                      pred: Path | None, ref: Path | None, what: str, example: str,
                      **not_with_merge: Any) -> bool:
    """The start of a verb that scores --pred against --ref or, with --merge, joins its shards'
    tables: True when it merged (the verb is done); otherwise BadInput unless both --pred and
    --ref are given (and no table arguments). what: "masks"/"images"; example: a usage."""
    if merge:
        check_merge(tables, output, pred=pred, ref=ref, **not_with_merge)
        merge_shard_tables(tables, output, layouts, verb, quiet, as_json)
        return True
    if tables:
        raise BadInput(f"{tables[0]}: tables are read only with --merge",
                       f"add --merge, or give the {what} with --pred and --ref")
    if pred is None or ref is None:
        raise BadInput(f"give --pred and --ref ({what} or folders of them)", f"e.g. {example}")
    return False
