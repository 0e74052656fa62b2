"""KITTI depth (Geiger et al.): Eigen split lists, annotated depth PNGs, Velodyne projection, the KB crop.

Follows the code everyone evaluates with:

- Split lists (:func:`read_split_file`): monodepth2's ``splits/eigen/test_files.txt`` lines
  ``2011_09_26/2011_09_26_drive_0002_sync 0000000069 l`` (697 frames; ``eigen_benchmark`` has the 652 with
  annotated depth) and BTS's ``eigen_test_files_with_gt.txt`` lines ``<image path> <depth path or None> <focal>``.
- Annotated ground truth (KITTI depth-prediction ``proj_depth/groundtruth``): uint16 PNG, metres = v / 256,
  0 = invalid (monodepth2 ``export_gt_depth.py``).
- Velodyne ground truth (:func:`generate_depth_map`): monodepth2 ``kitti_utils.generate_depth_map`` step by
  step: keep points with x >= 0, project with ``P_rect_0c @ R_rect_00 @ [R|T]``, pixel = round(u) - 1,
  round(v) - 1 ("to match KITTI matlab"), keep in-bounds, keep the smallest depth per pixel, depth < 0 -> 0.
  The object benchmark's ``calib/*.txt`` (``P2``, ``R0_rect``, ``Tr_velo_to_cam``) is handled by
  :func:`object_velo_to_image`.
- KB crop (BTS/ZoeDepth ``do_kb_crop``): the bottom-centred 352x1216 window, :func:`kb_crop` /
  :func:`kb_uncrop`. Garg/Eigen evaluation crops are given as fractions (:data:`GARG_CROP`, :data:`EIGEN_CROP`)
  and applied by the evaluation, not here.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Sequence, TypeVar

import numpy as np
import torch
from torch.utils.data import Dataset

from scalear.datasets.depth.io import (describe_encoding, list_file_lines, list_line_focal, make_sample,
                                      read_depth_png, read_rgb)

log = logging.getLogger(__name__)

KITTI_MIN_DEPTH: float = 1e-3
KITTI_MAX_DEPTH: float = 80.0
#: the farthest depth KITTI's ground truth holds (the HDL-64E's range); decoded PNGs beyond it are refused
KITTI_SENSOR_MAX_DEPTH: float = 120.0
#: KB crop size (H, W): BTS/ZoeDepth ``do_kb_crop``
KB_CROP_HW: tuple[int, int] = (352, 1216)
#: evaluation crops as fractions of the GT size (row0, row1, col0, col1), BTS ``eval_with_pngs.py``
GARG_CROP: tuple[float, float, float, float] = (0.40810811, 0.99189189, 0.03594771, 0.96405229)
EIGEN_CROP: tuple[float, float, float, float] = (0.3324324, 0.91351351, 0.0359477, 0.96405229)
#: focal length of the 2011_09_26 recordings' P_rect_02 (BTS lists write it on every Eigen line)
KITTI_FOCAL_2011_09_26: float = 721.5377

GroundTruth = Literal["annotated", "velodyne"]


# ------------------------------------------------------------------------------------------------- split lists


@dataclass(frozen=True)
class KittiFrame:
    """One line of a split list.

    ``folder`` is ``<date>/<drive>`` (e.g. ``2011_09_26/2011_09_26_drive_0002_sync``), ``side`` ``"l"``
    (image_02) or ``"r"`` (image_03). From BTS lists: ``gt_rel`` (the depth path as listed), ``gt_none``
    (the list says ``None``: no annotated depth) and ``focal``.
    """

    folder: str
    frame: int
    side: Literal["l", "r"] = "l"
    gt_rel: str | None = None
    gt_none: bool = False
    focal: float | None = None

    @property
    def date(self) -> str:
        return self.folder.split("/")[0]

    @property
    def drive(self) -> str:
        return self.folder.split("/")[-1]

    @property
    def cam(self) -> int:
        return 2 if self.side == "l" else 3

    @property
    def name(self) -> str:
        """monodepth2's line for this frame: ``<date>/<drive> <frame:010d> <side>``."""
        return f"{self.folder} {self.frame:010d} {self.side}"

    @property
    def image_rel(self) -> str:
        return f"{self.folder}/image_0{self.cam}/data/{self.frame:010d}.png"

    @property
    def velodyne_rel(self) -> str:
        return f"{self.folder}/velodyne_points/data/{self.frame:010d}.bin"

    def annotated_candidates(self) -> list[str]:
        """Where annotated depth is found, relative to the depth root, in the layouts in use."""
        tail = f"proj_depth/groundtruth/image_0{self.cam}/{self.frame:010d}.png"
        c = [self.gt_rel] if self.gt_rel else []
        c += [f"{self.drive}/{tail}", f"{self.folder}/{tail}", f"train/{self.drive}/{tail}", f"val/{self.drive}/{tail}"]
        return list(dict.fromkeys(c))


_BTS_IMAGE = re.compile(r"^(?P<folder>.+)/image_0(?P<cam>[23])/data/(?P<frame>\d+)\.(?:png|jpg)$")


def read_split_file(path: str | Path) -> list[KittiFrame]:
    """Parse a KITTI split list in monodepth2's or BTS's format (detected per line); blank lines skipped."""
    frames = []
    for where, line in list_file_lines(path):
        parts = line.split()
        if len(parts) == 3 and parts[2] in ("l", "r") and parts[1].isdigit():  # monodepth2
            frames.append(KittiFrame(parts[0], int(parts[1]), parts[2]))  # type: ignore[arg-type]
        elif len(parts) in (2, 3) and (m := _BTS_IMAGE.match(parts[0])):  # BTS
            focal = list_line_focal(parts, where)
            none = parts[1] == "None"
            frames.append(
                KittiFrame(m["folder"], int(m["frame"]), "l" if m["cam"] == "2" else "r", None if none else parts[1], none, focal)
            )
        else:
            raise ValueError(
                f"{where}: not a KITTI split line (monodepth2 '<date>/<drive> <frame> l|r' or BTS "
                f"'<date>/<drive>/image_02/data/<frame>.png <depth|None> <focal>'): {line!r}"
            )
    return frames


# ------------------------------------------------------------------------------------------------ calibration


def read_calib_file(path: str | Path) -> dict[str, np.ndarray]:
    """``key: numbers`` lines as float64 arrays (monodepth2 ``read_calib_file``; non-numeric values skipped).

    A file without any ``key: numbers`` line is refused with an error naming it (a bare 12/16-number
    projection, as some toolkits export, is read by :func:`read_projection_file`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"KITTI calibration file not found: {path}")
    text = path.read_text()
    data = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        try:
            data[key.strip()] = np.array([float(x) for x in value.split()], dtype=np.float64)
        except ValueError:
            pass  # e.g. calib_time: 09-Jan-2012 13:57:47
    if not data:
        n = len(text.split())
        hint = " (a bare projection matrix? read it with read_projection_file)" if n in (12, 16) else ""
        raise ValueError(f"{path}: no 'key: numbers' lines, so not a KITTI calibration file; found {n} bare values{hint}")
    return data


def read_projection_file(path: str | Path) -> np.ndarray:
    """A bare Velodyne -> image projection, as some toolkits export it: 12 numbers (3x4, row-major) or 16
    (4x4 whose last row is ``0 0 0 1``), whitespace- or comma-separated, nothing else. Returns ``(3, 4)``.

    The matrix must be the whole chain ``P_rect @ R_rect @ Tr_velo_to_cam``; :func:`check_velo_projection`
    refuses a camera matrix or a rigid transform given instead.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"projection file not found: {path}")
    try:
        vals = np.array([float(x) for x in path.read_text().replace(",", " ").split()], dtype=np.float64)
    except ValueError:
        raise ValueError(f"{path}: a bare projection file holds only 12 or 16 numbers (3x4 or 4x4 row-major)") from None
    if vals.size == 16:
        m = vals.reshape(4, 4)
        if not np.allclose(m[3], [0, 0, 0, 1]):
            raise ValueError(f"{path}: a 4x4 projection must end with the row 0 0 0 1, got {m[3].tolist()}")
        return m[:3]
    if vals.size != 12:
        raise ValueError(f"{path}: {vals.size} numbers; a bare projection file holds 12 (3x4) or 16 (4x4) row-major")
    return vals.reshape(3, 4)


def projection_focal(P_3x4: np.ndarray) -> float:
    """The focal length (pixels) of a projection ``K [R | t]``: ``K[0, 0]`` of the RQ decomposition of its left
    3x3, normalised so that ``K[2, 2] = 1`` (the ``P_rect[0, 0]`` it was built from)."""
    import scipy.linalg  # here: every image-reading command imports this package

    K, _ = scipy.linalg.rq(np.asarray(P_3x4, dtype=np.float64)[:, :3])
    return float(abs(K[0, 0] / K[2, 2]))


def check_velo_projection(P_3x4: np.ndarray, source: str | Path) -> None:
    """Refuse a matrix that cannot be KITTI's Velodyne -> image projection (error naming ``source``).

    Checks: finite, (3, 4), an invertible left 3x3; the depth row looks along the Velodyne's forward x axis (a
    camera matrix such as ``P2`` alone looks along the Velodyne's z, up); a focal length of at least 10 pixels
    (a rigid transform such as ``Tr_velo_to_cam`` alone has 1).
    """
    P = np.asarray(P_3x4, dtype=np.float64)
    if P.shape != (3, 4) or not np.isfinite(P).all():
        raise ValueError(f"{source}: the Velodyne -> image projection must be a finite 3x4 matrix, got shape {P.shape}")
    M = P[:, :3]
    if abs(np.linalg.det(M)) <= 1e-9 * np.linalg.norm(M) ** 3:
        raise ValueError(f"{source}: the projection's left 3x3 is singular, so it projects nothing to pixels")
    depth_row = M[2] / np.linalg.norm(M[2])
    if depth_row[0] < 0.5:
        raise ValueError(f"{source}: the projection's depth row {np.round(M[2], 4).tolist()} does not look along the "
                         "Velodyne's forward x axis: is it a camera matrix (P2) or a transform to another frame "
                         "rather than P2 @ R0_rect @ Tr_velo_to_cam?")
    if (f := projection_focal(P)) < 10:
        raise ValueError(f"{source}: the projection's focal length is {f:.3g} pixels: a rigid transform "
                         "(Tr_velo_to_cam?) rather than a projection to pixels")


def _get(calib: dict[str, np.ndarray], key: str, size: int, source: str | Path) -> np.ndarray:
    if key not in calib:
        raise KeyError(f"{source}: no {key!r} (found {sorted(calib)})")
    if calib[key].size != size:
        raise ValueError(f"{source}: {key} has {calib[key].size} numbers, expected {size}")
    return calib[key]


def _homogeneous(m_3x4: np.ndarray) -> np.ndarray:
    return np.vstack([m_3x4.reshape(3, 4), [0.0, 0.0, 0.0, 1.0]])


def _rect_4x4(r_3x3: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = r_3x3.reshape(3, 3)
    return out


def raw_velo_to_image(calib_dir: str | Path, cam: int = 2) -> tuple[np.ndarray, tuple[int, int]]:
    """Velodyne -> image projection of KITTI raw data, and the rectified image size.

    Returns ``P_velo2im`` (3, 4) = ``P_rect_0{cam} @ R_rect_00 (4x4) @ [R|T]`` from ``calib_cam_to_cam.txt``
    and ``calib_velo_to_cam.txt`` in ``calib_dir`` (``<root>/<date>``), and ``(H, W)`` from ``S_rect_0{cam}``.
    """
    calib_dir = Path(calib_dir)
    c2c_path, v2c_path = calib_dir / "calib_cam_to_cam.txt", calib_dir / "calib_velo_to_cam.txt"
    c2c, v2c = read_calib_file(c2c_path), read_calib_file(v2c_path)
    velo2cam_4x4 = _homogeneous(np.hstack([_get(v2c, "R", 9, v2c_path).reshape(3, 3), _get(v2c, "T", 3, v2c_path)[:, None]]))
    r_rect_4x4 = _rect_4x4(_get(c2c, "R_rect_00", 9, c2c_path))
    p_rect_3x4 = _get(c2c, f"P_rect_0{cam}", 12, c2c_path).reshape(3, 4)
    w, h = _get(c2c, f"S_rect_0{cam}", 2, c2c_path)
    return p_rect_3x4 @ r_rect_4x4 @ velo2cam_4x4, (int(h), int(w))


def object_velo_to_image(calib_file: str | Path, cam: int = 2) -> np.ndarray:
    """Velodyne -> image projection (3, 4) of the KITTI object benchmark: ``P{cam} @ R0_rect @ Tr_velo_to_cam``.

    The object calib has no image size: take it from the image (e.g. 370x1224 or 375x1242).
    """
    c = read_calib_file(calib_file)
    return (
        _get(c, f"P{cam}", 12, calib_file).reshape(3, 4)
        @ _rect_4x4(_get(c, "R0_rect", 9, calib_file))
        @ _homogeneous(_get(c, "Tr_velo_to_cam", 12, calib_file))
    )


@dataclass(frozen=True)
class VeloCalibration:
    """A checked Velodyne -> image projection ``P`` (3, 4), the camera's focal length (pixels), the image size
    (H, W) it is for (None where the calibration does not say) and the file(s) it was read from."""

    P: np.ndarray
    focal: float
    hw: tuple[int, int] | None
    source: str


def read_velo_calibration(path: str | Path, cam: int = 2) -> VeloCalibration:
    """The Velodyne -> image projection of camera ``cam`` from any of the layouts in use:

    - a folder with raw-data ``calib_cam_to_cam.txt`` + ``calib_velo_to_cam.txt`` (:func:`raw_velo_to_image`;
      focal ``P_rect_0{cam}[0, 0]``, size ``S_rect_0{cam}``);
    - an object-benchmark file ``calib/XXXXXX.txt`` (:func:`object_velo_to_image`; focal ``P{cam}[0, 0]``);
    - a bare 3x4 / 4x4 projection file (:func:`read_projection_file`; the whole chain, as some toolkits export
      it; focal from its RQ decomposition, :func:`projection_focal`).

    The matrix is checked with :func:`check_velo_projection`; problems raise an error naming the file.
    """
    path = Path(path)
    if path.is_dir():
        c2c = path / "calib_cam_to_cam.txt"
        P, hw = raw_velo_to_image(path, cam)
        focal = float(_get(read_calib_file(c2c), f"P_rect_0{cam}", 12, c2c)[0])
        source = f"{c2c} + calib_velo_to_cam.txt"
    elif not path.is_file():
        raise FileNotFoundError(f"KITTI calibration not found: {path}")
    elif ":" not in path.read_text():
        P, hw, source = read_projection_file(path), None, f"{path} (bare projection)"
        focal = projection_focal(P)
    else:
        P, hw, source = object_velo_to_image(path, cam), None, str(path)
        focal = float(_get(read_calib_file(path), f"P{cam}", 12, path)[0])
    check_velo_projection(P, source)
    return VeloCalibration(P, focal, hw, source)


def read_velodyne_bin(path: str | Path) -> np.ndarray:
    """A Velodyne scan: float32 little-endian ``(N, 4)`` = x forward, y left, z up (metres), reflectance."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Velodyne scan not found: {path}")
    raw = np.fromfile(path, dtype="<f4")
    if raw.size % 4:
        raise ValueError(f"{path}: {raw.size} floats is not a multiple of 4 (x, y, z, reflectance)")
    return raw.reshape(-1, 4)


def project_velodyne(points_N4: np.ndarray, P_velo2im: np.ndarray, hw: tuple[int, int], vel_depth: bool = False,
                     source: str = "Velodyne scan") -> np.ndarray:
    """Sparse ``(H, W)`` float32 depth from Velodyne points, exactly as monodepth2's ``generate_depth_map``.

    Points with x < 0 (behind the sensor) are dropped; the rest project by ``P_velo2im`` (3, 4); pixel
    ``(round(u) - 1, round(v) - 1)`` (KITTI's 1-based MATLAB convention; numpy rounds halves to even);
    out-of-image points are dropped; where several land on one pixel the smallest depth is kept; negative
    depths (possible only for points 0 <= x < ~0.27 m, on the car) become 0. Depth is camera z, or the
    Velodyne x if ``vel_depth`` (monodepth2's ``export_gt_depth.py`` uses ``vel_depth=True`` for Eigen).
    0 = no point. One deliberate difference: monodepth2's ``sub2ind`` (``row * (W - 1) + col - 1``) also
    treats pixels (r, W-1) and (r+1, 0) as one; here every pixel keeps its own minimum (this only touches
    the first and last columns, outside the Garg and Eigen crops).

    If points lie in front of the sensor but none lands in the image, the projection or the image size is wrong:
    a ``ValueError`` naming ``source`` is raised instead of returning an empty map.
    """
    if points_N4.ndim != 2 or points_N4.shape[1] not in (3, 4):
        raise ValueError(f"points must be (N, 3) or (N, 4), got {points_N4.shape}")
    P = np.asarray(P_velo2im, dtype=np.float64)
    P = P[:3] if P.shape == (4, 4) else P
    if P.shape != (3, 4):
        raise ValueError(f"P_velo2im must be (3, 4) or (4, 4), got {np.asarray(P_velo2im).shape}")
    h, w = hw
    xyz1_N4 = np.hstack([points_N4[:, :3].astype(np.float64), np.ones((len(points_N4), 1))])
    xyz1_N4 = xyz1_N4[xyz1_N4[:, 0] >= 0]
    uvz_N3 = xyz1_N4 @ P.T
    z = uvz_N3[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.round(uvz_N3[:, 0] / z) - 1
        v = np.round(uvz_N3[:, 1] / z) - 1
    depth = xyz1_N4[:, 0] if vel_depth else z
    keep = (u >= 0) & (v >= 0) & (u < w) & (v < h)  # NaN/inf (z = 0) compare False
    if len(xyz1_N4) and not keep.any():
        raise ValueError(f"{source}: none of the {len(xyz1_N4)} Velodyne points in front of the sensor lands in the "
                         f"{h}x{w} image: wrong calibration matrix or image size?")
    depth_HW = np.full((h, w), np.inf)
    np.minimum.at(depth_HW, (v[keep].astype(np.int64), u[keep].astype(np.int64)), depth[keep])
    depth_HW[~np.isfinite(depth_HW) | (depth_HW < 0)] = 0.0
    return depth_HW.astype(np.float32)


def generate_depth_map(calib_dir: str | Path, velo_file: str | Path, cam: int = 2, vel_depth: bool = False) -> np.ndarray:
    """monodepth2's ``generate_depth_map(calib_dir, velo_filename, cam, vel_depth)``: ``(H, W)`` float32 metres."""
    P_velo2im, hw = raw_velo_to_image(calib_dir, cam)
    return project_velodyne(read_velodyne_bin(velo_file), P_velo2im, hw, vel_depth, source=f"{velo_file} with {calib_dir}")


# ------------------------------------------------------------------------------------------------------ crops

T = TypeVar("T", np.ndarray, torch.Tensor)


def _hw(x: np.ndarray | torch.Tensor) -> tuple[int, int]:
    """(H, W) of a numpy (H, W) / (H, W, C) array or a torch (..., H, W) tensor."""
    if isinstance(x, torch.Tensor):
        if x.ndim < 2:
            raise ValueError(f"expected a tensor (..., H, W), got shape {tuple(x.shape)}")
        return x.shape[-2], x.shape[-1]
    if x.ndim not in (2, 3):
        raise ValueError(f"expected a numpy array (H, W) or (H, W, C), got shape {x.shape}")
    return x.shape[0], x.shape[1]


def kb_crop_offsets(h: int, w: int) -> tuple[int, int]:
    """``(top, left)`` of the KB crop: top = H - 352, left = (W - 1216) // 2 (BTS ``do_kb_crop``)."""
    ch, cw = KB_CROP_HW
    if h < ch or w < cw:
        raise ValueError(f"the KB crop needs an image of at least {ch}x{cw}, got {h}x{w}")
    return h - ch, (w - cw) // 2


def kb_crop(x: T) -> T:
    """The 352x1216 KB crop of a numpy ``(H, W)``/``(H, W, C)`` array or a torch ``(..., H, W)`` tensor.

    Use it on the image and the depth map alike: e.g. 375x1242 -> rows 23:375, cols 13:1229.
    """
    h, w = _hw(x)
    top, left = kb_crop_offsets(h, w)
    ch, cw = KB_CROP_HW
    if isinstance(x, torch.Tensor):
        return x[..., top : top + ch, left : left + cw]
    return x[top : top + ch, left : left + cw]


def kb_uncrop(x: T, hw: tuple[int, int]) -> T:
    """Paste a KB-cropped map back into a zero map of the full size ``hw`` (how BTS evaluates predictions)."""
    ch, cw = _hw(x)
    if (ch, cw) != KB_CROP_HW:
        raise ValueError(f"expected a {KB_CROP_HW[0]}x{KB_CROP_HW[1]} map, got {ch}x{cw}")
    top, left = kb_crop_offsets(*hw)
    if isinstance(x, torch.Tensor):
        out = x.new_zeros((*x.shape[:-2], *hw))
        out[..., top : top + ch, left : left + cw] = x
    else:
        out = np.zeros((*hw, *x.shape[2:]), dtype=x.dtype)
        out[top : top + ch, left : left + cw] = x
    return out


# ----------------------------------------------------------------------------------------------------- dataset


class KittiDepthDataset(Dataset):
    """KITTI frames of a split list with annotated or Velodyne ground truth, as sample dicts.

    Args:
        root: KITTI raw data: ``<date>/<drive>/image_02/data/<frame:010d>.png``, ``<date>/calib_*.txt``,
            ``<date>/<drive>/velodyne_points/data/<frame:010d>.bin``.
        split: a split list file (monodepth2 or BTS format) or parsed :class:`KittiFrame` s.
        gt: ``"annotated"`` (KITTI's improved GT PNGs, value / 256) or ``"velodyne"`` (projected raw scans).
        depth_root: where annotated depth lives (default ``root``); looked up as the BTS list gives it, then
            ``<drive>/proj_depth/groundtruth/image_02/<frame>.png`` (BTS), ``<date>/<drive>/proj_depth/...``
            (monodepth2) and ``{train,val}/<drive>/proj_depth/...`` (the KITTI download).
        missing_gt: what to do with frames that have no ground truth (BTS ``None`` or no file):
            ``"skip"`` (default; listed in ``self.missing_gt`` and logged), ``"keep"`` (yielded with depth 0,
            valid all False) or ``"error"``.
        kb_crop: apply the 352x1216 KB crop to image and depth.
        vel_depth: Velodyne GT depth is the Velodyne x (True, monodepth2's Eigen GT) or camera z (False).
        focal: override the focal length (else the list's, else ``P_rect_0{cam}[0, 0]`` of the calib file).

    On the annotated Eigen split: 697 listed frames, 45 without GT, 652 yielded (as BTS reports
    "45 GT files missing"). Samples: ``image`` (3, H, W) [0, 1], ``depth`` (1, H, W) metres, ``valid``,
    ``focal``, ``name`` (monodepth2's line ``<date>/<drive> <frame> l``).
    """

    def __init__(
        self,
        root: str | Path,
        split: str | Path | Sequence[KittiFrame],
        gt: GroundTruth = "annotated",
        depth_root: str | Path | None = None,
        missing_gt: Literal["skip", "keep", "error"] = "skip",
        kb_crop: bool = False,
        vel_depth: bool = True,
        focal: float | None = None,
    ):
        if gt not in ("annotated", "velodyne"):
            raise ValueError(f"gt must be 'annotated' or 'velodyne', got {gt!r}")
        if missing_gt not in ("skip", "keep", "error"):
            raise ValueError(f"missing_gt must be 'skip', 'keep' or 'error', got {missing_gt!r}")
        self.root = Path(root)
        self.depth_root = Path(depth_root) if depth_root is not None else self.root
        self.gt, self.kb_crop, self.vel_depth = gt, kb_crop, vel_depth
        frames = read_split_file(split) if isinstance(split, (str, Path)) else list(split)
        self.num_listed = len(frames)

        absent = [str(self.root / f.image_rel) for f in frames if not (self.root / f.image_rel).is_file()]
        if absent:
            more = f" (and {len(absent) - 5} more)" if len(absent) > 5 else ""
            raise FileNotFoundError(
                f"{len(absent)} of {len(frames)} KITTI images not found under {self.root}, e.g. {absent[:5]}{more}"
            )

        self._calib: dict[tuple[str, int], VeloCalibration] = {}
        self._focals: dict[tuple[str, int], float] = {}
        self.items: list[tuple[KittiFrame, Path | None, float]] = []
        self.missing_gt: list[str] = []
        for f in frames:
            gt_path = self._find_gt(f)
            if gt_path is None:
                self.missing_gt.append(f.name)
                if missing_gt == "skip":
                    continue
            self.items.append((f, gt_path, self._focal(f, focal)))
        if self.missing_gt:
            msg = (
                f"KITTI: {len(self.missing_gt)} of {self.num_listed} frames have no {gt} ground truth "
                f"(e.g. {self.missing_gt[0]!r}); "
            )
            if missing_gt == "error":
                raise FileNotFoundError(msg + "pass missing_gt='skip' to leave them out")
            what = "left out, %d remain; see .missing_gt" if missing_gt == "skip" else "kept with no valid depth (%d frames)"
            log.warning(msg + what, len(self.items))

    def _calibration(self, f: KittiFrame) -> VeloCalibration:
        key = (f.date, f.cam)
        if key not in self._calib:
            self._calib[key] = read_velo_calibration(self.root / f.date, f.cam)
        return self._calib[key]

    def _find_gt(self, f: KittiFrame) -> Path | None:
        if self.gt == "velodyne":
            p = self.root / f.velodyne_rel
            return p if p.is_file() else None
        if f.gt_none:
            return None
        return next((self.depth_root / c for c in f.annotated_candidates() if (self.depth_root / c).is_file()), None)

    def _focal(self, f: KittiFrame, override: float | None) -> float:
        if override is not None:
            return float(override)
        if f.focal is not None:
            return f.focal
        key = (f.date, f.cam)
        if key not in self._focals:
            c2c = self.root / f.date / "calib_cam_to_cam.txt"
            if not c2c.is_file():
                raise FileNotFoundError(f"no focal length for {f.name!r}: the list gives none and {c2c} is absent; pass focal=")
            self._focals[key] = float(_get(read_calib_file(c2c), f"P_rect_0{f.cam}", 12, c2c)[0])
        return self._focals[key]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        f, gt_path, focal = self.items[i]
        image_path = self.root / f.image_rel
        image_HW3 = read_rgb(image_path)
        depth_HW = frame_ground_truth(image_path, image_HW3.shape[:2], gt_path, self.gt, lambda: self._calibration(f),
                                      self.vel_depth)
        if self.kb_crop:
            image_HW3, depth_HW = kb_crop(image_HW3), kb_crop(depth_HW)
        return make_sample(image_HW3, depth_HW, focal, f.name)


def frame_ground_truth(image_path: Path, hw: tuple[int, int], gt_path: Path | None, gt: str,
                       calibration: Callable[[], VeloCalibration], vel_depth: bool) -> np.ndarray:
    """The (H, W) depth of one KITTI frame: zeros without ground truth, an annotated 16-bit PNG (``gt="annotated"``)
    or a Velodyne scan projected with ``calibration()`` (``"velodyne"``); a size that does not fit the image's
    ``hw`` is an error naming both files."""
    if gt_path is None:
        return np.zeros(hw, dtype=np.float32)
    if gt == "annotated":
        depth_HW = read_depth_png(gt_path, "kitti", known_range=("KITTI", KITTI_SENSOR_MAX_DEPTH))
    else:
        cal = calibration()
        if cal.hw is not None and tuple(cal.hw) != tuple(hw):
            raise ValueError(f"{image_path} is {hw[0]}x{hw[1]} but {cal.source} is for {cal.hw[0]}x{cal.hw[1]} images")
        depth_HW = project_velodyne(read_velodyne_bin(gt_path), cal.P, hw, vel_depth,
                                    source=f"{gt_path} with {cal.source}")
    if depth_HW.shape != tuple(hw):
        raise ValueError(f"{image_path} is {hw[0]}x{hw[1]} but its depth {gt_path} is "
                         f"{depth_HW.shape[0]}x{depth_HW.shape[1]}")
    return depth_HW


#: sub-folders of a flat KITTI folder, searched in this order (the first one present is used)
FOLDER_IMAGE_DIRS: tuple[str, ...] = ("rgb", "image", "images", "image_2", "image_02", "image_3", "image_03")
FOLDER_GT_DIRS: dict[str, tuple[str, ...]] = {"annotated": ("depth", "groundtruth", "depth_gt"),
                                              "velodyne": ("velodyne", "velodyne_points")}
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class KittiFolderDataset(Dataset):
    """KITTI frames in a flat folder, each image matched to its ground truth by file stem (no split list).

    Layouts under ``root`` (the first sub-folder of each kind that exists is used):

    - ``gt="annotated"``: images in ``rgb/`` (or ``image/``, ``images/``, ``image_2/``, ``image_02/``,
      ``image_3/``, ``image_03/``), KITTI's 16-bit depth PNGs (metres = v / 256, 0 = none) of the same stem in
      ``depth/`` (or ``groundtruth/``, ``depth_gt/``): e.g. ``rgb/0000000005.png`` + ``depth/0000000005.png``
      (Metric3D's ``kitti_demo``).
    - ``gt="velodyne"``: images as above, scans ``velodyne/<stem>.bin`` (or ``velodyne_points/``), projected
      with the calibration (:func:`read_velo_calibration`): ``calib/<stem>.txt`` per frame (the object
      benchmark's ``image_2/ velodyne/ calib/``), else ``calib_cam_to_cam.txt`` + ``calib_velo_to_cam.txt`` in
      ``root`` (raw data), or ``calib``: a file or raw-data folder for every frame (also a bare 3x4 projection).

    Args:
        root: the folder.
        gt: ``"annotated"`` or ``"velodyne"``.
        gt_dir: the ground-truth folder, if not one of the names above under ``root``.
        calib: calibration for every frame (see above); default: found per frame.
        vel_depth: Velodyne depth is the camera's z (False, default: the object benchmark's convention) or the
            Velodyne's x (True, monodepth2's Eigen ground truth).
        focal: override the focal length (pixels); else the calibration's (``P2[0, 0]`` / ``P_rect_02[0, 0]``),
            else NaN (annotated frames without calibration: the metrics do not use it).
        missing_gt: images without ground truth: ``"skip"`` (default; listed in ``missing_gt`` and logged),
            ``"keep"`` (no valid depth) or ``"error"``.

    The camera is 3 for ``image_3/``/``image_03/`` and 2 otherwise. Samples are named by the image's stem.
    """

    def __init__(self, root: str | Path, gt: GroundTruth = "annotated", gt_dir: str | Path | None = None,
                 calib: str | Path | None = None, vel_depth: bool = False, focal: float | None = None,
                 missing_gt: Literal["skip", "keep", "error"] = "skip"):
        if gt not in FOLDER_GT_DIRS:
            raise ValueError(f"gt must be 'annotated' or 'velodyne', got {gt!r}")
        if missing_gt not in ("skip", "keep", "error"):
            raise ValueError(f"missing_gt must be 'skip', 'keep' or 'error', got {missing_gt!r}")
        self.root, self.gt, self.vel_depth = Path(root), gt, vel_depth
        self.calib = Path(calib) if calib is not None else None
        if not self.root.is_dir():
            raise FileNotFoundError(f"KITTI folder not found: {self.root}")
        image_dir = next((self.root / d for d in FOLDER_IMAGE_DIRS if (self.root / d).is_dir()), None)
        if image_dir is None:
            raise FileNotFoundError(f"{self.root}: no image folder; expected one of {', '.join(FOLDER_IMAGE_DIRS)}")
        self.cam = 3 if image_dir.name in ("image_3", "image_03") else 2
        self.gt_dir = Path(gt_dir) if gt_dir is not None else next(
            (self.root / d for d in FOLDER_GT_DIRS[gt] if (self.root / d).is_dir()), None)
        if self.gt_dir is None or not self.gt_dir.is_dir():
            raise FileNotFoundError(f"{self.root}: no {gt} ground-truth folder; expected "
                                    f"{' or '.join(FOLDER_GT_DIRS[gt])} next to {image_dir.name}/ (or pass gt_dir)")
        images = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES and not p.name.startswith("."))
        if not images:
            raise FileNotFoundError(f"{image_dir}: no .png / .jpg images")
        suffix = ".png" if gt == "annotated" else ".bin"
        self.num_listed = len(images)
        self._calibs: dict[Path, VeloCalibration] = {}
        self.items: list[tuple[Path, Path | None, VeloCalibration | None, float]] = []
        self.missing_gt: list[str] = []
        for image in images:
            gt_path = self.gt_dir / (image.stem + suffix)
            if not gt_path.is_file():
                self.missing_gt.append(image.stem)
                if missing_gt == "skip":
                    continue
                gt_path = None
            cal = self._calibration(image.stem)
            if gt == "velodyne" and gt_path is not None and cal is None:
                raise FileNotFoundError(
                    f"{gt_path}: no calibration to project it with; expected {self.root / 'calib' / (image.stem + '.txt')}, "
                    f"or calib_cam_to_cam.txt + calib_velo_to_cam.txt in {self.root}, or pass calib")
            f = float(focal) if focal is not None else (cal.focal if cal is not None else math.nan)
            self.items.append((image, gt_path, cal, f))
        stems = {p.stem for p in images}
        orphans = sorted(p.name for p in self.gt_dir.glob("*" + suffix) if p.stem not in stems)
        if orphans:
            log.warning("KITTI folder %s: %d ground-truth file(s) have no image, e.g. %s", self.root, len(orphans), orphans[0])
        if self.missing_gt:
            msg = (f"KITTI folder {self.root}: {len(self.missing_gt)} of {self.num_listed} images have no {gt} ground "
                   f"truth in {self.gt_dir} (e.g. {self.missing_gt[0]!r}); ")
            if missing_gt == "error":
                raise FileNotFoundError(msg + "pass missing_gt='skip' to leave them out")
            log.warning(msg + ("left out, %d remain" if missing_gt == "skip" else "kept with no valid depth (%d frames)"),
                        len(self.items))
        if not self.items:
            raise FileNotFoundError(f"{self.root}: none of the {self.num_listed} images has {gt} ground truth in {self.gt_dir}")

    @property
    def encoding(self) -> str:
        """How the ground truth is read, in words (for reports)."""
        if self.gt == "annotated":
            return f"16-bit PNGs in {self.gt_dir}, {describe_encoding('kitti')}"
        sources = sorted({cal.source for _, _, cal, _ in self.items if cal is not None})
        depth = "Velodyne x" if self.vel_depth else "camera z"
        return f"Velodyne scans in {self.gt_dir} projected with {sources[0]}" + (
            f" (and {len(sources) - 1} more)" if len(sources) > 1 else "") + f", depth = {depth}"

    def _calibration(self, stem: str) -> VeloCalibration | None:
        path = self.calib
        if path is not None and path.is_dir() and not (path / "calib_cam_to_cam.txt").is_file():
            path = path / f"{stem}.txt"  # a folder of per-frame object-benchmark files
        if path is None:
            per_frame = self.root / "calib" / f"{stem}.txt"
            path = per_frame if per_frame.is_file() else (self.root if (self.root / "calib_cam_to_cam.txt").is_file() else None)
        if path is None:
            return None
        if path not in self._calibs:
            self._calibs[path] = read_velo_calibration(path, self.cam)
        return self._calibs[path]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        image_path, gt_path, cal, focal = self.items[i]
        image_HW3 = read_rgb(image_path)
        depth_HW = frame_ground_truth(image_path, image_HW3.shape[:2], gt_path, self.gt, lambda: cal, self.vel_depth)
        return make_sample(image_HW3, depth_HW, focal, image_path.stem)
