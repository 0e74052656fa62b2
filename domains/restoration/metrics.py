"""PSNR and SSIM as image-restoration papers report them, and a per-degradation evaluator.

Conventions of BasicSR's ``basicsr/metrics/psnr_ssim.py`` (used by Restormer, PromptIR and Varformer):

- images are RGB in ``[0, 1]`` (``data_range = 1``); every metric is computed per image, then averaged over
  images; ``crop_border`` pixels are removed on each side first (Varformer validates with ``crop_border=4``);
- ``*_y`` metrics use the luma of ITU-R BT.601 YCbCr as MATLAB's ``rgb2ycbcr``:
  ``Y = 16 + 65.481 R + 128.553 G + 24.966 B`` for RGB in ``[0, 1]`` (Y in ``[16, 235]``), divided by 255 and
  not rounded (BasicSR ``to_y_channel``);
- PSNR ``= 10 log10(1 / MSE)`` with the MSE over all channels and pixels of one image (identical images: inf);
- SSIM (Wang et al., IEEE TIP 2004): 11x11 Gaussian window with sigma 1.5, ``K1 = 0.01``, ``K2 = 0.03``, only
  where the window fits ("valid"), averaged over positions and channels: ``kornia.metrics.ssim(...,
  padding="valid")``, equal to ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=1)``;
- ``quantize=True`` rounds both images to 8-bit levels first, as BasicSR scores its saved uint8 outputs.

Example:
    >>> x = torch.full((1, 3, 32, 32), 0.5)
    >>> round(psnr(x + 0.1, x).item(), 4), round(ssim(x, x).item(), 4)
    (20.0, 1.0)
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import kornia.metrics
import torch

from scalear.io import atomic_write

#: metric keys, in table order
METRIC_KEYS: tuple[str, ...] = ("psnr", "ssim", "psnr_y", "ssim_y")
#: keys added when the degraded inputs are given: the input's PSNR, the gain over it, and "worse" (gain < 0)
INPUT_KEYS: tuple[str, ...] = ("input_psnr", "gain")
COLUMN_NAMES: dict[str, str] = {"psnr": "PSNR", "ssim": "SSIM", "psnr_y": "PSNR-Y", "ssim_y": "SSIM-Y",
                                "input_psnr": "input", "gain": "gain"}
#: BT.601 luma weights (MATLAB ``rgb2ycbcr``) for RGB in [0, 1], and the offset, in 8-bit units
Y_WEIGHTS: tuple[float, float, float] = (65.481, 128.553, 24.966)
Y_OFFSET = 16.0
SSIM_WINDOW = 11


def rgb_to_y(x_B3HW: torch.Tensor) -> torch.Tensor:
    """BT.601 luma ``(16 + 65.481 R + 128.553 G + 24.966 B) / 255`` as ``(B, 1, H, W)``, in ``[16, 235] / 255``."""
    w = torch.tensor(Y_WEIGHTS, dtype=x_B3HW.dtype, device=x_B3HW.device).view(1, 3, 1, 1)
    return ((x_B3HW * w).sum(1, keepdim=True) + Y_OFFSET) / 255.0


def _prepare(pred: torch.Tensor, target: torch.Tensor, crop_border: int, y_channel: bool,
             quantize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Checked ``(B, C, H, W)`` float64 copies, cropped, optionally quantised and converted to Y."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    if pred.ndim == 3:
        pred, target = pred[None], target[None]
    if pred.ndim != 4 or pred.shape[1] != 3:
        raise ValueError(f"expected RGB images (B, 3, H, W) or (3, H, W) in [0, 1], got {tuple(pred.shape)}")
    if crop_border < 0 or 2 * crop_border >= min(pred.shape[-2:]):
        raise ValueError(f"crop_border {crop_border} does not fit a {pred.shape[-2]}x{pred.shape[-1]} image")
    b = crop_border
    pred, target = (x.detach().double()[..., b : x.shape[-2] - b, b : x.shape[-1] - b] for x in (pred, target))
    if quantize:
        pred, target = ((x.clamp(0, 1) * 255.0).round() / 255.0 for x in (pred, target))
    return (rgb_to_y(pred), rgb_to_y(target)) if y_channel else (pred, target)


def psnr(pred: torch.Tensor, target: torch.Tensor, crop_border: int = 0, y_channel: bool = False,
         quantize: bool = False) -> torch.Tensor:
    """Per-image PSNR in dB, ``(B,)`` float64 (``kornia.metrics.psnr`` on each image, peak 1)."""
    p, t = _prepare(pred, target, crop_border, y_channel, quantize)
    return torch.stack([kornia.metrics.psnr(p[i], t[i], 1.0) for i in range(p.shape[0])])


def ssim(pred: torch.Tensor, target: torch.Tensor, crop_border: int = 0, y_channel: bool = False,
         quantize: bool = False) -> torch.Tensor:
    """Per-image SSIM, ``(B,)`` float64 (``kornia.metrics.ssim``, 11x11 Gaussian sigma 1.5, valid region)."""
    p, t = _prepare(pred, target, crop_border, y_channel, quantize)
    if min(p.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels after the crop, got "
                         f"{p.shape[-2]}x{p.shape[-1]}")
    return kornia.metrics.ssim(p, t, SSIM_WINDOW, max_val=1.0, eps=0.0, padding="valid").mean((1, 2, 3))


def restoration_metrics(pred: torch.Tensor, target: torch.Tensor, crop_border: int = 0,
                        quantize: bool = False) -> dict[str, torch.Tensor]:
    """``{"psnr", "ssim", "psnr_y", "ssim_y"}`` per image, each ``(B,)`` float64."""
    out = {}
    for y in (False, True):
        sfx = "_y" if y else ""
        out["psnr" + sfx] = psnr(pred, target, crop_border, y, quantize)
        out["ssim" + sfx] = ssim(pred, target, crop_border, y, quantize)
    return {k: out[k] for k in METRIC_KEYS}


class RestorationEvaluator:
    """Per-image PSNR / SSIM (RGB and Y) grouped by degradation label.

    ``compute()`` gives each label's mean over its images plus ``"average"``, the mean over labels of those
    means (the "Average" column of all-in-one tables such as AirNet's and PromptIR's). When ``update`` is given
    the degraded inputs, every image also records ``input_psnr`` (the input's PSNR against the clean image),
    ``gain`` (restored minus input PSNR, dB) and ``worse`` (gain < 0: the model made the image worse); labels
    then also report the mean ``input_psnr`` and ``gain`` and the count of ``worse`` images.

    Args:
        crop_border: pixels removed on each side before scoring.
        quantize: round to 8-bit levels before scoring (BasicSR scores saved uint8 images).

    Example:
        >>> ev = RestorationEvaluator()
        >>> x = torch.full((2, 3, 16, 16), 0.5)
        >>> ev.update(x + 0.1, x, ["noise", "rain"])
        >>> round(ev.compute()["noise"]["psnr"], 3), ev.compute()["average"]["count"]
        (20.0, 2)
    """

    def __init__(self, crop_border: int = 0, quantize: bool = False):
        if crop_border < 0:
            raise ValueError(f"crop_border must be >= 0, got {crop_border}")
        self.crop_border, self.quantize = int(crop_border), bool(quantize)
        self.reset()

    def reset(self) -> None:
        """Forget all images."""
        self.records: list[dict] = []

    def update(self, pred_B3HW: torch.Tensor, target_B3HW: torch.Tensor, degradation: str | Sequence[str],
               names: Sequence[str] | None = None, degraded_B3HW: torch.Tensor | None = None) -> None:
        """Score a batch; ``degradation`` is one label for all or one per image; ``degraded_B3HW``, the model's
        inputs, adds the comparison with them (class docstring)."""
        m = restoration_metrics(pred_B3HW, target_B3HW, self.crop_border, self.quantize)
        B = len(m["psnr"])
        labels = [degradation] * B if isinstance(degradation, str) else list(degradation)
        names = [str(len(self.records) + i) for i in range(B)] if names is None else list(names)
        if len(labels) != B or len(names) != B:
            raise ValueError(f"got {len(labels)} degradation labels and {len(names)} names for {B} images")
        if degraded_B3HW is not None:
            m["input_psnr"] = psnr(degraded_B3HW, target_B3HW, self.crop_border, quantize=self.quantize)
            m["gain"] = m["psnr"] - m["input_psnr"]  # inf - inf (identical images both times) is no change
            m["gain"] = torch.where(m["psnr"] == m["input_psnr"], 0.0, m["gain"])
        for i in range(B):
            rec = {"name": names[i], "degradation": labels[i]} | {k: m[k][i].item() for k in METRIC_KEYS}
            if degraded_B3HW is not None:
                rec |= {k: m[k][i].item() for k in INPUT_KEYS} | {"worse": bool(m["gain"][i] < 0)}
            self.records.append(rec)

    def gather(self) -> None:
        """Under DDP, give every process the images scored by all of them (in rank order), so that
        :meth:`compute` gives the whole validation set's means on every process; nothing outside DDP."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            parts: list[list[dict]] = [[] for _ in range(dist.get_world_size())]
            dist.all_gather_object(parts, self.records)
            self.records = [r for part in parts for r in part]

    def compute(self) -> dict[str, dict[str, float]]:
        """``{label: {"psnr", "ssim", "psnr_y", "ssim_y", "count"}}`` in first-seen order, then ``"average"``."""
        if not self.records:
            raise ValueError("no images have been added to the evaluator")
        keys = METRIC_KEYS + (INPUT_KEYS if all("gain" in r for r in self.records) else ())
        out: dict[str, dict[str, float]] = {}
        for label in dict.fromkeys(r["degradation"] for r in self.records):
            rows = [r for r in self.records if r["degradation"] == label]
            out[label] = {k: sum(r[k] for r in rows) / len(rows) for k in keys} | {"count": len(rows)}
            if "gain" in keys:
                out[label]["worse"] = sum(r["worse"] for r in rows)
        groups = list(out.values())
        out["average"] = {k: sum(g[k] for g in groups) / len(groups) for k in keys} | {"count": len(self.records)}
        if "gain" in keys:
            out["average"]["worse"] = sum(g["worse"] for g in groups)
        return out

    def worse_than_input(self) -> list[dict]:
        """The records of the images whose restored PSNR is below their input's (empty without inputs)."""
        return [r for r in self.records if r.get("worse")]

    def format_table(self, digits: int = 2) -> str:
        """A plain-text table: one row per degradation and the average; SSIM with ``digits + 2`` decimals."""
        return format_table(self.compute(), digits, self.crop_border)

    def to_json(self, path: str | Path, per_image: bool = False) -> Path:
        """Write ``{"metrics", "conventions"[, "per_image"]}`` atomically (infinite PSNR is written as Infinity)."""
        doc: dict = {"metrics": self.compute(), "conventions": {
            "crop_border": self.crop_border, "quantize_8bit": self.quantize, "data_range": 1.0,
            "y_channel": "ITU-R BT.601 (MATLAB rgb2ycbcr): Y = (16 + 65.481 R + 128.553 G + 24.966 B) / 255",
            "ssim": "Wang et al. 2004, 11x11 Gaussian window sigma 1.5, K1=0.01, K2=0.03, valid region",
            "average": "mean over degradations of the per-degradation means",
            "worse": "restored PSNR below the degraded input's PSNR (both against the clean image); gain = the "
                     "difference in dB"}}
        if per_image:
            doc["per_image"] = self.records

        def write(tmp: str) -> None:
            with open(tmp, "w") as f:
                json.dump(doc, f, indent=2)

        return atomic_write(path, write)


def _cell(v: float, digits: int, signed: bool = False) -> str:
    """``v`` right-aligned in 9 characters (``inf`` / ``-inf`` / ``nan`` spelled out)."""
    if math.isnan(v):
        text = "nan"
    elif math.isinf(v):
        text = ("+inf" if signed else "inf") if v > 0 else "-inf"
    else:
        text = f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"
    return f"{text:>9}"


def format_table(results: dict[str, dict[str, float]], digits: int = 2, crop_border: int | None = None) -> str:
    """Rows ``degradation  PSNR  SSIM  PSNR-Y  SSIM-Y  n`` from :meth:`RestorationEvaluator.compute`'s output,
    with ``input  gain  worse`` (the input's PSNR, the gain over it, images made worse) when it holds them."""
    keys = METRIC_KEYS + (INPUT_KEYS if all("gain" in row for row in results.values()) else ())
    first = max([len("degradation"), *(len(k) for k in results)])
    header = f"{'degradation':<{first}}" + "".join(f"{COLUMN_NAMES[k]:>9}" for k in keys) + f"{'n':>6}"
    header += f"{'worse':>7}" if "gain" in keys else ""
    lines = [header, "-" * len(header)]
    for label, row in results.items():
        cells = [_cell(row[k], digits + 2 if k.startswith("ssim") else digits, signed=k == "gain") for k in keys]
        worse = f"{int(row['worse']):>7}" if "gain" in keys else ""
        lines.append(f"{label:<{first}}" + "".join(cells) + f"{int(row['count']):>6}" + worse)
    if crop_border is not None:
        note = "; gain = PSNR - input PSNR, worse = images with gain < 0" if "gain" in keys else ""
        lines.append(f"PSNR in dB; Y = BT.601 luma; crop_border {crop_border}; per-image values averaged{note}")
    return "\n".join(lines)
