"""Standard monocular depth metrics, exactly as the KITTI / NYU Depth v2 protocol defines them.

Sources: cleinc/bts ``utils/eval_with_pngs.py`` (``compute_errors``, the canonical 9 metrics, crops, clamping)
and nianticlabs/monodepth2 ``evaluate_depth.py`` (``compute_errors``, median scaling). On the valid pixels of
one image, with ``e = ln pred - ln gt`` and ``thresh = max(gt / pred, pred / gt)``::

    abs_rel    = mean(|gt - pred| / gt)              rmse     = sqrt(mean((gt - pred)^2))
    sq_rel     = mean((gt - pred)^2 / gt)            rmse_log = sqrt(mean((ln gt - ln pred)^2))
    log10      = mean(|log10 pred - log10 gt|)       d1, d2, d3 = mean(thresh < 1.25 ** k), k = 1, 2, 3
    silog      = 100 * sqrt(mean(e^2) - mean(e)^2)          (BTS / KITTI benchmark; PRINTED BY DEFAULT)
    silog_dav2 = sqrt(mean(e^2) - 0.5 * mean(e)^2)          (Depth Anything V2 metric_depth/util/metric.py)

``d1..d3`` are accuracies (higher is better); the others are errors. Every metric is computed PER IMAGE and
then averaged over images (never pooled over all pixels). Before that, as in BTS: predictions get
``nan -> min_depth``, ``+inf -> max_depth`` and are clamped to ``[min_depth, max_depth]``; the valid mask is
``(gt > min_depth) & (gt < max_depth)`` (and the caller's mask, and the crop). Optional median scaling
(monodepth2; only for scale-ambiguous models) multiplies the prediction by ``median(gt) / median(pred)`` over
the valid pixels before clamping, as monodepth2 does; with ``median_of_ratios`` by ``median(gt / pred)``
instead (the official DepthART evaluation's scale-only ``AlignerSIL1``, with ``torch.median``'s lower middle
value for an even count; pixels where ``pred <= 0`` are left out of that median).

Crops (BTS ``eval_with_pngs.py``), on the GT of size H x W:

* ``"garg"`` (Garg et al. ECCV 2016, KITTI): rows ``[int(0.40810811 H), int(0.99189189 H))``,
  cols ``[int(0.03594771 W), int(0.96405229 W))``.
* ``"eigen_kitti"`` (Eigen et al. NIPS 2014): rows ``[int(0.3324324 H), int(0.91351351 H))``,
  cols ``[int(0.0359477 W), int(0.96405229 W))``.
* ``"eigen_nyu"``: rows 45:471, cols 41:601; only defined for 480 x 640 GT.

Example:
    >>> import torch
    >>> gt = torch.tensor([[2.0, 4.0], [5.0, 10.0]])
    >>> m = compute_depth_metrics(gt * 2, gt, max_depth=80.0)
    >>> round(m["abs_rel"], 6), round(m["silog"], 6), m["d1"]
    (1.0, 0.0, 0.0)
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

import torch

from scalear.io import atomic_write

Crop = Literal["none", "garg", "eigen_kitti", "eigen_nyu"]

#: metric keys in the standard column order of the printed table (BTS's ``silog`` is the SILog column)
METRIC_KEYS: tuple[str, ...] = ("abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog", "d1", "d2", "d3")
#: all keys returned per image (the table's, plus Depth Anything's SILog)
ALL_METRIC_KEYS: tuple[str, ...] = METRIC_KEYS + ("silog_dav2",)
#: column headers of :func:`format_table`
COLUMN_NAMES: dict[str, str] = {"abs_rel": "AbsRel", "sq_rel": "SqRel", "rmse": "RMSE", "rmse_log": "RMSElog",
                                "log10": "log10", "silog": "SILog", "d1": "d1", "d2": "d2", "d3": "d3",
                                "silog_dav2": "SILog(DAv2)"}
SILOG_CONVENTION = "silog = 100*sqrt(mean(e^2) - mean(e)^2), e = ln pred - ln gt (BTS / KITTI benchmark)"
SILOG_DAV2_CONVENTION = "silog_dav2 = sqrt(mean(e^2) - 0.5*mean(e)^2) (Depth Anything V2, not x100)"

# BTS eval_with_pngs.py crop fractions: (row start, row end, col start, col end) of the GT height / width
_CROP_FRACTIONS: dict[str, tuple[float, float, float, float]] = {
    "garg": (0.40810811, 0.99189189, 0.03594771, 0.96405229),
    "eigen_kitti": (0.3324324, 0.91351351, 0.0359477, 0.96405229),
}
_NYU_EIGEN_CROP = (45, 471, 41, 601)  # rows 45:471, cols 41:601 of a 480 x 640 GT


@dataclass(frozen=True)
class DepthEvalConfig:
    """One evaluation protocol: depth range (metres), crop, and whether (and how) to median-scale predictions."""

    max_depth: float
    min_depth: float = 1e-3
    crop: Crop = "none"
    median_scaling: bool = False
    median_of_ratios: bool = False  #: with median_scaling: scale by median(gt / pred), not median(gt) / median(pred)

    def __post_init__(self) -> None:
        if not 0 < self.min_depth < self.max_depth:
            raise ValueError(f"need 0 < min_depth < max_depth, got min_depth={self.min_depth}, max_depth={self.max_depth}")
        if self.crop not in ("none", "garg", "eigen_kitti", "eigen_nyu"):
            raise ValueError(f"crop must be one of 'none', 'garg', 'eigen_kitti', 'eigen_nyu', got {self.crop!r}")


#: KITTI Eigen split, supervised metric models (BTS / ZoeDepth / DPT): 1e-3..80 m, Garg crop
KITTI_EVAL = DepthEvalConfig(max_depth=80.0, min_depth=1e-3, crop="garg")
#: KITTI with the Eigen crop instead of Garg's
KITTI_EVAL_EIGEN_CROP = replace(KITTI_EVAL, crop="eigen_kitti")
#: NYU Depth v2 (654 test images): 1e-3..10 m, Eigen crop on 480 x 640
NYU_EVAL = DepthEvalConfig(max_depth=10.0, min_depth=1e-3, crop="eigen_nyu")
EVAL_PRESETS: dict[str, DepthEvalConfig] = {"kitti": KITTI_EVAL, "kitti_eigen": KITTI_EVAL_EIGEN_CROP, "nyu": NYU_EVAL}


def crop_mask(crop: Crop, height: int, width: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Boolean ``(height, width)`` mask of the pixels a crop keeps (all True for ``"none"``)."""
    if crop == "none":
        return torch.ones(height, width, dtype=torch.bool, device=device)
    mask_HW = torch.zeros(height, width, dtype=torch.bool, device=device)
    if crop == "eigen_nyu":
        if (height, width) != (480, 640):
            raise ValueError(f"the NYU Eigen crop (rows 45:471, cols 41:601) needs 480x640 ground truth, got {height}x{width}")
        r0, r1, c0, c1 = _NYU_EIGEN_CROP
    elif crop in _CROP_FRACTIONS:
        fr0, fr1, fc0, fc1 = _CROP_FRACTIONS[crop]
        r0, r1, c0, c1 = int(fr0 * height), int(fr1 * height), int(fc0 * width), int(fc1 * width)
    else:
        raise ValueError(f"crop must be one of 'none', 'garg', 'eigen_kitti', 'eigen_nyu', got {crop!r}")
    mask_HW[r0:r1, c0:c1] = True
    return mask_HW


def _as_BHW(x: torch.Tensor, name: str) -> torch.Tensor:
    if x.dim() == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.dim() != 3:
        raise ValueError(f"{name} must be (B, H, W) or (B, 1, H, W), got shape {tuple(x.shape)}")
    return x


def _f64_device(x: torch.Tensor) -> torch.device:
    """Where the float64 maths runs: ``x``'s device, or the CPU on backends without float64 (MPS)."""
    return torch.device("cpu") if x.device.type == "mps" else x.device


def _median(x_N: torch.Tensor) -> torch.Tensor:
    """numpy's median (mean of the two middle values for even N), without torch.quantile's size limit."""
    s_N = x_N.sort().values
    n = s_N.numel()
    return (s_N[(n - 1) // 2] + s_N[n // 2]) / 2


def valid_eval_mask(gt_BHW: torch.Tensor, cfg: DepthEvalConfig, valid_BHW: torch.Tensor | None = None) -> torch.Tensor:
    """The pixels that count: ``(gt > min_depth) & (gt < max_depth)`` & ``valid`` & crop, ``(B, H, W)`` bool."""
    gt_BHW = _as_BHW(gt_BHW, "gt")
    mask_BHW = (gt_BHW > cfg.min_depth) & (gt_BHW < cfg.max_depth)
    if valid_BHW is not None:
        valid_BHW = _as_BHW(valid_BHW, "valid")
        if valid_BHW.shape != gt_BHW.shape:
            raise ValueError(f"valid has shape {tuple(valid_BHW.shape)}, gt has {tuple(gt_BHW.shape)}")
        mask_BHW = mask_BHW & valid_BHW.to(device=gt_BHW.device, dtype=torch.bool)
    return mask_BHW & crop_mask(cfg.crop, gt_BHW.shape[-2], gt_BHW.shape[-1], gt_BHW.device)


def depth_metrics_batch(pred_BHW: torch.Tensor, gt_BHW: torch.Tensor, cfg: DepthEvalConfig,
                        valid_BHW: torch.Tensor | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Per-image metrics of a batch: ``({key: (B,) float64}, valid pixel count (B,))``.

    ``pred`` and ``gt`` are depths in metres of the same size, ``(B, H, W)`` or ``(B, 1, H, W)``; resize the
    prediction to the GT size first. Images without any valid pixel get NaN metrics and count 0.
    """
    pred_BHW, gt_BHW = _as_BHW(pred_BHW, "pred"), _as_BHW(gt_BHW, "gt")
    if pred_BHW.shape != gt_BHW.shape:
        raise ValueError(f"pred has shape {tuple(pred_BHW.shape)} but gt has {tuple(gt_BHW.shape)}; "
                         "resize the prediction to the ground-truth size first")
    dev = _f64_device(gt_BHW)
    # the range test runs in gt's own dtype, as BTS's numpy does (float32 1e-3 is not > 1e-3 there)
    mask_BHW = valid_eval_mask(gt_BHW, cfg, valid_BHW).to(dev)
    gt_BHW = gt_BHW.to(dev, torch.float64)
    # BTS: nan -> min, inf -> max (-inf falls below min and is clamped to it), then the clamp below
    pred_BHW = torch.nan_to_num(pred_BHW.to(dev, torch.float64), nan=cfg.min_depth, posinf=cfg.max_depth,
                                neginf=cfg.min_depth)
    if cfg.median_scaling:  # monodepth2: ratio = median(gt) / median(pred) on the valid pixels, before clamping
        ratio_B = torch.ones(pred_BHW.shape[0], dtype=torch.float64, device=pred_BHW.device)
        for b in range(pred_BHW.shape[0]):
            if cfg.median_of_ratios:  # DepthART's AlignerSIL1: median(gt / pred)
                m = mask_BHW[b] & (pred_BHW[b] > 0)
                if m.any():
                    ratio_B[b] = (gt_BHW[b][m] / pred_BHW[b][m]).sort().values[(int(m.sum()) - 1) // 2]
            elif mask_BHW[b].any():
                ratio_B[b] = _median(gt_BHW[b][mask_BHW[b]]) / _median(pred_BHW[b][mask_BHW[b]])
        pred_BHW = pred_BHW * ratio_B[:, None, None]
    pred_BHW = pred_BHW.clamp(cfg.min_depth, cfg.max_depth)

    m_BHW = mask_BHW.to(torch.float64)
    n_B = m_BHW.sum((1, 2))
    gt_BHW = torch.where(mask_BHW, gt_BHW, torch.ones_like(gt_BHW))  # keep logs / divisions finite off-mask
    pred_BHW = torch.where(mask_BHW, pred_BHW, torch.ones_like(pred_BHW))

    def mean(x_BHW: torch.Tensor) -> torch.Tensor:
        return (x_BHW * m_BHW).sum((1, 2)) / n_B

    diff_BHW = gt_BHW - pred_BHW
    e_BHW = torch.log(pred_BHW) - torch.log(gt_BHW)
    thresh_BHW = torch.maximum(gt_BHW / pred_BHW, pred_BHW / gt_BHW)
    mean_e2_B, mean_e_B = mean(e_BHW**2), mean(e_BHW)
    out = {
        "abs_rel": mean(diff_BHW.abs() / gt_BHW),
        "sq_rel": mean(diff_BHW**2 / gt_BHW),
        "rmse": mean(diff_BHW**2).sqrt(),
        "rmse_log": mean_e2_B.sqrt(),
        "log10": mean((torch.log10(pred_BHW) - torch.log10(gt_BHW)).abs()),
        # clamp(min=0) only absorbs rounding (e.g. -1e-17 for a uniformly scaled prediction)
        "silog": 100.0 * (mean_e2_B - mean_e_B**2).clamp(min=0).sqrt(),
        "d1": mean((thresh_BHW < 1.25).to(torch.float64)),
        "d2": mean((thresh_BHW < 1.25**2).to(torch.float64)),
        "d3": mean((thresh_BHW < 1.25**3).to(torch.float64)),
        "silog_dav2": (mean_e2_B - 0.5 * mean_e_B**2).clamp(min=0).sqrt(),
    }
    return out, n_B.to(torch.int64)


def compute_depth_metrics(pred_HW: torch.Tensor, gt_HW: torch.Tensor, valid_HW: torch.Tensor | None = None, *,
                          max_depth: float, min_depth: float = 1e-3, crop: Crop = "none",
                          median_scaling: bool = False) -> dict[str, float]:
    """All metrics of one image (see the module docstring): ``{abs_rel, sq_rel, rmse, rmse_log, log10, silog,
    d1, d2, d3, silog_dav2, count}``; ``silog`` is BTS's x100 form, ``silog_dav2`` Depth Anything's.

    Raises ``ValueError`` if no pixel is valid.
    """
    cfg = DepthEvalConfig(max_depth=max_depth, min_depth=min_depth, crop=crop, median_scaling=median_scaling)
    if pred_HW.dim() != 2 or gt_HW.dim() != 2:
        raise ValueError(f"pred and gt must be (H, W), got {tuple(pred_HW.shape)} and {tuple(gt_HW.shape)}")
    out, n_B = depth_metrics_batch(pred_HW[None], gt_HW[None], cfg, None if valid_HW is None else valid_HW[None])
    if n_B[0] == 0:
        raise ValueError("no valid pixel: the ground truth has no depth in (min_depth, max_depth) inside the mask/crop")
    return {k: v[0].item() for k, v in out.items()} | {"count": int(n_B[0])}


class DepthEvaluator:
    """Accumulates per-image metrics over batches and averages them over images.

    Args:
        preset: a :class:`DepthEvalConfig` or the name of one in :data:`EVAL_PRESETS` (``"kitti"``,
            ``"kitti_eigen"``, ``"nyu"``); ``None`` needs ``max_depth``.
        max_depth, min_depth, crop, median_scaling: override the preset's fields (``None`` keeps them).

    Example:
        >>> ev = DepthEvaluator("nyu")
        >>> gt = torch.full((2, 480, 640), 3.0)
        >>> ev.update(gt * 1.1, gt)
        >>> round(ev.compute()["abs_rel"], 6), ev.compute()["count"]
        (0.1, 2)
    """

    def __init__(self, preset: DepthEvalConfig | str | None = None, *, max_depth: float | None = None,
                 min_depth: float | None = None, crop: Crop | None = None, median_scaling: bool | None = None):
        if isinstance(preset, str):
            if preset not in EVAL_PRESETS:
                raise ValueError(f"unknown evaluation preset {preset!r}; choose from {sorted(EVAL_PRESETS)}")
            preset = EVAL_PRESETS[preset]
        overrides = {k: v for k, v in dict(max_depth=max_depth, min_depth=min_depth, crop=crop,
                                           median_scaling=median_scaling).items() if v is not None}
        if preset is None:
            if max_depth is None:
                raise ValueError("give a preset ('kitti', 'kitti_eigen', 'nyu') or max_depth")
            self.config = DepthEvalConfig(**overrides)
        else:
            self.config = replace(preset, **overrides)
        self.reset()

    def reset(self) -> None:
        """Forget all accumulated images."""
        self._values: dict[str, list[torch.Tensor]] = {k: [] for k in ALL_METRIC_KEYS}
        self._counts: list[torch.Tensor] = []
        self.names: list[str] = []
        self.skipped: list[str] = []

    def update(self, pred_BHW: torch.Tensor, gt_BHW: torch.Tensor, valid_BHW: torch.Tensor | None = None,
               names: list[str] | None = None) -> None:
        """Add a batch: depths in metres, ``(B, H, W)`` or ``(B, 1, H, W)``; images with no valid pixel are
        skipped (their names, or indices, are kept in ``self.skipped``)."""
        out, n_B = depth_metrics_batch(pred_BHW, gt_BHW, self.config, valid_BHW)
        n_B = n_B.cpu()
        start = len(self.names) + len(self.skipped)
        names = names if names is not None else [str(start + i) for i in range(len(n_B))]
        if len(names) != len(n_B):
            raise ValueError(f"got {len(names)} names for {len(n_B)} images")
        keep_B = n_B > 0
        for k in ALL_METRIC_KEYS:
            self._values[k].append(out[k].cpu()[keep_B])
        self._counts.append(n_B[keep_B])
        self.names += [nm for nm, keep in zip(names, keep_B.tolist()) if keep]
        self.skipped += [nm for nm, keep in zip(names, keep_B.tolist()) if not keep]

    def per_image(self) -> dict[str, torch.Tensor]:
        """Per-image values ``{key: (N,) float64}`` plus ``"pixels"`` (valid pixel count per image)."""
        out = {k: torch.cat(v) if v else torch.zeros(0, dtype=torch.float64) for k, v in self._values.items()}
        out["pixels"] = torch.cat(self._counts) if self._counts else torch.zeros(0, dtype=torch.int64)
        return out

    def compute(self) -> dict[str, float]:
        """Mean over images of every metric, plus ``count`` (images evaluated)."""
        vals = self.per_image()
        n = len(vals["pixels"])
        if n == 0:
            raise ValueError("no image with valid ground truth has been added")
        return {k: vals[k].mean().item() for k in ALL_METRIC_KEYS} | {"count": n}

    def to_json(self, path: str | Path, per_image: bool = False) -> Path:
        """Write ``{"metrics", "config", "silog_convention", "skipped"[, "per_image"]}`` atomically."""
        doc: dict = {"metrics": self.compute(), "config": asdict(self.config),
                     "silog_convention": {"silog": SILOG_CONVENTION, "silog_dav2": SILOG_DAV2_CONVENTION},
                     "skipped": self.skipped}
        if per_image:
            vals = self.per_image()
            doc["per_image"] = [{"name": nm, "pixels": int(vals["pixels"][i])} | {k: vals[k][i].item() for k in ALL_METRIC_KEYS}
                                for i, nm in enumerate(self.names)]

        def write(tmp: str) -> None:
            with open(tmp, "w") as f:
                json.dump(doc, f, indent=2, allow_nan=True)

        return atomic_write(path, write)


def format_table(metrics: dict[str, float], silog_dav2: bool = False, digits: int = 3) -> str:
    """The standard table: ``AbsRel SqRel RMSE RMSElog log10 SILog d1 d2 d3`` (SILog = BTS's x100 form;
    ``silog_dav2=True`` appends Depth Anything's), one header line, one value line, and a note line."""
    keys = METRIC_KEYS + (("silog_dav2",) if silog_dav2 else ())
    width = max(max(len(COLUMN_NAMES[k]) for k in keys), digits + 4) + 1
    header = "".join(f"{COLUMN_NAMES[k]:>{width}}" for k in keys)
    row = "".join(f"{metrics[k]:>{width}.{digits}f}" if math.isfinite(metrics[k]) else f"{'nan':>{width}}" for k in keys)
    note = f"d1..d3: accuracies (higher is better); {SILOG_CONVENTION}"
    if "count" in metrics:
        note = f"{metrics['count']} images, per-image metrics averaged; " + note
    return f"{header}\n{row}\n{note}"
