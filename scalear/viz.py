"""Pictures: image grids and training curves, written atomically as PNG."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from scalear.io import atomic_write


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


def save_image_grid(images: torch.Tensor, path: str | Path, nrow: int = 8, scale: int = 4) -> Path:
    return save_png(image_grid(images, nrow), path, scale)


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
