"""MedSegDiff's network: FF-Parser starts as the identity and learns a filter; the image condition
and the timestep both reach the output; shapes follow the mask."""

from __future__ import annotations

import torch

from tumorcli.nets.medsegdiff import FFParser, MedSegDiff, MedSegDiffConfig

TINY = MedSegDiffConfig(size=32, channels=(16, 32, 32), groups=8)


def test_ff_parser_is_the_identity_until_it_learns_a_filter():
    parser = FFParser(3, 16, 16)
    x = torch.randn(2, 3, 16, 16)
    assert torch.allclose(parser(x), x, atol=1e-5)
    parser(x).square().sum().backward()
    assert parser.weight.grad is not None and parser.weight.grad.abs().sum() > 0
    with torch.no_grad():
        parser.weight[:, :, 4:, :] = 0  # a low-pass filter along the last frequency axis
    smooth = parser(x)
    assert smooth.abs().sum() < x.abs().sum()


def test_output_has_the_mask_shape_and_depends_on_condition_and_timestep():
    torch.manual_seed(0)
    net = MedSegDiff(TINY)
    mask, condition = torch.randn(2, 4, 32, 32), torch.randn(2, 8, 32, 32)
    t = torch.tensor([10, 900])
    out = net(mask, t, condition)
    assert out.shape == mask.shape
    assert not torch.allclose(out, net(mask, t, torch.randn(2, 8, 32, 32)))
    assert not torch.allclose(out, net(mask, torch.tensor([500, 500]), condition))


def test_config_round_trips_through_a_dict():
    assert MedSegDiffConfig.from_dict(TINY.to_dict()) == TINY
    assert TINY.to_dict()["kind"] == "refiner"


def test_the_3d_refiner_maps_mask_and_condition_to_x0_logits():
    from tumorcli.nets.refiner3d import Refiner3DConfig, build_refiner3d

    config = Refiner3DConfig(patch=16, channels=(16, 16, 32), groups=8, head_channels=16)
    net = build_refiner3d(config)
    x = torch.randn(1, 12, 16, 16, 16)
    out = net(x, torch.tensor([100]))
    assert out.shape == (1, 4, 16, 16, 16)
    assert Refiner3DConfig.from_dict(config.to_dict()) == config
