"""Helpers of the notebooks in ``notebooks/``: one training call per stage through the same LightningCLI configs as
``scalear <domain> fit``, and the figures and tables the notebooks show.

    from scalear.notebook import fit, print_table, setup, show_curves, show_grid
    OUT = setup("scalear_runs/notebooks/core", seed=0, fast=False)
    csv = fit("core", "digits_tokenizer", "tokenizer", steps=800)
    show_curves(csv, ["train/rec", "val/psnr"], "tokenizer")
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

_SETTINGS: dict[str, Any] = {"out": None, "fast": False}


def setup(out: str | Path, seed: int = 0, fast: bool = False) -> Path:
    """Create the notebook's output folder ``out``, seed everything, set torch's threads (``OMP_NUM_THREADS``, else
    up to 8) and remember ``fast`` (tiny settings, as the tests run the notebooks). Returns ``out`` as a Path."""
    import lightning as L
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", min(8, os.cpu_count() or 1))))
    L.seed_everything(seed, verbose=False)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _SETTINGS.update(out=out, fast=fast)
    return out


def fit(domain: str, config: str, name: str, steps: int, *extra: str) -> Path:
    """Train one stage through ``configs/<domain>/<config>.yaml`` as ``scalear <domain> fit --config ...`` does,
    ``steps`` steps (validating once at the end), under ``OUT/<name>``, exporting to ``OUT/export``; returns the
    run's metrics.csv. Call :func:`setup` first."""
    from scalear.quickstart import config_path, fit_with_cli

    out, fast = _SETTINGS["out"], _SETTINGS["fast"]
    if out is None:
        raise RuntimeError("call scalear.notebook.setup(out, seed, fast) first")
    args = ["--trainer.max_steps", str(steps), "--trainer.val_check_interval", str(steps),
            "--trainer.log_every_n_steps", str(1 if fast else 10), *extra]
    if fast:
        args += ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    return fit_with_cli(config_path(domain, config), out / name, out / "export", args)


def show_curves(csv: Path, keys: Sequence[str], title: str = "") -> None:
    """The given metrics of a run against the training step, one panel each."""
    import matplotlib.pyplot as plt

    from scalear.viz import read_metrics_csv

    series = read_metrics_csv(csv)
    keys = [k for k in keys if k in series]
    if not keys:
        print(f"{title}: nothing logged yet")
        return
    fig, axes = plt.subplots(1, len(keys), figsize=(3 * len(keys), 2.4), squeeze=False)
    for ax, k in zip(axes[0], keys):
        steps, values = zip(*series[k])
        ax.plot(steps, values, ".-" if len(steps) < 5 else "-", lw=1.2)
        ax.set_title(k, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    plt.show()


def show_grid(rows: Sequence[Sequence[Any]], col_titles: Sequence[str] | None = None,
              row_titles: Sequence[str] | None = None, size: float = 1.6, title: str = "", **imshow) -> None:
    """A figure of images: ``rows`` is a list of lists of (H, W) or (H, W, 3) arrays (``None``: blank)."""
    import matplotlib.pyplot as plt

    nr, nc = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(nr, nc, figsize=(size * nc, size * nr + 0.3), squeeze=False)
    for i, row in enumerate(rows):
        for j, ax in enumerate(axes[i]):
            ax.set_xticks([]), ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            if j < len(row) and row[j] is not None:
                ax.imshow(row[j], interpolation="nearest", **imshow)
            if i == 0 and col_titles:
                ax.set_title(col_titles[j], fontsize=8)
        if row_titles:
            axes[i][0].set_ylabel(row_titles[i], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    plt.show()


def print_table(rows: dict[str, dict[str, Any]], cols: Sequence[str], fmt: str = "{:.3f}", first: str = "") -> None:
    """``{row name: {column: value}}`` as an aligned text table (floats through ``fmt``)."""
    w = max([len(first), *map(len, rows)]) + 2
    print(first.ljust(w) + "".join(c.rjust(max(10, len(c) + 2)) for c in cols))
    for name, r in rows.items():
        cells = [(fmt.format(r[c]) if isinstance(r.get(c), float) else str(r.get(c, "-"))).rjust(max(10, len(c) + 2))
                 for c in cols]
        print(name.ljust(w) + "".join(cells))
