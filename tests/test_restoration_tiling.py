"""Tiled restoration: exact for pointwise models, equal to the untiled result for models whose receptive field
fits the margin, seamless for models with a global component, any image size."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from scalear.domains.restoration.tiling import ramp, tile_starts, tiled_apply


def _conv_model(radius: int) -> nn.Module:
    torch.manual_seed(0)
    layers = []
    for _ in range(radius):
        layers += [nn.Conv2d(3, 3, 3, padding=1, padding_mode="replicate"), nn.Tanh()]
    return nn.Sequential(*layers).eval()


@pytest.mark.parametrize("H,W", [(100, 130), (64, 65), (20, 50), (10, 12)])
def test_pointwise_model_is_exact(H, W):
    x = torch.rand(2, 3, H, W)
    y = tiled_apply(lambda t: torch.sigmoid(3 * t) - t**2, x, tile=32, overlap=12)
    assert y.shape == x.shape
    torch.testing.assert_close(y, torch.sigmoid(3 * x) - x**2, atol=1e-6, rtol=0)


def test_every_pixel_is_covered_and_windows_are_positive_somewhere():
    for size in (33, 64, 97, 257):
        starts = tile_starts(size, 32, 8)
        covered = torch.zeros(size)
        for s in starts:
            covered[s : s + 32] += ramp(32, 8, 2, s > 0, s + 32 < size).float()
        assert bool((covered > 0).all()) and starts[-1] + 32 == size


def test_local_model_equals_untiled_away_from_image_borders():
    model = _conv_model(radius=3)  # receptive field: 3 pixels each way
    x = torch.rand(1, 3, 150, 170)
    with torch.no_grad():
        full = model(x)
        tiled = tiled_apply(model, x, tile=48, overlap=16, margin=4)
    # exact wherever a tile's wrongly padded border pixels carry no weight, i.e. everywhere but the image
    # border itself (where padding is the same for the tile and the full image)
    torch.testing.assert_close(tiled, full, atol=1e-5, rtol=0)


def test_default_margin_gives_small_error_for_a_wider_model():
    model = _conv_model(radius=6)
    x = torch.rand(1, 3, 120, 120)
    with torch.no_grad():
        err = (tiled_apply(model, x, tile=40, overlap=16) - model(x)).abs()  # margin 4 < radius 6
    assert float(err.max()) < 0.05 and float(err.mean()) < 1e-3


def test_no_visible_seams_for_a_model_with_a_global_component():
    """Each tile gets a different offset (its mean); blending turns steps into gentle ramps."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 128), torch.linspace(0, 1, 160), indexing="ij")
    x = torch.stack([xx, yy, xx * yy])[None]  # smooth image: gradients ~ 1/160 per pixel
    fn = lambda t: t + t.mean()  # noqa: E731
    tile, overlap = 48, 24
    y = tiled_apply(fn, x, tile, overlap)
    hard = x.clone()  # un-blended tiling for contrast: each pixel from the last tile covering it
    for r in tile_starts(128, tile, overlap):
        for c in tile_starts(160, tile, overlap):
            hard[..., r : r + tile, c : c + tile] = fn(x[..., r : r + tile, c : c + tile])

    def max_step(img):
        return max(float(img.diff(dim=-1).abs().max()), float(img.diff(dim=-2).abs().max()))

    band = overlap - 2 * (overlap // 4)  # pixels over which blending moves from one tile to the next
    jump = max_step(hard - x)  # the largest offset step between tiles without blending
    assert jump > 5 * max_step(x)  # visible without blending
    # with it, the offset field changes by a small fraction of a step per pixel (about 1/band; up to twice
    # that where four tiles blend at a corner): no edge at the seams
    assert max_step(y - x) <= 2 * jump / band
    assert max_step(y) < max_step(x) + 2 * jump / band


def test_bad_arguments_are_refused():
    x = torch.rand(1, 3, 80, 80)
    with pytest.raises(ValueError, match="overlap"):
        tiled_apply(lambda t: t, x, tile=32, overlap=32)
    with pytest.raises(ValueError, match="margin"):
        tiled_apply(lambda t: t, x, tile=32, overlap=8, margin=4)
    with pytest.raises(ValueError, match="returned"):
        tiled_apply(lambda t: t[..., :-1, :], x, tile=32, overlap=8)
