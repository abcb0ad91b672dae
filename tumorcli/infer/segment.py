"""Segmentation inference: a model folder -> BraTS labels on the input grid.

The input goes through `prepare` (same as training), the net runs as a sliding window with
Gaussian blending (optionally averaged over the 8 axis flips, as nnU-Net's mirroring), and the
region probabilities are resampled back onto the input grid before thresholding, so the labels
land on the input file's own grid and affine.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tumorcli.errors import BadInput
from tumorcli.infer.postprocess import LabelRule
from tumorcli.infer.prepare import onto_grid, prepare
from tumorcli.io.volume import Volume
from tumorcli.nets.segmentation import SegNetConfig, build_segnet, labels_from_regions
from tumorcli.nets.weights import WEIGHTS, load_weights, read_config

ALIASES = {"resunet": "seg-resunet", "swinunetr": "seg-swinunetr"}


def find_model_folder(name_or_path: str) -> Path:
    """A model folder from a path, a model name (see `tumor info`) or an alias (resunet,
    swinunetr); BadInput listing what exists."""
    from tumorcli.io.models import find_models

    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    wanted = ALIASES.get(name_or_path, name_or_path)
    models = find_models()
    for entry in models:
        if entry.name == wanted:
            return entry.path
    names = ", ".join(m.name for m in models) or "none"
    raise BadInput(f"--model {name_or_path}: no such model folder or model name (found: {names})",
                   "tumor info lists the models found; give a model folder, or train one with "
                   "tumor train")


class Segmenter:
    """A loaded segmentation net. probabilities(): (C, X, Y, Z) net-grid input -> (3, X, Y, Z);
    `label_rule` is the model's label post-processing (config.json "postprocess")."""

    def __init__(self, net: torch.nn.Module, config: SegNetConfig, device: torch.device,
                 overlap: float = 0.5, label_rule: LabelRule = LabelRule()
                 ) -> None:
        self.net, self.config, self.device, self.overlap = net.eval(), config, device, overlap
        self.label_rule = label_rule

    @staticmethod
    def load(folder: Path, device: torch.device, overlap: float = 0.5,
             postprocess: bool = True) -> "Segmenter":
        data = read_config(folder)
        if data.get("kind") != "segmentation":
            raise BadInput(f"{folder}: a {data.get('kind', 'unknown')} model, not a segmentation "
                           "model", "pick a model made by tumor train segment")
        config = SegNetConfig.from_dict(data)
        net = load_weights(build_segnet(config), Path(folder) / WEIGHTS)
        return Segmenter(net.to(device), config, device, overlap,
                         LabelRule.of_model(data, postprocess))

    @torch.no_grad()
    def probabilities(self, image: np.ndarray, tta: bool = False) -> torch.Tensor:
        from monai.inferers import sliding_window_inference

        batch = torch.from_numpy(np.ascontiguousarray(image, np.float32))[None].to(self.device)
        flips = [axes for n in range(4) for axes in itertools.combinations((2, 3, 4), n)] \
            if tta else [()]
        total = torch.zeros((len(self.config.regions), *image.shape[1:]), device=self.device)
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self.device.type == "cuda"):
            for axes in flips:
                flipped = torch.flip(batch, axes) if axes else batch
                logits = sliding_window_inference(
                    flipped, self.config.patch, sw_batch_size=2, predictor=self.net,
                    overlap=self.overlap, mode="gaussian", padding_mode="constant")
                logits = torch.flip(logits, axes) if axes else logits
                total += torch.sigmoid(logits[0].float())
        return (total / len(flips)).cpu()


@dataclass(frozen=True)
class Segmentation:
    labels: Volume          # (X, Y, Z) uint8 BraTS labels on the input grid
    probabilities: Volume   # (X, Y, Z, 3) float32 TC/WT/ET probabilities on the input grid
    uncertainty: Volume | None = None   # (X, Y, Z) entropy of the refinement vote


def segment_volumes(segmenter: Segmenter, volumes: dict[str, Volume], tta: bool = False,
                    refine=None) -> Segmentation:
    """Labels and region probabilities for one subject's co-registered modalities; with
    `refine` (infer.refine.RefineOptions) the prior is refined by diffusion on the net grid and
    the probabilities are the refinement vote's shares. The labels then go through the
    small-region post-processing of the model that made them last, the segmenter's or the
    refiner's (the probabilities do not)."""
    config = segmenter.config
    prepared = prepare(volumes, config.modalities, config.spacing_mm)
    on_net = segmenter.probabilities(prepared.image, tta)
    entropy = None
    if refine is not None:
        from tumorcli.nets.segmentation import classes_from_regions, regions_from_classes

        refined = refine.refiner.refine(
            prepared.image, classes_from_regions(on_net), steps=refine.steps, start=refine.start,
            samples=refine.samples, seed=refine.seed, conditional=refine.conditional,
            sampler=refine.sampler)
        on_net, entropy = regions_from_classes(refined.fractions), refined.entropy.numpy()
    source = prepared.source_grid
    regions = np.stack([onto_grid(channel, prepared.grid, source) for channel in on_net.numpy()],
                       -1)
    brain = np.zeros(source.shape, bool)
    for volume in volumes.values():
        brain |= np.asarray(volume.array) != 0
    regions[~brain] = 0
    labels = labels_from_regions(torch.from_numpy(np.moveaxis(regions, -1, 0))).numpy()
    rule = segmenter.label_rule if refine is None else refine.refiner.label_rule
    labels = rule.apply(labels, source.voxel_cm3, source.spacing)
    reference = volumes.get("t1c") or volumes[config.modalities[0]]  # whose header to keep
    on_source = lambda array: Volume(array, source.affine, None, source=reference.source)
    uncertainty = None if entropy is None else on_source(
        np.where(brain, onto_grid(entropy, prepared.grid, source), 0).astype(np.float32))
    return Segmentation(Volume(labels, source.affine, reference.header, source=reference.source),
                        on_source(regions.astype(np.float32)), uncertainty)
