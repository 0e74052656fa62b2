"""Restoring large images in overlapping tiles with seamless blending.

Tiles of ``tile x tile`` pixels start every ``tile - overlap`` pixels (the last one flush with the image's
far edge), so neighbours overlap by at least ``overlap``. Each tile's output is weighted by a separable window
that is 1 inside the tile and, towards a side shared with a neighbour, 0 over the outermost ``margin``
pixels, then rises linearly over the next ``overlap - 2 margin`` pixels; sides on the image border keep
weight 1. The weighted outputs are summed and divided by the summed weights.

Consequences: a pointwise model gives exactly the untiled result; a model whose receptive field reaches at
most ``margin`` pixels gives the untiled result everywhere (the pixels a tile gets wrong, those within
``margin`` of its inner edges, have weight 0); and a model whose output differs by a smooth offset between
tiles (e.g. one with a global prior, such as Varformer) shows no step at the seams, only a linear
transition over ``overlap - 2 margin`` pixels. Images no larger than a tile are processed in one piece.

Example:
    >>> x = torch.rand(1, 3, 70, 90)
    >>> y = tiled_apply(lambda t: t * 2, x, tile=32, overlap=8)
    >>> bool(torch.allclose(y, x * 2))
    True
"""

from __future__ import annotations

from typing import Callable

import torch


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of the tiles along one axis of ``size`` pixels (one tile when ``size <= tile``)."""
    if size <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, size - tile, stride))
    return starts + [size - tile]


def ramp(length: int, overlap: int, margin: int, rise: bool, fall: bool) -> torch.Tensor:
    """1-D window of ``length``: 0 over ``margin``, linear up over ``overlap - 2 margin``, 1 inside, mirrored
    at the end; ``rise`` / ``fall`` False keep weight 1 at that end (an image border)."""
    i = torch.arange(length, dtype=torch.float64)
    width = max(overlap - 2 * margin, 1)
    w = torch.ones(length, dtype=torch.float64)
    if rise:
        w = torch.minimum(w, ((i - margin + 0.5) / width).clamp(0, 1))
    if fall:
        w = torch.minimum(w, ((length - 1 - i - margin + 0.5) / width).clamp(0, 1))
    return w


def check_tiling(tile: int, overlap: int, margin: int) -> None:
    if tile < 1 or overlap < 0 or overlap >= tile:
        raise ValueError(f"need tile >= 1 and 0 <= overlap < tile, got tile={tile}, overlap={overlap}")
    if margin < 0 or (overlap > 0 and overlap - 2 * margin < 1):
        raise ValueError(f"margin {margin} leaves no blending band in an overlap of {overlap} (need overlap > 2 margin)")


def tiled_apply(fn: Callable[[torch.Tensor], torch.Tensor], image_BCHW: torch.Tensor, tile: int = 256,
                overlap: int = 32, margin: int | None = None) -> torch.Tensor:
    """``fn`` applied to overlapping tiles of ``image_BCHW`` and blended (module docstring).

    Args:
        fn: maps a ``(B, C, h, w)`` tile to an output of the same spatial size (any channel count).
        image_BCHW: the image batch.
        tile: tile side in pixels.
        overlap: minimum overlap of neighbouring tiles.
        margin: pixels at inner tile edges given weight 0 (default ``overlap // 4``); set it to at least the
            model's receptive-field radius for results equal to the untiled ones.
    """
    margin = overlap // 4 if margin is None else margin
    check_tiling(tile, overlap, margin)
    B, _, H, W = image_BCHW.shape
    if H <= tile and W <= tile:
        return fn(image_BCHW)
    ys, xs = tile_starts(H, tile, overlap), tile_starts(W, tile, overlap)
    out = weight = None
    for y in ys:
        th = min(tile, H)
        wy = ramp(th, overlap, margin, rise=y > 0, fall=y + th < H)
        for x in xs:
            tw = min(tile, W)
            wx = ramp(tw, overlap, margin, rise=x > 0, fall=x + tw < W)
            pred = fn(image_BCHW[..., y : y + th, x : x + tw])
            if pred.shape[-2:] != (th, tw):
                raise ValueError(f"the model returned a {tuple(pred.shape[-2:])} output for a {th}x{tw} tile")
            if out is None:
                out = torch.zeros(B, pred.shape[1], H, W, dtype=torch.float64, device=pred.device)
                weight = torch.zeros(1, 1, H, W, dtype=torch.float64, device=pred.device)
            w = (wy[:, None] * wx[None, :]).to(pred.device)
            out[..., y : y + th, x : x + tw] += pred.double() * w
            weight[..., y : y + th, x : x + tw] += w
    return (out / weight).to(image_BCHW.dtype)


def restore_tiled(model, image_B3HW: torch.Tensor, tile: int | None = None, overlap: int = 32) -> torch.Tensor:
    """``model.restore`` on the whole image (``tile`` None) or in blended tiles."""
    if tile is None:
        return model.restore(image_B3HW)
    return tiled_apply(model.restore, image_B3HW, tile, overlap).clamp(0, 1)


__all__ = ["tile_starts", "ramp", "check_tiling", "tiled_apply", "restore_tiled"]
