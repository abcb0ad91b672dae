"""The deterministic peer of `tumor predict-post`: the model a user would train instead, a 2D
U-Net (MONAI UNet, residual units) that maps the pre T1c slice + tumour mask + survival class
(two constant one-hot planes) straight to the post T1c slice with an L1 loss on brain pixels.
It predicts the change (post = pre + net output), in the same model units (normal-tissue
median) and on the same slices, train patients and 2 mm grid as the diffusion model whose run
folder it is given, and it trains for a wall-clock budget (the diffusion run's, on the same
number of threads) rather than a number of steps.

Train: python benchmarks/post_peer.py --run RUN [--data COHORT] -o PEER --minutes 60 [--threads 1]
Used by benchmarks/predict_post_quality.py --peer PEER.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from tumorcli.nets.latent_diffusion import SURVIVAL_CLASSES

CHANNELS = (32, 64, 128, 256)


def build_peer() -> torch.nn.Module:
    from monai.networks.nets import UNet

    return UNet(spatial_dims=2, in_channels=4, out_channels=1, channels=CHANNELS,
                strides=(2, 2, 2), num_res_units=2)


def peer_input(pre: torch.Tensor, mask: torch.Tensor, survival: torch.Tensor) -> torch.Tensor:
    """(B, 4, H, W): pre, mask, one plane per survival class (1 where it is the class)."""
    planes = [(survival == c).float()[:, None, None, None].expand_as(pre)
              for c in (1, 2)]
    return torch.cat([pre, mask, *planes], 1)


def train(run: Path, out: Path, minutes: float, batch: int, lr: float, seed: int,
          data: Path | None = None) -> dict:
    from tumorcli.nets.latent_diffusion import PostModelConfig
    from tumorcli.nets.weights import read_config, save_weights
    from tumorcli.train.data import read_split
    from tumorcli.train.post_data import find_pairs, load_pair

    config = read_config(run)
    model = PostModelConfig.from_dict(config)
    training = config["training"]
    data = Path(data or training["data"])
    pairs = {p.name: p for p in find_pairs(data, training["post_session"])}
    train_pairs = [load_pair(pairs[n], model.spacing_mm, 16, model.intensity)
                   for n in read_split(run)["train"]]
    pre, post, mask = (torch.from_numpy(np.concatenate([getattr(p, k) for p in train_pairs]))
                       for k in ("pre", "post", "mask"))
    survival = torch.cat([torch.full((len(p.pre),), p.survival) for p in train_pairs])
    torch.manual_seed(seed)
    net = build_peer()
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr)
    began, step, losses = time.perf_counter(), 0, []
    out.mkdir(parents=True, exist_ok=True)
    budget = minutes * 60
    while (elapsed := time.perf_counter() - began) < budget:
        for group in optimizer.param_groups:   # cosine over the wall-clock budget
            group["lr"] = lr * 0.5 * (1 + np.cos(np.pi * min(elapsed / budget, 1.0)))
        generator = torch.Generator().manual_seed(seed * 100003 + step)
        pick = torch.randint(len(pre), (batch,), generator=generator)
        brain = (pre[pick] != 0).float()
        prediction = pre[pick] + net(peer_input(pre[pick], mask[pick], survival[pick]))
        loss = ((prediction - post[pick]).abs() * brain).sum() / brain.sum().clamp(min=1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        step += 1
        if step % 200 == 0:
            save_weights(net, out / "peer.safetensors")
            print(f"peer step {step}: L1 {np.mean(losses[-200:]):.4f}, "
                  f"{elapsed / 60:.1f} min", flush=True)
    save_weights(net, out / "peer.safetensors")
    summary = {"run": str(run), "steps": step, "minutes": round(minutes, 1), "batch": batch,
               "lr": lr, "threads": torch.get_num_threads(), "channels": list(CHANNELS),
               "final_l1": float(np.mean(losses[-200:]))}
    (out / "peer.json").write_text(json.dumps(summary, indent=2))
    return summary


class PeerPredictor:
    """The trained peer on a pre T1c + mask, on the pre scan's grid and intensity scale."""

    def __init__(self, folder: Path, spacing_mm: float, intensity: str) -> None:
        from tumorcli.nets.weights import load_weights

        self.net = load_weights(build_peer(), Path(folder) / "peer.safetensors").eval()
        self.spacing_mm, self.intensity = spacing_mm, intensity

    @torch.no_grad()
    def predict(self, pre, mask, survival: str) -> np.ndarray:
        from tumorcli.infer.post_inputs import model_units, slices_to_volume, volume_slices
        from tumorcli.infer.prepare import onto_grid, prepare
        from tumorcli.io.itk import Grid

        prepared = prepare({"t1c": pre}, ("t1c",), self.spacing_mm)
        tumour = onto_grid((np.asarray(mask.array) > 0).astype(np.float32), Grid.of(mask),
                           prepared.grid, blur=False)
        image, scale, offset = model_units(prepared, tumour, self.intensity)
        keep = prepared.brain.any(axis=(0, 1))
        pre_slices = torch.from_numpy(volume_slices(image, keep, 16))
        mask_slices = torch.from_numpy(volume_slices(tumour, keep, 16))
        label = torch.full((len(pre_slices),), SURVIVAL_CLASSES.index(survival))
        slices = pre_slices + self.net(peer_input(pre_slices, mask_slices, label))
        volume = slices_to_volume(slices[:, 0].numpy(), keep, prepared.grid.shape)
        volume = np.where(prepared.brain, volume * scale + offset, 0)
        brain = onto_grid(prepared.brain.astype(np.float32), prepared.grid,
                          prepared.source_grid, blur=False) >= 0.5
        return np.where(brain, onto_grid(volume.astype(np.float32), prepared.grid,
                                         prepared.source_grid, blur=False), 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True,
                        help="the diffusion run folder (its data, split and grid are used)")
    parser.add_argument("--data", type=Path, default=None,
                        help="the cohort the run was trained on (default: the one its config names)")
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--minutes", type=float, required=True)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(json.dumps(train(args.run, args.output, args.minutes, args.batch_size, args.lr,
                           args.seed, args.data), indent=2))


if __name__ == "__main__":
    main()
