"""Pictures: image grids and training curves, written atomically as PNG."""

from __future__ import annotations

import csv
import functools
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from scalear.io import atomic_write


#: matplotlib's ``magma`` as 256 RGB entries, ``round(255 * rgb)`` (what :func:`colormap_lut` builds through matplotlib
#: for any other name; a test checks that the two agree), so that depth pictures need no matplotlib import
_MAGMA_HEX = (
    "00000401000501010601010802010902020b02020d03030f03031204041405041606051806051a07061c08071e0907200a08220b09240c09"
    "260d0a290e0b2b100b2d110c2f120d31130d34140e36150e38160f3b180f3d19103f1a10421c10441d11471e114920114b21114e22115024"
    "125325125527125829115a2a115c2c115f2d11612f116331116533106734106936106b38106c390f6e3b0f703d0f713f0f72400f74420f75"
    "440f764510774710784910784a10794c117a4e117b4f127b51127c52137c54137d56147d57157e59157e5a167e5c167f5d177f5f187f6018"
    "80621980641a80651a80671b80681c816a1c816b1d816d1d816e1e81701f81721f817320817521817621817822817922827b23827c23827e"
    "24828025828125818326818426818627818827818928818b29818c29818e2a81902a81912b81932b80942c80962c80982d80992d809b2e7f"
    "9c2e7f9e2f7fa02f7fa1307ea3307ea5317ea6317da8327daa337dab337cad347cae347bb0357bb2357bb3367ab5367ab73779b83779ba38"
    "78bc3978bd3977bf3a77c03a76c23b75c43c75c53c74c73d73c83e73ca3e72cc3f71cd4071cf4070d0416fd2426fd3436ed5446dd6456cd8"
    "456cd9466bdb476adc4869de4968df4a68e04c67e24d66e34e65e44f64e55064e75263e85362e95462ea5661eb5760ec5860ed5a5fee5b5e"
    "ef5d5ef05f5ef1605df2625df2645cf3655cf4675cf4695cf56b5cf66c5cf66e5cf7705cf7725cf8745cf8765cf9785df9795df97b5dfa7d"
    "5efa7f5efa815ffb835ffb8560fb8761fc8961fc8a62fc8c63fc8e64fc9065fd9266fd9467fd9668fd9869fd9a6afd9b6bfe9d6cfe9f6dfe"
    "a16efea36ffea571fea772fea973feaa74feac76feae77feb078feb27afeb47bfeb67cfeb77efeb97ffebb81febd82febf84fec185fec287"
    "fec488fec68afec88cfeca8dfecc8ffecd90fecf92fed194fed395fed597fed799fed89afdda9cfddc9efddea0fde0a1fde2a3fde3a5fde5"
    "a7fde7a9fde9aafdebacfcecaefceeb0fcf0b2fcf2b4fcf4b6fcf6b8fcf7b9fcf9bbfcfbbdfcfdbf"
)


@functools.lru_cache(maxsize=8)
def colormap_lut(name: str = "magma") -> np.ndarray:
    """A matplotlib colour map as a read-only ``(N, 3)`` uint8 table (``N`` = its number of colours, 256 for the
    perceptual maps): entry ``i`` is ``round(255 * cmap(i))``. ``magma`` is built in; any other name is read once
    from matplotlib (a ValueError names the unknown ones)."""
    if name == "magma":
        lut = np.frombuffer(bytes.fromhex(_MAGMA_HEX), np.uint8).reshape(256, 3)
    else:
        import matplotlib

        try:
            cmap = matplotlib.colormaps[name]
        except KeyError:
            raise ValueError(f"unknown colour map {name!r}; e.g. magma, viridis, turbo, gray") from None
        lut = (cmap(np.arange(cmap.N))[:, :3] * 255).round().astype(np.uint8)
    lut.flags.writeable = False
    return lut


def apply_colormap(t: np.ndarray, lut: np.ndarray, black: np.ndarray | None = None) -> np.ndarray:
    """Values ``t`` (float, 0..1) -> ``t.shape + (3,)`` uint8 through ``lut`` (:func:`colormap_lut`), indexed as
    matplotlib does: entry ``floor(t * N)`` clipped to ``0..N-1``, so that the result equals
    ``round(255 * cmap(t)[..., :3])`` pixel for pixel; NaN and the pixels of the boolean mask ``black`` are black."""
    n = len(lut)
    x = np.multiply(t, n, dtype=np.result_type(t, np.float32))  # the float type of t, as matplotlib multiplies it
    nan = np.isnan(x)
    np.clip(x, 0, n - 1, out=x)
    x[nan] = 0
    rgb = lut.take(x.astype(np.uint8 if n <= 256 else np.intp), axis=0)
    rgb[nan if black is None else (nan | black)] = 0
    return rgb


def image_grid(images: torch.Tensor, nrow: int = 8, pad: int = 1, value_range: tuple[float, float] = (-1, 1)) -> np.ndarray:
    """(N, C, H, W) images -> one (rows*H, nrow*W, 3) uint8 grid; C is 1 (gray) or 3 (RGB)."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images (N, 1|3, H, W), got {tuple(images.shape)}")
    lo, hi = value_range
    x = ((images.detach().float().cpu() - lo) / (hi - lo)).clamp(0, 1)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    N, _, H, W = x.shape
    rows = (N + nrow - 1) // nrow
    grid = torch.ones(3, rows * (H + pad) + pad, nrow * (W + pad) + pad)
    for i in range(N):
        r, c = divmod(i, nrow)
        grid[:, pad + r * (H + pad) : pad + r * (H + pad) + H, pad + c * (W + pad) : pad + c * (W + pad) + W] = x[i]
    return (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def save_png(array: np.ndarray, path: str | Path, scale: int = 1) -> Path:
    """Write an (H, W, 3) uint8 array as PNG, optionally enlarged ``scale`` times (nearest)."""
    from PIL import Image

    if scale > 1:
        array = array.repeat(scale, 0).repeat(scale, 1)
    return atomic_write(path, lambda p: Image.fromarray(array).save(p, format="PNG"))


def tile_row(images: list[np.ndarray | None], size: int | None = None, gap: int = 4) -> np.ndarray:
    """(H, W, 3) uint8 images side by side, ``gap`` white pixels apart; ``None`` is a blank ``size`` x ``size``
    tile (e.g. a shape whose field was empty)."""
    if size is None:
        size = next((im.shape[0] for im in images if im is not None), 0)
    tiles = [np.full((size, size, 3), 255, np.uint8) if im is None else im for im in images]
    if not tiles:
        raise ValueError("tile_row needs at least one image")
    sep = np.full((tiles[0].shape[0], gap, 3), 255, np.uint8)
    return np.concatenate([x for t in tiles for x in (t, sep)][:-1], 1)


def stack_rows(rows: list[np.ndarray], gap: int = 4) -> np.ndarray:
    """Rows of (H_i, W_i, 3) uint8 images one above the other, left-aligned on white, ``gap`` pixels apart."""
    width = max(r.shape[1] for r in rows)
    padded = [np.pad(r, ((0, gap), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    return np.concatenate(padded, 0)[:-gap]


def read_png(path: str | Path) -> np.ndarray:
    """A PNG (or any image PIL reads) as an (H, W, 3) uint8 array."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def labelled(picture: np.ndarray, rows: Sequence[str] = (), cols: Sequence[str] = (), font_size: int = 12) -> np.ndarray:
    """``picture`` (an (H, W, 3) uint8 grid of equal rows and columns, as :func:`image_grid` or :func:`stack_rows`
    of :func:`tile_row` make it) with the ``rows`` labels in a white margin on the left, each centred on its row,
    and the ``cols`` labels in a white band on top, each centred on its column (either may be empty)."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=font_size)
    H, W = picture.shape[:2]
    left = max((int(font.getlength(t)) for t in rows), default=-8) + 8
    top = font_size + 6 if cols else 0
    canvas = Image.new("RGB", (W + left, H + top), "white")
    canvas.paste(Image.fromarray(picture), (left, top))
    draw = ImageDraw.Draw(canvas)
    for i, text in enumerate(rows):
        draw.text((left - 4, top + (i + 0.5) * H / len(rows)), text, fill="black", font=font, anchor="rm")
    for j, text in enumerate(cols):
        draw.text((left + (j + 0.5) * W / len(cols), top / 2), text, fill="black", font=font, anchor="mm")
    return np.asarray(canvas)


def save_image_grid(images: torch.Tensor, path: str | Path, nrow: int = 8, scale: int = 4,
                    rows: Sequence[str] = (), cols: Sequence[str] = ()) -> Path:
    """:func:`image_grid` of ``images`` enlarged ``scale`` times, with row and column labels (:func:`labelled`)."""
    grid = image_grid(images, nrow).repeat(scale, 0).repeat(scale, 1)
    return save_png(labelled(grid, rows, cols) if rows or cols else grid, path)


def read_metrics_csv(path: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Lightning ``CSVLogger`` metrics.csv -> {metric: [(step, value), ...]} (empty cells skipped)."""
    series: dict[str, list[tuple[int, float]]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            step = int(float(row.get("step") or 0))
            for k, v in row.items():
                if k in ("step", "epoch") or v in ("", None):
                    continue
                series.setdefault(k, []).append((step, float(v)))
    return series


def plot_training_curves(metrics_csv: str | Path, path: str | Path, keys: list[str], title: str = "") -> Path:
    """Plot the given metrics of a CSVLogger file against the step, one panel per metric."""
    from matplotlib.figure import Figure  # no pyplot: leaves the caller's backend (e.g. notebooks) alone

    series = read_metrics_csv(metrics_csv)
    wanted, keys = keys, [k for k in keys if k in series]
    if not keys:
        raise ValueError(f"{metrics_csv} has none of the metrics {wanted}; it has {sorted(series)}")
    fig = Figure(figsize=(3.2 * len(keys), 2.6))
    axes = fig.subplots(1, len(keys), squeeze=False)
    for ax, k in zip(axes[0], keys):
        steps, vals = zip(*series[k])
        ax.plot(steps, vals, lw=1.2)
        ax.set_title(k, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, dpi=110, format="png"))
    return Path(path)
