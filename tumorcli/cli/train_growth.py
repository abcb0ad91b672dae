"""`tumor train growth`: train the treatment-aware growth model (TaDiff) of `tumor
predict-growth` on a cohort's longitudinal sessions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tumorcli.cli.common import Device, Json, Quiet, Seed, console, start
from tumorcli.cli.train import (CheckpointEvery, EmaDecay, Resume, Warmup, _at_least_one,
                                _check_run_folder, _ints, report, train_app)


@train_app.command("growth")
def growth(
    data: Annotated[Path, typer.Option("--data", help="Cohort folder: case folders with "
                                       "sessions and cohort.csv (day, treatments).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Model folder to write.")],
    steps: Annotated[int, typer.Option("--steps", help="Optimiser steps.")] = 4000,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Slices per step.")] = 8,
    lr: Annotated[float, typer.Option("--lr", help="AdamW learning rate.")] = 2e-4,
    spacing: Annotated[float, typer.Option("--spacing", help="Slice pixel size (mm).")] = 2.0,
    channels: Annotated[str, typer.Option("--channels", help="U-Net channels per level.")
                        ] = "32,64,64",
    prediction: Annotated[str, typer.Option("--prediction", help="v_prediction or epsilon.")
                          ] = "v_prediction",
    tumour_weight: Annotated[float, typer.Option("--tumour-weight", help="Loss weight 1 + W "
                                                 "near the tumour.")] = 4.0,
    dice_weight: Annotated[float, typer.Option("--dice-weight", help="λ of the mask's "
                                               "soft Dice + BCE.")] = 1.0,
    mask_prior: Annotated[float, typer.Option("--mask-prior", help="The future mask's logit "
                                              "starts at ± this from the last session's mask "
                                              "(persistence); 0: the net alone.")] = 4.0,
    tumour_slices: Annotated[float, typer.Option("--tumour-slices", help="Share of the draws "
                                                 "from slices with tumour.")] = 0.7,
    warmup: Warmup = 100,
    ema_decay: EmaDecay = 0.999,
    checkpoint_every: CheckpointEvery = 250,
    resume: Resume = False,
    device: Device = "auto",
    seed: Seed = 0,
    quiet: Quiet = False,
    as_json: Json = False,
) -> None:
    """Train the growth model: three earlier sessions + days + treatments → a later session.

    Examples are every choice of three sessions before each later session of a patient
    (patients need 4+ sessions; cohort.csv gives each session's day and the treatments given
    since the one before). Runs data-parallel under torchrun; SIGTERM/SIGUSR1: checkpoint at
    the next step, exit 0.

    Examples:
      tumor synth-cohort -o cohort --sessions 5 --untreated-fraction 0.3 --size small
      tumor train growth --data cohort -o models/my-growth
      tumor train growth --data cohort -o runs/growth --resume
    """
    start(quiet, as_json)
    from tumorcli.errors import BadInput

    _check_run_folder(data, output, resume)
    _at_least_one({"--steps": steps, "--batch-size": batch_size,
                   "--checkpoint-every": checkpoint_every})
    if prediction not in ("v_prediction", "epsilon"):
        raise BadInput(f"--prediction {prediction}: expected v_prediction or epsilon",
                       "v_prediction is the default")
    if not 0 <= tumour_slices < 1:
        raise BadInput(f"--tumour-slices {tumour_slices:g}: must be in [0, 1)", "e.g. 0.7")
    if spacing <= 0:
        raise BadInput(f"--spacing {spacing:g}: must be positive", "e.g. --spacing 2")

    from tumorcli.nets.growth import GrowthConfig
    from tumorcli.progress import task
    from tumorcli.runtime import resolve_device
    from tumorcli.train.growth import GrowthTrainConfig, train_growth_model

    levels = _ints(channels, "--channels")
    model = GrowthConfig(spacing_mm=spacing, channels=levels, prediction=prediction,
                         mask_prior=mask_prior,
                         attention=(False,) * (len(levels) - 1) + (True,))
    config = GrowthTrainConfig(
        data=str(data), steps=steps, batch_size=batch_size, lr=lr, warmup_steps=warmup,
        tumour_weight=tumour_weight, dice_weight=dice_weight, tumour_slices=tumour_slices,
        ema_decay=ema_decay, checkpoint_every=checkpoint_every, seed=seed,
        command=(f"tumor train growth --data {data} -o {output} --steps {steps} --batch-size "
                 f"{batch_size} --lr {lr:g} --spacing {spacing:g} --channels {channels} "
                 f"--prediction {prediction} --mask-prior {mask_prior:g} --tumour-weight {tumour_weight:g} --dice-weight "
                 f"{dice_weight:g} --tumour-slices {tumour_slices:g} --warmup {warmup} "
                 f"--ema-decay {ema_decay:g} --seed {seed}"))
    say = (lambda text: None) if quiet or as_json else (lambda text: console().print(text))
    with task("Training growth", total=steps) as advance:
        summary = train_growth_model(model, config, output, resolve_device(device),
                                     resume=resume, advance=advance, say=say)
    report(summary, as_json=as_json, quiet=quiet,
           human=lambda s: console().print(f"model in {s['output']} ({s['seconds']} s)"))
