"""NYU Depth v2 (Silberman et al., ECCV 2012): the official labeled .mat, its 795/654 split, and folder layouts.

Three sources, one sample dict (:func:`scalear.datasets.depth.io.make_sample`):

- :class:`NyuLabeledDataset` reads ``nyu_depth_v2_labeled.mat`` (MATLAB v7.3 = HDF5) lazily with h5py.
  MATLAB stores arrays column-major, so h5py sees them transposed: ``images`` is ``(N, 3, W, H)`` =
  ``(1449, 3, 640, 480)`` uint8 and ``depths`` / ``rawDepths`` ``(N, W, H)`` float32 metres; a frame is
  ``images[i].transpose(2, 1, 0)`` -> ``(480, 640, 3)`` and ``depths[i].T`` -> ``(480, 640)`` (as BTS's
  ``utils/extract_official_train_test_set_from_mat.py`` does). ``depths`` is the in-painted (filled) depth,
  ``rawDepths`` the raw Kinect depth projected to the RGB camera with holes = 0 (what BTS exports as
  ``sync_depth_*.png``). Default here: ``depths``.
- :func:`read_nyu_splits` reads the official split ``splits.mat`` (MATLAB v5: ``trainNdxs`` 795, ``testNdxs``
  654, 1-based) and returns 0-based indices.
- :class:`NyuFolderDataset` reads RGB JPEG/PNG + 16-bit PNG depth in millimetres, from a BTS list
  (``bathroom/rgb_00045.jpg bathroom/sync_depth_00045.png 518.8579``; ``rgb_XXXXX`` is the 0-based index
  into the labeled .mat), a DenseDepth CSV (``rgb,depth``), or by scanning a folder for pairs named
  ``image_K.png``/``depth_K.png`` (DenseDepth/super-gradients test), ``rgb_K.jpg``/``sync_depth_K.png`` (BTS)
  or ``K_colors.png``/``K_depth.png`` (DenseDepth ``nyu2_test``).

The loaders neither crop nor cap: the Eigen crop (:data:`NYU_EIGEN_CROP`) and the depth range
(:data:`NYU_MIN_DEPTH`, :data:`NYU_MAX_DEPTH`) are applied at evaluation, as in BTS ``eval_with_pngs.py``.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
from torch.utils.data import Dataset

from scalear.datasets.depth.io import (DepthEncoding, ImageReadError, describe_encoding, list_file_lines,
                                      list_line_focal, make_sample, read_depth_png, read_rgb)

log = logging.getLogger(__name__)

#: Eigen crop on 480x640 NYU ground truth: rows 45:471, cols 41:601 (0-based, end exclusive; BTS eval_with_pngs.py)
NYU_EIGEN_CROP: tuple[int, int, int, int] = (45, 471, 41, 601)
NYU_MIN_DEPTH: float = 1e-3
NYU_MAX_DEPTH: float = 10.0  #: the evaluation cap, and the farthest depth NYU's Kinect frames hold
NYU_HW: tuple[int, int] = (480, 640)
#: standard NYU Depth v2 RGB intrinsics (pixels, 640x480): fx, fy, cx, cy
NYU_INTRINSICS: tuple[float, float, float, float] = (518.8579, 519.46961, 325.58245, 253.73617)
NYU_FOCAL: float = NYU_INTRINSICS[0]
NYU_NUM_LABELED = 1449

NyuDepthKey = Literal["depths", "rawDepths"]


def read_nyu_splits(path: str | Path) -> dict[str, np.ndarray]:
    """The official split from ``splits.mat`` as 0-based indices: ``{"train": (795,), "test": (654,)}`` int64."""
    import scipy.io

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"NYU split file not found: {path}")
    try:
        m = scipy.io.loadmat(path)
    except Exception as e:  # scipy raises NotImplementedError for v7.3, ValueError for garbage
        raise ValueError(f"cannot read {path} as a MATLAB v5 splits.mat (trainNdxs/testNdxs): {e}") from e
    missing = [k for k in ("trainNdxs", "testNdxs") if k not in m]
    if missing:
        raise ValueError(f"{path} has no {missing}; found {sorted(k for k in m if not k.startswith('__'))}")
    out = {"train": m["trainNdxs"].ravel().astype(np.int64) - 1, "test": m["testNdxs"].ravel().astype(np.int64) - 1}
    for k, v in out.items():
        if v.size and v.min() < 0:
            raise ValueError(f"{path}: {k} indices must be 1-based (MATLAB), found {v.min() + 1}")
    return out


class NyuLabeledDataset(Dataset):
    """Frames of the official ``nyu_depth_v2_labeled.mat`` as sample dicts, read lazily per index.

    Args:
        mat_path: the MATLAB v7.3 file (HDF5).
        split: ``"train"`` / ``"test"`` (the official 795/654 split, needs ``splits_file``), ``"all"``, or an
            explicit list of frame indices (0-based unless ``one_based``).
        splits_file: ``splits.mat`` (or a dict ``{"train": [...], "test": [...]}`` of 0-based indices).
        depth_key: ``"depths"`` (filled, default) or ``"rawDepths"`` (raw Kinect, holes = 0 = invalid).
        one_based: whether an explicit index list is 1-based (MATLAB's ``trainNdxs``/``testNdxs``).

    Samples are named like BTS's export, ``<sceneType>/rgb_<0-based index:05d>`` (``rgb_<i:05d>`` when the
    file has no ``sceneTypes``). The h5py handle is opened per process on first use (safe with DataLoader
    workers).
    """

    def __init__(
        self,
        mat_path: str | Path,
        split: Literal["train", "test", "all"] | Sequence[int] = "test",
        splits_file: str | Path | dict[str, Sequence[int]] | None = None,
        depth_key: NyuDepthKey = "depths",
        one_based: bool = False,
    ):
        import h5py

        self.mat_path = Path(mat_path)
        if depth_key not in ("depths", "rawDepths"):
            raise ValueError(f"depth_key must be 'depths' (filled) or 'rawDepths' (holes = 0), got {depth_key!r}")
        self.depth_key = depth_key
        if not self.mat_path.is_file():
            raise FileNotFoundError(f"NYU labeled file not found: {self.mat_path}")
        if not h5py.is_hdf5(self.mat_path):
            raise ValueError(
                f"{self.mat_path} is not an HDF5 file; nyu_depth_v2_labeled.mat is MATLAB v7.3 (HDF5). "
                "(splits.mat is MATLAB v5: read it with read_nyu_splits)"
            )
        with h5py.File(self.mat_path, "r") as f:
            missing = [k for k in ("images", depth_key) if k not in f]
            if missing:
                raise ValueError(f"{self.mat_path} has no dataset(s) {missing}; found {sorted(f.keys())}")
            img_shape, d_shape = f["images"].shape, f[depth_key].shape
            self._has_scenes = "sceneTypes" in f
        if len(img_shape) != 4 or img_shape[1] != 3 or d_shape != (img_shape[0], img_shape[2], img_shape[3]):
            raise ValueError(
                f"{self.mat_path}: expected h5py shapes images (N, 3, W, H) and {depth_key} (N, W, H) "
                f"(MATLAB's transposed H x W x 3 x N), got {img_shape} and {d_shape}"
            )
        self.num_frames = img_shape[0]
        self.hw = (img_shape[3], img_shape[2])

        if isinstance(split, str):
            if split == "all":
                idx = np.arange(self.num_frames)
            elif split in ("train", "test"):
                if splits_file is None:
                    raise ValueError(f"split={split!r} needs splits_file (the official splits.mat or a dict of indices)")
                splits = splits_file if isinstance(splits_file, dict) else read_nyu_splits(splits_file)
                idx = np.asarray(splits[split], dtype=np.int64)
            else:
                raise ValueError(f"split must be 'train', 'test', 'all' or a list of indices, got {split!r}")
        else:
            idx = np.asarray(list(split), dtype=np.int64) - (1 if one_based else 0)
        if idx.size and (idx.min() < 0 or idx.max() >= self.num_frames):
            base = 1 if one_based else 0
            lo, hi = idx.min() + base, idx.max() + base
            raise IndexError(f"frame indices must lie in [{base}, {self.num_frames - 1 + base}], got {lo}..{hi}")
        self.indices = idx
        self._file = None

    def __len__(self) -> int:
        return len(self.indices)

    def _h5(self):
        if self._file is None:
            import h5py

            self._file = h5py.File(self.mat_path, "r")
        return self._file

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_file"] = None  # h5py handles do not pickle; each worker reopens
        return state

    def scene_type(self, frame: int) -> str | None:
        """``sceneTypes`` entry of a frame (0-based), e.g. ``"bathroom"``; None if the file has none."""
        if not self._has_scenes:
            return None
        f = self._h5()
        ref = f["sceneTypes"][0, frame]
        return "".join(chr(int(c)) for c in np.asarray(f[ref]).ravel())

    def read_frame(self, frame: int) -> tuple[np.ndarray, np.ndarray]:
        """Frame ``frame`` (0-based in the file) as ``(480, 640, 3)`` uint8 RGB and ``(480, 640)`` float32 metres."""
        f = self._h5()
        image_HW3 = np.ascontiguousarray(f["images"][frame].transpose(2, 1, 0))  # (3, W, H) -> (H, W, 3)
        depth_HW = np.ascontiguousarray(f[self.depth_key][frame].T).astype(np.float32)  # (W, H) -> (H, W)
        return image_HW3, depth_HW

    def __getitem__(self, i: int) -> dict:
        frame = int(self.indices[i])
        image_HW3, depth_HW = self.read_frame(frame)
        scene = self.scene_type(frame)
        name = f"{scene}/rgb_{frame:05d}" if scene else f"rgb_{frame:05d}"
        return make_sample(image_HW3, depth_HW, NYU_FOCAL, name)


# --------------------------------------------------------------------------------------------- folder layouts

#: (rgb regex, depth name template) pairs recognised when scanning a folder
_PAIR_PATTERNS: tuple[tuple[re.Pattern, str], ...] = (
    (re.compile(r"^image_(\d+)\.png$"), "depth_{}.png"),  # DenseDepth test as in super-gradients
    (re.compile(r"^rgb_(\d+)\.(?:jpg|png)$"), "sync_depth_{}.png"),  # BTS sync / official_splits
    (re.compile(r"^(\d+)_colors\.png$"), "{}_depth.png"),  # DenseDepth nyu2_test
)


def read_nyu_file_list(path: str | Path) -> list[tuple[str, str | None, float | None]]:
    """Parse a NYU pair list: ``(rgb, depth or None, focal or None)`` per line, paths relative.

    Accepts BTS lines ``rgb depth [focal]`` (whitespace) and DenseDepth CSV lines ``rgb,depth``; blank
    lines are skipped, a depth of ``None`` (BTS's marker for "no ground truth") becomes None.
    """
    out = []
    for where, line in list_file_lines(path):
        parts = [p.strip() for p in line.split(",")] if "," in line else line.split()
        if len(parts) not in (2, 3):
            raise ValueError(f"{where}: expected 'rgb depth [focal]' or 'rgb,depth', got {line!r}")
        out.append((parts[0], None if parts[1] == "None" else parts[1], list_line_focal(parts, where)))
    return out


def scan_nyu_folder(root: str | Path) -> list[tuple[str, str]]:
    """RGB/depth pairs found under ``root`` (recursively) by the naming patterns of BTS and DenseDepth.

    Returns ``(rgb, depth)`` paths relative to ``root``, sorted by folder and frame number. An RGB file
    whose depth partner is absent is listed with the missing partner, for the caller to report.
    """
    root = Path(root)
    pairs = []
    for p in root.rglob("*"):
        for rx, depth_tpl in _PAIR_PATTERNS:
            if m := rx.match(p.name):
                key = (str(p.parent.relative_to(root)), int(m.group(1)))
                pairs.append((key, str(p.relative_to(root)), str((p.parent / depth_tpl.format(m.group(1))).relative_to(root))))
                break
    return [(rgb, depth) for _, rgb, depth in sorted(pairs)]


class NyuFolderDataset(Dataset):
    """NYU RGB + 16-bit millimetre depth PNGs in a folder, from a list file or by scanning.

    Args:
        root: folder the RGB paths are relative to.
        file_list: a BTS list (``rgb depth focal``) or DenseDepth CSV; None scans ``root`` (:func:`scan_nyu_folder`).
        depth_root: folder the depth paths are relative to (BTS's ``gt_path``); default ``root``.
        depth_encoding: ``"mm"`` (NYU's PNGs) unless you know better.
        focal: focal length used when the list gives none.

    Depth 0 = invalid (BTS ``sync_depth`` has holes; DenseDepth's test depth is filled). Every listed file
    must exist: missing ones are reported together at construction. Lines whose depth is ``None`` are
    kept out and listed in ``missing_gt``. A depth PNG whose decoded depths reach far beyond NYU's 10 m is
    refused with the encoding that would fit (:func:`~scalear.datasets.depth.io.check_depth_range`).
    """

    def __init__(
        self,
        root: str | Path,
        file_list: str | Path | None = None,
        depth_root: str | Path | None = None,
        depth_encoding: DepthEncoding | float = "mm",
        focal: float = NYU_FOCAL,
    ):
        self.root = Path(root)
        self.depth_root = Path(depth_root) if depth_root is not None else self.root
        self.depth_encoding = depth_encoding
        log.info("NYU: depth PNGs read as %s", describe_encoding(depth_encoding))
        if file_list is not None:
            entries = read_nyu_file_list(file_list)
        else:
            if not self.root.is_dir():
                raise FileNotFoundError(f"NYU folder not found: {self.root}")
            entries = [(rgb, depth, None) for rgb, depth in scan_nyu_folder(self.root)]
            if not entries:
                raise ValueError(
                    f"no NYU pairs found in {self.root} (looked for image_K.png+depth_K.png, rgb_K.jpg+sync_depth_K.png, "
                    "K_colors.png+K_depth.png); pass file_list for other names"
                )
        self.missing_gt = [rgb for rgb, depth, _ in entries if depth is None]
        if self.missing_gt:
            log.warning(
                "NYU: %d of %d listed frames have no depth (None) and are left out; see .missing_gt",
                len(self.missing_gt),
                len(entries),
            )
        self.items = [
            (self.root / rgb, self.depth_root / depth, f if f is not None else focal, str(Path(rgb).with_suffix("")))
            for rgb, depth, f in entries
            if depth is not None
        ]
        absent = [str(p) for rgb, depth, _, _ in self.items for p in (rgb, depth) if not p.is_file()]
        if absent:
            more = f" (and {len(absent) - 5} more)" if len(absent) > 5 else ""
            raise FileNotFoundError(f"{len(absent)} NYU file(s) not found, e.g. {absent[:5]}{more}")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        rgb, depth, focal, name = self.items[i]
        depth_HW = read_depth_png(depth, self.depth_encoding, known_range=("NYU Depth v2", NYU_MAX_DEPTH))
        return make_sample(read_rgb(rgb), depth_HW, focal, name)


_PGM_TOKEN = re.compile(rb"\s*(#[^\n]*\n\s*)*(\S+)")


def read_kinect_depth_pgm(path: str | Path, byteorder: Literal["little", "big"] = "little") -> np.ndarray:
    """A raw NYU Kinect depth dump (``P5 640 480 65535``) as ``(H, W)`` float32 metres, 0 = no measurement.

    Raw values are Kinect disparities (up to 2047 = no measurement); metres = 351.3 / (1092.5 - raw) (NYU
    toolbox ``depth_rel2depth_abs``, Open3D ``CreateFromNYUFormat``). The NYU dumps store the samples
    little-endian although Netpbm's maxval 65535 means big-endian, hence the default ``byteorder``.
    The raw frame is not registered to the RGB camera.
    """
    path = Path(path)
    data = path.read_bytes()
    tokens, pos = [], 0
    while len(tokens) < 4:  # magic, width, height, maxval; '#' comments allowed between tokens
        m = _PGM_TOKEN.match(data, pos)
        if m is None:
            raise ImageReadError(f"{path}: truncated PGM header")
        tokens.append(m.group(2))
        pos = m.end()
    pos += 1  # the single whitespace byte after maxval
    if tokens[0] != b"P5" or int(tokens[3]) != 65535:
        raise ImageReadError(f"{path}: expected a 16-bit binary PGM (P5, maxval 65535), got {tokens[0]!r} maxval {tokens[3]!r}")
    w, h = int(tokens[1]), int(tokens[2])
    if len(data) - pos < 2 * w * h:
        raise ImageReadError(f"{path}: {len(data) - pos} data bytes, a {w}x{h} 16-bit PGM needs {2 * w * h}")
    raw_HW = np.frombuffer(data, dtype="<u2" if byteorder == "little" else ">u2", count=w * h, offset=pos).reshape(h, w)
    if raw_HW.max() > 2047:
        raise ImageReadError(f"{path}: Kinect raw values exceed 2047 (max {raw_HW.max()}); wrong byteorder={byteorder!r}?")
    raw = raw_HW.astype(np.float32)
    valid = (raw_HW < 2047) & (raw < 1092.5)
    return np.where(valid, 351.3 / np.where(valid, 1092.5 - raw, 1.0), 0.0).astype(np.float32)
