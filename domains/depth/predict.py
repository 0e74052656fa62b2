"""Depth prediction on image files and evaluation on the standard test sets (the work behind the CLI verbs).

Per input image ``<stem>`` (:func:`scalear.cli_files.unique_stems`: distinct for distinct inputs, keeping their
sub-folders below the inputs' common folder, so ``a/2.png`` and ``b/2.png`` give ``a/2_*`` and ``b/2_*``)
:func:`predict_files` writes, each file atomically:

- ``<stem>_depth_mm.png``: 16-bit PNG, millimetres (metres = value / 1000, 0 = no depth); when some depth
  is beyond 65.535 m it is ``<stem>_depth_256.png`` instead, 1/256 m units as KITTI's ground truth;
- ``<stem>_depth.json``: sidecar with the PNG's unit and scale, the intrinsics used, model and input;
- ``<stem>_depth.npy``: ``(H, W)`` float32 metres;
- ``<stem>_depth_color.png``: the depth through matplotlib's ``magma`` (near = bright), scaled between the
  2nd and 98th percentile; ``<stem>_side_by_side.jpg``: the input and that picture side by side, a preview
  (JPEG quality 95 without chroma subsampling: colours within a few levels of the PNG's, encoded 10x faster
  than a PNG of the photo half); both skipped with ``pictures=False`` (``--no-pictures``);
- ``<stem>.ply`` (optional): a coloured point cloud, one vertex per pixel with a valid depth, in row-major
  pixel order, back-projected in the OpenCV camera frame (x right, y down, z forward):
  ``X = (u - cx) Z / fx, Y = (v - cy) Z / fy`` with pixel centres at integer ``(u, v)``. Default intrinsics
  (:func:`default_intrinsics`): ``fx = fy = 1.2 max(H, W)`` (a ~45 degree field of view across the longer
  side, typical of phone and dataset cameras), ``cx = W / 2``, ``cy = H / 2``.

An unreadable input is reported by name and skipped; the others are still written.
"""

from __future__ import annotations

import json
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from scalear.datasets.depth.io import ImageReadError, encode_depth_png, read_rgb
from scalear.domains.depth.metrics import DepthEvalConfig, DepthEvaluator, format_table
from scalear.domains.depth.models import DepthPredictor
from scalear import cli_files
from scalear.io import atomic_write
from scalear.viz import apply_colormap, colormap_lut

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".ppm", ".webp")
#: fx = fy = DEFAULT_FOCAL_FACTOR * max(H, W) when no intrinsics are given
DEFAULT_FOCAL_FACTOR = 1.2


def default_intrinsics(height: int, width: int) -> tuple[float, float, float, float]:
    """``(fx, fy, cx, cy)`` used when none are given: ``fx = fy = 1.2 max(H, W)``, ``cx = W / 2``, ``cy = H / 2``."""
    f = DEFAULT_FOCAL_FACTOR * max(height, width)
    return f, f, width / 2, height / 2


def collect_inputs(spec: str | Path) -> list[Path]:
    """Image files of a file, a folder (its image files, not recursive, hidden ones skipped) or a glob pattern."""
    return cli_files.collect_inputs(spec, IMAGE_EXTENSIONS)


@torch.no_grad()
def predict_depth_maps(predictor: DepthPredictor, images: Sequence[np.ndarray], device: torch.device | str = "cpu",
                       max_depth: float | None = None) -> list[np.ndarray]:
    """uint8 RGB images of one size, in one batch -> their ``(H, W)`` float32 metres (NaN/inf/negative -> 0;
    capped at ``max_depth``). A batch gives each image's depth of a batch of one up to float rounding (the
    model's batched arithmetic)."""
    H, W = images[0].shape[:2]
    if any(im.shape != images[0].shape for im in images):
        raise ValueError(f"a batch needs images of one size, got {sorted({im.shape for im in images})}")
    image_B3HW = torch.from_numpy(np.stack(images)).to(device).permute(0, 3, 1, 2).float().div(255.0)
    depth_B1HW = predictor.predict_depth(image_B3HW)
    if depth_B1HW.ndim != 4 or depth_B1HW.shape[:2] != (len(images), 1):
        raise ValueError(f"predict_depth returned shape {tuple(depth_B1HW.shape)}, expected ({len(images)}, 1, H, W)")
    if depth_B1HW.shape[-2:] != (H, W):
        depth_B1HW = F.interpolate(depth_B1HW.float(), (H, W), mode="bilinear", align_corners=False)
    d_BHW = depth_B1HW[:, 0].float().cpu().numpy()
    d_BHW = np.where(np.isfinite(d_BHW) & (d_BHW > 0), d_BHW, 0.0).astype(np.float32)
    if max_depth is not None:
        np.minimum(d_BHW, max_depth, out=d_BHW)
    return list(d_BHW)


def predict_depth_map(predictor: DepthPredictor, image_HW3: np.ndarray, device: torch.device | str = "cpu",
                      max_depth: float | None = None) -> np.ndarray:
    """One uint8 RGB image -> ``(H, W)`` float32 metres (NaN/inf/negative -> 0; capped at ``max_depth``)."""
    return predict_depth_maps(predictor, [image_HW3], device, max_depth)[0]


def colorize_depth(depth_HW: np.ndarray, cmap: str = "magma", vmin: float | None = None,
                   vmax: float | None = None) -> np.ndarray:
    """Depth -> ``(H, W, 3)`` uint8 with ``cmap``, near = bright; range = 2nd..98th percentile of valid depth
    unless given; pixels without depth are black. A table lookup (:func:`scalear.viz.colormap_lut`), pixel for
    pixel what ``matplotlib.colormaps[cmap]`` gives."""
    valid = depth_HW > 0
    lo, hi = vmin, vmax
    if lo is None or hi is None:
        v = depth_HW[valid]
        if lo is None:  # one call per percentile: a list of them is interpolated in float64, a float32 depth's not
            lo = float(np.percentile(v, 2)) if v.size else 0.0
        if hi is None:
            hi = float(np.percentile(v, 98)) if v.size else 1.0
    t = np.clip((hi - depth_HW) / max(hi - lo, 1e-6), 0, 1) if hi > lo else np.full(depth_HW.shape, 0.5)
    return apply_colormap(t, colormap_lut(cmap), black=~valid)


def backproject(depth_HW: np.ndarray, intrinsics: tuple[float, float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Points ``(N, 3)`` float32 (camera frame, OpenCV axes) of the pixels with depth > 0, in row-major order,
    and those pixels' flat indices ``(N,)``."""
    fx, fy, cx, cy = intrinsics
    H, W = depth_HW.shape
    idx_N = np.flatnonzero(depth_HW.reshape(-1) > 0)
    v_N, u_N = np.divmod(idx_N, W)
    z_N = depth_HW.reshape(-1)[idx_N].astype(np.float64)
    xyz_N3 = np.stack([(u_N - cx) * z_N / fx, (v_N - cy) * z_N / fy, z_N], -1)
    return xyz_N3.astype(np.float32), idx_N


def write_point_cloud(path: Path, xyz_N3: np.ndarray, rgb_N3: np.ndarray) -> Path:
    """A coloured point cloud as binary PLY (trimesh), atomically."""
    import trimesh

    alpha = np.full((len(rgb_N3), 1), 255, np.uint8)
    cloud = trimesh.PointCloud(xyz_N3, colors=np.concatenate([rgb_N3.astype(np.uint8), alpha], 1))
    data = cloud.export(file_type="ply")
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


#: zlib level and strategy of the colour picture (level 1, run-length: faster than zlib's defaults and as small)
#: and of the 16-bit depth PNG (smooth, compresses well); no level or strategy changes a pixel. The side-by-side
#: is a JPEG (``SIDE_BY_SIDE_JPEG``): Pillow's PNG encoder tries its filters on every row, which on the photo
#: half costs about 4x the tiny DAR's time per 480x640 image (27 ms against 2 ms as a JPEG)
PREVIEW_PNG = {"format": "PNG", "compress_level": 1, "compress_type": zlib.Z_RLE}
DEPTH_PNG = {"format": "PNG", "compress_level": 3}
SIDE_BY_SIDE_JPEG = {"format": "JPEG", "quality": 95, "subsampling": 0}


def _save_image(array: np.ndarray, path: Path, options: dict = PREVIEW_PNG) -> Path:
    image = Image.fromarray(array)
    return atomic_write(path, lambda tmp: image.save(tmp, **options))


def write_prediction(out: Path, stem: str, image_HW3: np.ndarray, depth_HW: np.ndarray, *,
                     intrinsics: tuple[float, float, float, float] | None = None, ply: bool = False,
                     meta: dict | None = None, pictures: bool = True) -> list[Path]:
    """Write the files of one prediction (see the module docstring), each encoded once; returns their paths.
    ``pictures=False`` skips the colour picture and the side-by-side."""
    H, W = depth_HW.shape
    mm = float(depth_HW.max(initial=0.0)) <= 65.535
    unit, scale = ("mm", 1000.0) if mm else ("256", 256.0)
    png = out / f"{stem}_depth_{unit}.png"
    written = [_save_image(encode_depth_png(depth_HW, scale), png, DEPTH_PNG)]

    def save_npy(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object, so numpy does not append ".npy" to the temporary name
            np.save(f, depth_HW.astype(np.float32, copy=False))

    written.append(atomic_write(out / f"{stem}_depth.npy", save_npy))
    if pictures:
        side_HW3 = np.empty((H, 2 * W, 3), np.uint8)  # input | colour map; the colour picture is its right half
        side_HW3[:, :W] = image_HW3
        side_HW3[:, W:] = colorize_depth(depth_HW)
        written.append(_save_image(np.ascontiguousarray(side_HW3[:, W:]), out / f"{stem}_depth_color.png"))
        written.append(_save_image(side_HW3, out / f"{stem}_side_by_side.jpg", SIDE_BY_SIDE_JPEG))
    K = intrinsics or default_intrinsics(H, W)
    if ply:
        xyz_N3, idx_N = backproject(depth_HW, K)
        written.append(write_point_cloud(out / f"{stem}.ply", xyz_N3, image_HW3.reshape(-1, 3)[idx_N]))
    side = {"depth_png": png.name, "png_unit": "millimetre" if mm else "1/256 metre", "png_scale_per_metre": scale,
            "png_invalid_value": 0, "npy": f"{Path(stem).name}_depth.npy", "npy_unit": "metre", "height": H, "width": W,
            "intrinsics": {"fx": K[0], "fy": K[1], "cx": K[2], "cy": K[3], "given": intrinsics is not None},
            **({"colormap": "magma, near = bright, 2nd..98th percentile"} if pictures else {}), **(meta or {})}
    written.append(atomic_write(out / f"{stem}_depth.json", lambda tmp: Path(tmp).write_text(json.dumps(side, indent=2))))
    return written


@dataclass
class PredictReport:
    """What :func:`predict_files` did: written outputs per input and the inputs it skipped, with the reason."""

    written: dict[str, list[Path]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)


def predict_files(predictor: DepthPredictor, inputs: Sequence[Path], out: Path, *,
                  intrinsics: tuple[float, float, float, float] | None = None, ply: bool = False,
                  max_depth: float | None = None, device: torch.device | str = "cpu", model_name: str = "",
                  progress: bool = True, batch_size: int = 1, pictures: bool = True) -> PredictReport:
    """Predict every input and write its files into ``out``; unreadable images are reported and skipped;
    ``pictures=False`` writes the depth files alone (no colour picture, no side-by-side).

    The images of one size among ``batch_size`` consecutive inputs go through the model as one batch (each
    image's depth is its depth alone up to float rounding); worker threads read the next inputs and write the
    previous outputs while the model runs (:func:`scalear.cli_files.run_in_batches`)."""
    from tqdm import tqdm

    cli_files.check_output_folder(out, inputs)
    out.mkdir(parents=True, exist_ok=True)
    report = PredictReport()
    meta_extra = {} if getattr(predictor, "metric_depth", True) else {
        "depth_is_relative": ("up to an unknown scale: units of the image's 98th-percentile depth "
                              "(the PNG/npy 'metre' means that unit); multiply by a known scale for metres")}

    def run(batch: list[tuple[tuple[Path, str], np.ndarray]]) -> list[np.ndarray]:
        same_size: dict[tuple[int, ...], list[int]] = {}
        for i, (_, image_HW3) in enumerate(batch):
            same_size.setdefault(image_HW3.shape, []).append(i)
        depths: dict[int, np.ndarray] = {}
        for idx in same_size.values():
            depths.update(zip(idx, predict_depth_maps(predictor, [batch[i][1] for i in idx], device, max_depth)))
        return [depths[i] for i in range(len(batch))]

    def write(item: tuple[Path, str], image_HW3: np.ndarray, depth_HW: np.ndarray) -> list[Path]:
        path, stem = item
        return write_prediction(out, stem, image_HW3, depth_HW, intrinsics=intrinsics, ply=ply,
                                meta={"input": str(path), "model": model_name, **meta_extra}, pictures=pictures)

    items = list(zip(inputs, cli_files.unique_stems(inputs)))
    with tqdm(total=len(items), desc="depth", unit="img", disable=not progress, file=sys.stderr) as bar:
        for (path, _), outcome in cli_files.run_in_batches(items, batch_size, lambda item: read_rgb(item[0], exif_transpose=True),
                                                       run, write, skip=(ImageReadError, FileNotFoundError)):
            if isinstance(outcome, BaseException):
                report.failed[str(path)] = str(outcome)
                tqdm.write(f"skipped {path}: {outcome}", file=sys.stderr)
            else:
                report.written[str(path)] = outcome
            bar.update()
    return report


# --------------------------------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate_all(predictor: DepthPredictor, data: Iterable[dict], configs: Sequence[DepthEvalConfig],
                 device: torch.device | str = "cpu", progress: bool = True, total: int | None = None) -> list[DepthEvaluator]:
    """Run ``predictor`` once on every batch of ``data`` (``image``, ``depth``, ``valid``, ``name``) and score the
    predictions under each of ``configs`` (e.g. metric and median-scaled); a prediction of another size than the
    ground truth is resized bilinearly to it."""
    from tqdm import tqdm

    evs = [DepthEvaluator(c) for c in configs]
    for batch in tqdm(data, desc="eval", unit="batch", total=total, disable=not progress, file=sys.stderr):
        image_B3HW = batch["image"].to(device)
        gt_B1HW = batch["depth"]
        pred_B1HW = predictor.predict_depth(image_B3HW).float()
        if pred_B1HW.shape[-2:] != gt_B1HW.shape[-2:]:
            pred_B1HW = F.interpolate(pred_B1HW, gt_B1HW.shape[-2:], mode="bilinear", align_corners=False)
        names = batch.get("name")
        names = [names] if isinstance(names, str) else (list(names) if names is not None else None)
        for ev in evs:
            ev.update(pred_B1HW.cpu(), gt_B1HW, batch.get("valid"), names)
    return evs


def evaluate(predictor: DepthPredictor, data: Iterable[dict], config: DepthEvalConfig,
             device: torch.device | str = "cpu", progress: bool = True, total: int | None = None) -> DepthEvaluator:
    """:func:`evaluate_all` under one protocol."""
    return evaluate_all(predictor, data, [config], device, progress, total)[0]


def model_depth_range(predictor: DepthPredictor) -> tuple[float, float] | None:
    """The depths (metres) a model can predict, when it declares them (``depth_range``: DAR's bins), looking
    through wrappers such as :class:`KBCropPredictor`; None when it declares none."""
    model = getattr(predictor, "predictor", predictor)
    rng = getattr(model, "depth_range", None)
    return (float(rng[0]), float(rng[1])) if rng is not None else None


def range_warning(predictor: DepthPredictor, config: DepthEvalConfig) -> str | None:
    """A warning when a metric model cannot reach the evaluation's cap (e.g. depth bins that stop at 10 m, scored
    on KITTI's 80 m: d1 near 0), else None."""
    rng = model_depth_range(predictor)
    if rng is None or rng[1] >= config.max_depth:
        return None
    return (f"the model predicts at most {rng[1]:g} m (its depth range {rng[0]:g}..{rng[1]:g} m) but this evaluation "
            f"counts ground truth up to {config.max_depth:g} m; farther pixels cannot be matched: see the median-scaled "
            f"row (--median-scaling) or score within its range (--max-depth {rng[1]:g})")


def write_eval_json(ev: DepthEvaluator, path: Path, extra: dict) -> Path:
    """:meth:`DepthEvaluator.to_json` (with per-image values) plus ``extra`` (dataset, model, counts)."""
    ev.to_json(path, per_image=True)
    doc = json.loads(path.read_text())
    doc.update(extra)
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(doc, indent=2)))
    return path


def eval_summary(rows: dict[str, DepthEvaluator]) -> str:
    """The standard table of each evaluator (see :func:`format_table`), under its label."""
    return "\n".join(f"{label}\n{format_table(ev.compute())}" for label, ev in rows.items())


class KBCropPredictor:
    """Predicts on the 352x1216 KB crop of each image and pastes the result into a zero map of the full size
    (how BTS / ZoeDepth evaluate KITTI); the Garg crop lies inside the KB window for 375x1242 frames."""

    def __init__(self, predictor: DepthPredictor):
        self.predictor = predictor

    def predict_depth(self, image_B3HW: torch.Tensor) -> torch.Tensor:
        from scalear.datasets.depth import kb_crop, kb_uncrop

        return kb_uncrop(self.predictor.predict_depth(kb_crop(image_B3HW)), tuple(image_B3HW.shape[-2:]))
