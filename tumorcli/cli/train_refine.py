"""`tumor train refine`: a diffusion refiner (MedSegDiff 2D or the 3D DDPM refiner) for the
labels of a segmentation model (the prior)."""

from __future__ import annotations

import math
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from tumorcli.cli.common import Device, Json, Quiet, Seed, console, start
from tumorcli.cli.train import _at_least_one, _check_run_folder, _ints, report, train_app


class RefinerKind(str, Enum):
    medsegdiff = "medsegdiff"
    ddpm = "ddpm"


@train_app.command("refine")
def refine(
    kind: Annotated[RefinerKind, typer.Option("--kind", help="medsegdiff: 2D slices, ε; ddpm: "
                                              "3D patches, x0.")],
    data: Annotated[Path, typer.Option("--data", help="Labelled cohort (BraTS layout).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Model folder to write.")],
    prior: Annotated[str, typer.Option("--prior", help="Segmentation model whose labels are "
                                       "refined (name or folder); its split is reused.")
                     ] = "resunet",
    epochs: Annotated[int, typer.Option("--epochs")] = 20,
    steps_per_epoch: Annotated[int, typer.Option("--steps-per-epoch")] = 100,
    batch_size: Annotated[Optional[int], typer.Option(
        "--batch-size", help="Slices (medsegdiff, default 8) or patches (ddpm, default 2).",
        show_default=False)] = None,
    lr: Annotated[float, typer.Option("--lr", help="AdamW peak learning rate.")] = 2e-4,
    channels: Annotated[Optional[str], typer.Option(
        "--channels", help="Net widths per level (medsegdiff 32,64,128,128; ddpm 32,64,128).",
        show_default=False)] = None,
    size: Annotated[int, typer.Option("--size", help="medsegdiff slice side (voxels).")] = 128,
    patch: Annotated[int, typer.Option("--patch", help="ddpm patch side (voxels; the study "
                                       "96).")] = 96,
    start_step: Annotated[int, typer.Option("--start", help="Default t′ the prior is noised to "
                                            "when refining (of 1000).")] = 300,
    prior_dropout: Annotated[float, typer.Option("--prior-dropout", help="P(prior zeroed) so "
                                                 "the net also runs unconditionally.")] = 0.1,
    val_cases: Annotated[int, typer.Option("--val-cases", help="Val cases refined per epoch.")
                         ] = 2,
    amp: Annotated[Optional[bool], typer.Option("--amp/--no-amp", help="bf16 autocast "
                                                "(default: on with CUDA).", show_default=False)
                   ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in -o.")] = False,
    device: Device = "auto",
    seed: Seed = 0,
    quiet: Quiet = False,
    as_json: Json = False,
) -> None:
    """Train a diffusion refiner conditioned on a segmentation model's coarse labels.

    The prior model runs once over the cohort (cached in OUTPUT/priors); the refiner trains on
    the prior's own train split. MedSegDiff: ε-MSE + 10·DiceCE, linear schedule; ddpm: x0
    logits, DiceCE + 0.1·edge-weighted L2, cosine schedule; T = 1000 for both.
    Runs data-parallel under torchrun; SIGTERM/SIGUSR1: checkpoint at the next step, exit 0.

    Examples:
      tumor train refine --kind medsegdiff --prior resunet --data cohort -o models/refine-medsegdiff
      tumor train refine --kind ddpm --data cohort -o runs/ddpm --patch 64 --channels 16,32,64
      torchrun --nproc_per_node 4 -m tumorcli train refine --kind ddpm --data cohort -o runs/ddp
    """
    start(quiet, as_json)
    from tumorcli.errors import BadInput

    _check_run_folder(data, output, resume)
    _at_least_one({"--epochs": epochs, "--steps-per-epoch": steps_per_epoch,
                   "--size": size, "--patch": patch})
    medsegdiff = kind is RefinerKind.medsegdiff
    default_channels = "32,64,128,128" if medsegdiff else "32,64,128"
    widths = _ints(channels or default_channels, "--channels")
    levels = 2 ** (len(widths) - 1)
    if (size if medsegdiff else patch) % levels:
        raise BadInput(f"--{'size' if medsegdiff else 'patch'} {size if medsegdiff else patch}: "
                       f"must be a multiple of {levels} for {len(widths)} levels",
                       "e.g. --size 128 or --patch 64")
    if not 1 <= start_step <= 999 or not 0 <= prior_dropout < 1:
        raise BadInput("--start must lie in 1–999 and --prior-dropout in [0, 1)",
                       "e.g. --start 300 --prior-dropout 0.1")

    from tumorcli.infer.segment import find_model_folder
    from tumorcli.nets.medsegdiff import MedSegDiffConfig
    from tumorcli.nets.refiner import RefinerSpec
    from tumorcli.nets.refiner3d import Refiner3DConfig
    from tumorcli.nets.segmentation import SegNetConfig
    from tumorcli.nets.weights import read_config
    from tumorcli.progress import task
    from tumorcli.runtime import resolve_device
    from tumorcli.train.refine import RefineTrainConfig, train_refiner

    prior_folder = find_model_folder(prior)
    if resume:
        saved = read_config(output)
        spec = RefinerSpec.from_dict(saved)
        config = RefineTrainConfig(**{**saved["training"], "epochs": epochs})
    else:
        prior_config = read_config(prior_folder)
        if prior_config.get("kind") != "segmentation":
            raise BadInput(f"--prior {prior}: not a segmentation model", "e.g. --prior resunet")
        seg = SegNetConfig.from_dict(prior_config)
        net = MedSegDiffConfig(size=size, channels=widths) if medsegdiff else \
            Refiner3DConfig(patch=patch, channels=widths,
                            attention=(False,) * (len(widths) - 1) + (True,),
                            head_channels=min(32, widths[-1]),
                            groups=min(16, math.gcd(*widths)))
        spec = RefinerSpec.make(kind.value, net, spacing_mm=seg.spacing_mm,
                                modalities=seg.modalities, start=start_step,
                                prior_model=prior_folder.name)
        config = RefineTrainConfig(
            data=str(data), prior=str(prior_folder), epochs=epochs,
            steps_per_epoch=steps_per_epoch, batch_size=batch_size or (8 if medsegdiff else 2),
            lr=lr, prior_dropout=prior_dropout, val_cases=val_cases, amp=amp, seed=seed,
            command=(f"tumor train refine --kind {kind.value} --prior {prior} --data {data} "
                     f"-o {output} --epochs {epochs} --steps-per-epoch {steps_per_epoch} "
                     f"--batch-size {batch_size or (8 if medsegdiff else 2)} --lr {lr:g} "
                     f"--channels {','.join(map(str, widths))} "
                     + (f"--size {size} " if medsegdiff else f"--patch {patch} ")
                     + f"--start {start_step} --seed {seed}"))
    say = (lambda text: None) if quiet or as_json else (lambda text: console().print(text))
    with task(f"Training {spec.refiner}", total=config.epochs * config.steps_per_epoch) as advance:
        summary = train_refiner(spec, config, output, resolve_device(device), resume=resume,
                                advance=advance, say=say)
    report(summary, as_json=as_json, quiet=quiet,
           human=lambda s: console().print(
               f"best val Dice {s['best_val_dice']:.3f} at epoch {s['best_epoch']}; model in "
               f"{s['output']}"))
