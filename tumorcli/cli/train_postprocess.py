"""`tumor train postprocess`: choose (again) a segmentation model's or a refiner's small-region
post-processing on sessions it did not train on and keep it in the model's config.json."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from tumorcli.cli.common import Device, Json, Quiet, console, finish, start
from tumorcli.cli.train import train_app


class TuningSessions(str, Enum):
    val = "val"
    all = "all"


@train_app.command("postprocess")
def postprocess(
    model: Annotated[str, typer.Option("--model", help="Segmentation model or refiner folder "
                                       "(or name) with its split.json.")],
    data: Annotated[Path, typer.Option("--data", help="A labelled cohort: the one it was "
                                       "trained on (its val sessions are read), or with "
                                       "--sessions all one it never saw.")],
    sessions: Annotated[TuningSessions, typer.Option(
        "--sessions", help="val: the model's val split in --data; all: every labelled session "
        "in --data (a cohort disjoint from its training and test data).")
        ] = TuningSessions.val,
    prior: Annotated[Optional[str], typer.Option(
        "--prior", help="For a refiner: the segmentation model it refines (default: the one "
        "it was trained with, by path, else by name).", show_default=False)] = None,
    device: Device = "auto",
    quiet: Quiet = False,
    as_json: Json = False,
) -> None:
    """Choose the label post-processing on unseen sessions and write it to the model's config.json.

    First stray components: a predicted tumour component under F × the largest one and more
    than D mm from it is dropped (F 0.1–0.5, D 10–40 mm, or off); then the small-region rule.

    BraTS scores a region that the reference lacks as Dice 0 and HD95 373 mm whenever the
    prediction has a voxel of it; post-operative follow-ups often have no ET or no tumour core.
    The rule (nnU-Net's BraTS recipe): predicted ET under A cm³ becomes NETC, then a tumour
    core under B cm³ becomes SNFH. A and B are tried from 0 to 4 cm³ on the sessions; the
    best mean of Dice − HD95/373.13 over TC/WT/ET wins (0/0 = off). `tumor train segment`
    does this at its end; `tumor segment --no-postprocess` skips the rule.

    A refiner gets its own rule (refinement changes which small regions are stray): the
    sessions go through the prior, then `tumor segment --refine`'s defaults, and the rule is
    chosen on the refined labels; `tumor train refine` does this at its end.

    The val split is small on a small cohort (a few sessions decide the thresholds); a second
    cohort the model never saw, with --sessions all, gives a steadier choice.

    Examples:
      tumor train postprocess --model runs/my-resunet --data cohort
      tumor train postprocess --model runs/my-resunet --data unseen-cohort --sessions all
      tumor train postprocess --model refine-medsegdiff --prior seg-resunet --data cohort
    """
    start(quiet, as_json)
    from tumorcli.errors import BadInput
    from tumorcli.infer.segment import find_model_folder
    from tumorcli.progress import task
    from tumorcli.runtime import resolve_device
    from tumorcli.train.data import find_cases, read_split
    from tumorcli.train.postprocess import tune_small_regions, val_sessions, write_postprocess

    folder = find_model_folder(model)
    prior_folder = _prior_of(folder, prior)
    cases = find_cases(data)
    if sessions is TuningSessions.val:
        try:
            names = set(read_split(folder)["val"])
        except (OSError, KeyError, ValueError):
            raise BadInput(f"{folder}: no split.json with val sessions", "pick a model folder "
                           "made by tumor train segment, or --sessions all with a cohort it "
                           "never saw") from None
        cases = [case for case in cases if case.name in names]
        if not cases:
            raise BadInput(f"{data}: none of the {len(names)} val sessions of {folder.name} is "
                           "there", "give the cohort the model was trained on")
    doing = "Refining" if prior_folder else "Segmenting"
    with task(f"{doing} sessions", total=len(cases)) as advance:
        tuned = tune_small_regions(folder, cases, resolve_device(device), (
            val_sessions(len(cases)) if sessions is TuningSessions.val else
            f"the {len(cases)} sessions of {data.name}, a cohort it never saw"), advance,
            prior_folder)
    write_postprocess(folder, tuned)
    answer = {"model": str(folder), "prior": prior_folder and str(prior_folder),
              **tuned.to_dict()}
    finish(answer, as_json=as_json, quiet=quiet,
           human=lambda result: console().print(
               f"{folder.name}: {tuned.rule.describe()}; mean Dice TC/WT/ET "
               f"{'/'.join(f'{v:.3f}' for v in tuned.dice_before)} → "
               f"{'/'.join(f'{v:.3f}' for v in tuned.dice_after)}, HD95 mm "
               f"{'/'.join(f'{v:.1f}' for v in tuned.hd95_before)} → "
               f"{'/'.join(f'{v:.1f}' for v in tuned.hd95_after)} on {tuned.sessions} sessions; "
               "written to config.json"))


def _prior_of(folder: Path, prior: str | None) -> Path | None:
    """The segmentation model a refiner `folder` refines (None for a segmentation model)."""
    from tumorcli.errors import BadInput
    from tumorcli.infer.segment import find_model_folder
    from tumorcli.nets.weights import read_config

    config = read_config(folder)
    if config.get("kind") != "refiner":
        if prior is not None:
            raise BadInput(f"--prior {prior}: {folder.name} is not a refiner",
                           "drop --prior for a segmentation model")
        return None
    if prior is not None:
        return find_model_folder(prior)
    trained_with = Path(config.get("training", {}).get("prior", ""))
    if str(trained_with) not in ("", ".") and trained_with.is_dir():
        return trained_with
    if not config.get("prior_model"):
        raise BadInput(f"{folder}: the refiner does not name its prior model",
                       "give --prior MODEL")
    return find_model_folder(config["prior_model"])
