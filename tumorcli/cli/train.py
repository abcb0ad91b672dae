"""`tumor train MODEL`: train a model from the CLI into a model folder (config.json,
model.safetensors, card.md, split.json, train_log.csv, a resumable checkpoint)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from tumorcli.cli.common import Device, Json, Quiet, Seed, console, finish, start

train_app = typer.Typer(name="train", no_args_is_help=True,
                        help="Train the models `tumor` uses (weights land in a model folder).")


class SegArchitecture(str, Enum):
    resunet = "resunet"
    swinunetr = "swinunetr"


# options every diffusion training shares (predict-post, growth)
Warmup = Annotated[int, typer.Option("--warmup", help="Warm-up steps (of each stage).")]
EmaDecay = Annotated[float, typer.Option("--ema-decay", help="EMA of the denoiser weights, "
                                         "which ship (0 = the last weights).")]
CheckpointEvery = Annotated[int, typer.Option("--checkpoint-every", help="Steps between "
                                              "checkpoints (and log rows).")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint.")]


def _ints(text: str, option: str, count: int | None = None) -> tuple[int, ...]:
    from tumorcli.errors import BadInput

    try:
        values = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
        assert values and all(v > 0 for v in values) and (count is None or len(values) == count)
    except (ValueError, AssertionError):
        raise BadInput(f"{option} {text}: expected {count or 'some'} positive integers",
                       f"e.g. {option} " + ("64,64,64" if count == 3 else "16,32,64,128")) from None
    return values


@train_app.command("segment")
def segment(
    data: Annotated[Path, typer.Option("--data", help="Cohort folder in BraTS layout (case "
                                       "folders with t1n/t1c/t2w/t2f and *-seg.nii.gz).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Model folder to write.")],
    model: Annotated[SegArchitecture, typer.Option("--model", help="Network.")
                     ] = SegArchitecture.resunet,
    epochs: Annotated[int, typer.Option("--epochs", help="Epochs (validation after each).")] = 30,
    steps_per_epoch: Annotated[int, typer.Option("--steps-per-epoch")] = 100,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 2,
    lr: Annotated[float, typer.Option("--lr", help="AdamW peak learning rate.")] = 1e-4,
    weight_decay: Annotated[float, typer.Option("--weight-decay")] = 1e-5,
    warmup: Annotated[int, typer.Option("--warmup", help="Warm-up steps before the cosine.")] = 100,
    spacing: Annotated[float, typer.Option("--spacing", help="Voxel size (mm) the net works at.")
                       ] = 2.0,
    patch: Annotated[str, typer.Option("--patch", help="Patch in voxels (Swin-UNETR: multiples "
                                       "of 32).")] = "64,64,64",
    channels: Annotated[str, typer.Option("--channels", help="Res U-Net channels per level.")
                        ] = "16,32,64,128,256",
    feature_size: Annotated[int, typer.Option("--feature-size", help="Swin-UNETR width "
                                              "(multiple of 12; the study used 48).")] = 12,
    window: Annotated[int, typer.Option("--window", help="Swin-UNETR attention window in tokens "
                                        "(the study's 7; 4 is 2.5× faster on a CPU).")] = 7,
    val_cases: Annotated[int, typer.Option("--val-cases", help="Val sessions scored per epoch.")
                         ] = 4,
    test_cases: Annotated[int, typer.Option("--test-cases", help="Test sessions scored at the "
                                            "end (0 = all, -1 = none).")] = 0,
    amp: Annotated[Optional[bool], typer.Option("--amp/--no-amp", help="Mixed precision "
                                                "(default: on with CUDA).", show_default=False)
                   ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in -o from its "
                                         "last checkpoint.")] = False,
    augment: Annotated[str, typer.Option("--augment", help="scanner: each modality gets its own "
                                         "bias field, gamma, noise, scale and shift; basic: one "
                                         "scale and shift.")] = "scanner",
    init: Annotated[Optional[Path], typer.Option("--init", help="Model folder to fine-tune: its "
                                                 "network and weights start the run.")] = None,
    device: Device = "auto",
    seed: Seed = 0,
    quiet: Quiet = False,
    as_json: Json = False,
) -> None:
    """Train a segmentation net (Res U-Net or Swin-UNETR) on a labelled cohort.

    Splits patients into train/val/test (70/10/20 %, seeded, split.json), trains on patches
    biased to tumour with Dice + BCE on the TC/WT/ET regions, keeps the best validation epoch,
    and scores the test sessions at the end into card.md. Under torchrun it runs data-parallel.
    SIGTERM/SIGUSR1: a checkpoint at the next step, exit 0; --resume continues from that step.

    Examples:
      tumor train segment --data cohort -o models/my-resunet --epochs 30
      tumor train segment --data cohort -o runs/swin --model swinunetr --resume
      tumor train segment --data cohort -o runs/tuned --init models/seg-resunet --epochs 10
      torchrun --nproc_per_node 4 -m tumorcli train segment --data cohort -o runs/ddp
    """
    start(quiet, as_json)
    from tumorcli.errors import BadInput

    _check_run_folder(data, output, resume)
    _at_least_one({"--epochs": epochs, "--steps-per-epoch": steps_per_epoch,
                   "--batch-size": batch_size})
    patch_voxels = _ints(patch, "--patch", 3)
    if model is SegArchitecture.swinunetr and any(n % 32 for n in patch_voxels):
        raise BadInput(f"--patch {patch}: Swin-UNETR needs multiples of 32", "e.g. --patch 64,64,64")
    if model is SegArchitecture.swinunetr and feature_size % 12:
        raise BadInput(f"--feature-size {feature_size}: must be a multiple of 12", "e.g. 12, 24, 48")
    _at_least_one({"--window": window})
    if augment not in ("scanner", "basic"):
        raise BadInput(f"--augment {augment}: unknown", "use scanner or basic")

    from tumorcli.nets.segmentation import SegNetConfig
    from tumorcli.progress import task
    from tumorcli.runtime import resolve_device
    from tumorcli.train.segment import SegTrainConfig, train_segmentation

    from tumorcli.nets.weights import read_config

    if resume:
        saved = read_config(output)
        net_config = SegNetConfig.from_dict(saved)
        command = saved["training"].get("command", "")   # the card cites every call
        config = SegTrainConfig(**{**saved["training"], "epochs": epochs, "command":
                                   f"{command}, then resumed with --epochs {epochs} --resume"})
    else:
        net_config = SegNetConfig(architecture=model.value, spacing_mm=spacing,
                                  patch=patch_voxels, channels=_ints(channels, "--channels"),
                                  feature_size=feature_size, window=window)
        if init is not None:   # the network is the init model's; its weights start the run
            net_config = SegNetConfig.from_dict(read_config(init))
        config = SegTrainConfig(
            data=str(data), epochs=epochs, steps_per_epoch=steps_per_epoch,
            batch_size=batch_size, lr=lr, weight_decay=weight_decay, warmup_steps=warmup,
            val_cases=val_cases, test_cases=test_cases, amp=amp, seed=seed, augment=augment,
            init=str(init or ""),
            command=(f"tumor train segment --data {data} -o {output} --model "
                     f"{net_config.architecture} "
                     f"--epochs {epochs} --steps-per-epoch {steps_per_epoch} --batch-size "
                     f"{batch_size} --lr {lr:g} --weight-decay {weight_decay:g} --warmup {warmup} "
                     + (f"--init {init} " if init else   # the network is the init model's
                        f"--spacing {spacing:g} --patch {patch} --channels {channels} "
                        f"--feature-size {feature_size} --window {window} ")
                     + f"--val-cases {val_cases} --augment {augment} --seed {seed}"))
    say = (lambda text: None) if quiet or as_json else (lambda text: console().print(text))
    with task(f"Training {net_config.architecture}",
              total=config.epochs * config.steps_per_epoch) as advance:
        summary = train_segmentation(net_config, config, output, resolve_device(device),
                                     resume=resume, advance=advance, say=say)
    report(summary, as_json=as_json, quiet=quiet, human=_show)


def _show(summary: dict) -> None:
    test = summary.get("test") or {}
    text = (f"best val Dice {summary['best_val_dice']:.3f} at epoch {summary['best_epoch']}; "
            f"model in {summary['output']}")
    if test.get("cases"):
        text += ("; test Dice " + "/".join(f"{r['dice']:.3f}" for r in test["regions"].values())
                 + " (TC/WT/ET)")
    console().print(text)


@train_app.command("predict-post")
def predict_post(
    data: Annotated[Path, typer.Option("--data", help="Cohort folder: case folders with "
                                       "sessions and cohort.csv (survival_class).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Model folder to write.")],
    post: Annotated[str, typer.Option("--post", help="Which follow-up is the target: next "
                                      "(the session after the pre-treatment one) or last (the "
                                      "longest follow-up).")] = "next",
    autoencoder_steps: Annotated[int, typer.Option("--autoencoder-steps")] = 2000,
    autoencoder_from: Annotated[Optional[Path], typer.Option(
        "--autoencoder-from", help="Reuse this predict-post model's autoencoder (its grid and "
        "intensity units too) and train only the denoiser.")] = None,
    denoiser_steps: Annotated[int, typer.Option("--denoiser-steps")] = 4000,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Slices per step.")] = 16,
    lr: Annotated[float, typer.Option("--lr", help="Denoiser AdamW learning rate.")] = 2e-4,
    spacing: Annotated[float, typer.Option("--spacing", help="Slice pixel size (mm).")] = 2.0,
    ae_channels: Annotated[str, typer.Option("--ae-channels")] = "16,32,64",
    unet_channels: Annotated[str, typer.Option("--unet-channels")] = "32,64,64",
    prediction: Annotated[str, typer.Option("--prediction", help="v_prediction or epsilon.")
                          ] = "v_prediction",
    target: Annotated[str, typer.Option("--target", help="What the denoiser diffuses: post "
                                        "(the post latent, as in the paper) or residual (post "
                                        "− pre latent: unchanged brain costs nothing to "
                                        "learn).")] = "post",
    class_dropout: Annotated[float, typer.Option("--class-dropout", help="P(survival class "
                                                 "dropped) for guidance.")] = 0.15,
    balance_classes: Annotated[bool, typer.Option("--balance-classes", help="Draw short and "
                                                  "long survivors' slices equally often."
                                                  )] = False,
    class_channel: Annotated[bool, typer.Option("--class-channel", help="Give the class to the "
                                                "denoiser as an input plane too.")] = False,
    tumour_slices: Annotated[float, typer.Option("--tumour-slices", help="Share of the draws "
                                                 "from slices with tumour (0: uniform).")] = 0.0,
    tumour_weight: Annotated[float, typer.Option("--tumour-weight", help="Loss weight 1 + W "
                                                 "near the tumour (0: plain MSE).")] = 0.0,
    warmup: Warmup = 100,
    ema_decay: EmaDecay = 0.999,
    checkpoint_every: CheckpointEvery = 250,
    resume: Resume = False,
    device: Device = "auto",
    seed: Seed = 0,
    quiet: Quiet = False,
    as_json: Json = False,
) -> None:
    """Train the predict-post latent diffusion model: the slice autoencoder, then the denoiser.

    Pairs are each patient's first session with a mask (pre) and the next session (post); the
    survival class comes from cohort.csv. The denoiser's EMA weights are what ships.
    Runs data-parallel under torchrun; SIGTERM/SIGUSR1: checkpoint at the next step, exit 0.

    Examples:
      tumor train predict-post --data cohort -o models/my-predict-post
      tumor train predict-post --data cohort -o runs/post --resume
      torchrun --nproc_per_node 4 -m tumorcli train predict-post --data cohort -o runs/ddp
    """
    start(quiet, as_json)
    from tumorcli.errors import BadInput

    _check_run_folder(data, output, resume)
    _at_least_one({"--autoencoder-steps": autoencoder_steps, "--denoiser-steps": denoiser_steps,
                   "--batch-size": batch_size, "--checkpoint-every": checkpoint_every})
    if post not in ("next", "last"):
        raise BadInput(f"--post {post}: expected next or last", "e.g. --post last")
    if prediction not in ("v_prediction", "epsilon"):
        raise BadInput(f"--prediction {prediction}: expected v_prediction or epsilon",
                       "v_prediction is the default")
    if target not in ("post", "residual"):
        raise BadInput(f"--target {target}: expected post or residual", "e.g. --target residual")
    if not 0 <= tumour_slices < 1:
        raise BadInput(f"--tumour-slices {tumour_slices:g}: must be in [0, 1)", "e.g. 0.7")

    from dataclasses import replace

    from tumorcli.nets.latent_diffusion import AutoencoderConfig, DenoiserConfig, PostModelConfig
    from tumorcli.progress import task
    from tumorcli.runtime import resolve_device
    from tumorcli.train.predict_post import PostTrainConfig, train_post_model

    unet = _ints(unet_channels, "--unet-channels")
    model = PostModelConfig(
        spacing_mm=spacing, prediction=prediction, target=target, class_channel=class_channel,
        autoencoder=AutoencoderConfig(channels=_ints(ae_channels, "--ae-channels")),
        denoiser=DenoiserConfig(channels=unet, attention=(False,) * (len(unet) - 1) + (True,)))
    if autoencoder_from is not None:
        source = _autoencoder_source(autoencoder_from)
        model = replace(model, autoencoder=source.autoencoder, spacing_mm=source.spacing_mm,
                        intensity=source.intensity)
        autoencoder_steps = 0
    config = PostTrainConfig(
        data=str(data), post_session=post, autoencoder_steps=autoencoder_steps,
        denoiser_steps=denoiser_steps,
        batch_size=batch_size, lr=lr, class_dropout=class_dropout, warmup_steps=warmup,
        ema_decay=ema_decay, checkpoint_every=checkpoint_every, seed=seed,
        autoencoder_from=str(autoencoder_from or ""),
        balance_classes=balance_classes, tumour_slices=tumour_slices, tumour_weight=tumour_weight,
        command=(f"tumor train predict-post --data {data} -o {output} --post {post} "
                 f"--autoencoder-steps "
                 f"{autoencoder_steps} --denoiser-steps {denoiser_steps} --batch-size "
                 f"{batch_size} --lr {lr:g} --spacing {spacing:g} --ae-channels {ae_channels} "
                 f"--unet-channels {unet_channels} --prediction {prediction} --target {target} "
                 f"--warmup {warmup} --ema-decay {ema_decay:g} --seed {seed}"
                 + f" --autoencoder-from {autoencoder_from}" * (autoencoder_from is not None)
                 + " --balance-classes" * balance_classes + " --class-channel" * class_channel
                 + f" --tumour-slices {tumour_slices:g}" * (tumour_slices > 0)
                 + f" --tumour-weight {tumour_weight:g}" * (tumour_weight > 0)))
    say = (lambda text: None) if quiet or as_json else (lambda text: console().print(text))
    with task("Training predict-post", total=autoencoder_steps + denoiser_steps) as advance:
        summary = train_post_model(model, config, output, resolve_device(device), resume=resume,
                                   advance=advance, say=say)
    report(summary, as_json=as_json, quiet=quiet,
           human=lambda s: console().print(f"model in {s['output']} ({s['seconds']} s)"))


def report(summary: dict, *, as_json: bool, quiet: bool, human) -> None:
    """A training's result, from rank 0 only under torchrun. A run that SIGTERM/SIGUSR1 stopped
    prints its summary with --json, its "checkpointed at step N; rerun with --resume" line on
    stderr in any case, and exits with preempt.EXIT_STOPPED (0)."""
    if summary.get("rank", 0) != 0:
        return
    stopped = summary.get("stopped")
    finish(summary, as_json=as_json, quiet=quiet, human=None if stopped else human)
    if stopped:
        from rich.console import Console

        from tumorcli.train.preempt import EXIT_STOPPED

        Console(stderr=True, highlight=False, soft_wrap=True).print(stopped, style="yellow",
                                                                    markup=False)
        raise typer.Exit(EXIT_STOPPED)


def _autoencoder_source(folder: Path):
    """The PostModelConfig of the model whose autoencoder --autoencoder-from reuses."""
    from tumorcli.errors import BadInput
    from tumorcli.nets.latent_diffusion import PostModelConfig
    from tumorcli.nets.weights import read_config

    if not (folder / "autoencoder.safetensors").is_file() or not (folder / "config.json").is_file():
        raise BadInput(f"{folder}: --autoencoder-from needs a predict-post model folder "
                       "(config.json and autoencoder.safetensors)",
                       "e.g. --autoencoder-from models/predict-post")
    config = read_config(folder)
    if config.get("kind") != "predict-post":
        raise BadInput(f"{folder}: not a predict-post model (kind {config.get('kind')!r})",
                       "e.g. --autoencoder-from models/predict-post")
    return PostModelConfig.from_dict(config)


def _at_least_one(options: dict[str, int]) -> None:
    from tumorcli.errors import BadInput

    for name, value in options.items():
        if value < 1:
            raise BadInput(f"{name} {value}: must be at least 1", f"e.g. {name} 2")


def _check_run_folder(data: Path, output: Path, resume: bool) -> None:
    from tumorcli.errors import BadInput

    if not data.is_dir():
        raise BadInput(f"{data}: --data folder not found", "give a cohort folder")
    if output.exists() and any(output.iterdir()) and not resume:
        raise BadInput(f"{output}: already holds files",
                       "add --resume to continue that run, or choose a new folder")
    if resume and not (output / "checkpoint.json").is_file():
        raise BadInput(f"{output}: no checkpoint to resume from",
                       "drop --resume to start a new training run")
