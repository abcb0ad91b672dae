"""Which subjects a verb works on: -i SUBJECT_OR_COHORT or --t1n/--t1c/--t2w/--t2f files, and
`--shard I/N|auto` for cluster arrays (see sharding.py). Shared by preprocess and segment."""

from __future__ import annotations

from pathlib import Path

from tumorcli.cli.sharding import take_shard  # noqa: F401  (part I of N of the subjects by name)
from tumorcli.errors import BadInput


def subjects_from_options(input: Path | None, files: dict, name: str | None) -> list:
    """SubjectInputs for -i (a subject or a cohort folder) or for explicit modality files."""
    from tumorcli.preprocess.inputs import SubjectInputs, find_cohort

    given = {m: p for m, p in files.items() if p is not None}
    if (input is None) == (not given):
        raise BadInput("give -i SUBJECT_OR_COHORT, or --t1c FILE (and --t1n/--t2w/--t2f)",
                       "one of the two, not both")
    if given:
        if "t1c" not in given:
            raise BadInput("--t1c is missing: every modality is registered to the T1c",
                           "add --t1c FILE")
        for modality, path in given.items():
            if not path.exists():
                raise BadInput(f"{path}: --{modality} file not found", "check the path")
        stem = given["t1c"].name.split(".")[0]
        stem = stem[:-4] if stem.lower().endswith(("-t1c", "_t1c")) else stem
        return [SubjectInputs(name or stem, given)]
    if not input.exists():
        raise BadInput(f"{input}: not found", "check the path given to -i/--input")
    return find_cohort(input)
