"""Shared file helpers for the depth datasets: RGB images, 16-bit depth PNGs, and the common sample dict.

Depth PNGs are single-channel 16-bit images whose integer value ``v`` encodes metres as ``v / scale``;
``0`` means "no measurement" in every format used here:

- ``"mm"``: NYU Depth v2 in BTS's ``sync_depth_*.png`` and DenseDepth's test layout, metres = v / 1000
  (BTS ``extract_official_train_test_set_from_mat.py`` writes ``depth * 1000`` as uint16).
- ``"kitti"``: KITTI's annotated depth (``proj_depth/groundtruth``), metres = v / 256 (KITTI devkit;
  monodepth2 ``export_gt_depth.py``: ``np.array(pil.open(p)).astype(np.float32) / 256``).

Every loader in :mod:`scalear.datasets.depth` yields the same sample dict (see :func:`make_sample`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator, Literal, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from scalear.io import atomic_write

log = logging.getLogger(__name__)

DepthEncoding = Literal["mm", "kitti"]
#: integer units per metre of each depth-PNG encoding
DEPTH_PNG_SCALE: dict[str, float] = {"mm": 1000.0, "kitti": 256.0}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: share of a frame's valid depths allowed beyond its dataset's farthest depth before the encoding is refused
OUT_OF_RANGE_SHARE = 0.01


def list_file_lines(path: str | Path) -> Iterator[tuple[str, str]]:
    """The non-blank lines of a split / pair list, stripped, each with its place ``"<path>:<line number>"``."""
    path = Path(path)
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line := line.strip():
            yield f"{path}:{n}", line


def list_line_focal(parts: Sequence[str], where: str) -> float | None:
    """The focal length in pixels a list line may give as its third field (BTS's lists), else None."""
    if len(parts) < 3:
        return None
    try:
        return float(parts[2])
    except ValueError:
        raise ValueError(f"{where}: focal length {parts[2]!r} is not a number") from None


class ImageReadError(ValueError):
    """An image or depth file that exists but cannot be decoded (corrupt, truncated, wrong kind)."""


def _depth_scale(encoding: DepthEncoding | float) -> float:
    if isinstance(encoding, str):
        if encoding not in DEPTH_PNG_SCALE:
            raise ValueError(f"unknown depth encoding {encoding!r}; expected one of {sorted(DEPTH_PNG_SCALE)} or a number")
        return DEPTH_PNG_SCALE[encoding]
    if not encoding > 0:
        raise ValueError(f"depth scale must be positive, got {encoding}")
    return float(encoding)


def _open_image(path: Path) -> Image.Image:
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        im = Image.open(path)
        im.load()  # decode now, so truncated files fail here and not later
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"cannot read image {path}: {e}") from e
    return im


def read_rgb(path: str | Path, exif_transpose: bool = False) -> np.ndarray:
    """Read a colour (or gray) 8-bit image as ``(H, W, 3)`` uint8 RGB.

    Raises ``FileNotFoundError`` for a missing file and :class:`ImageReadError` (naming the file) for a
    corrupt or unreadable one, or for a 16-bit / float image, which is almost surely a depth map.
    ``exif_transpose`` applies the EXIF orientation (for phone photos; dataset images carry none).
    """
    path = Path(path)
    im = _open_image(path)
    if im.mode in ("I", "F") or im.mode.startswith("I;16"):
        raise ImageReadError(f"expected an 8-bit colour image; {path} is mode {im.mode} — is this a depth map?")
    if exif_transpose:
        im = ImageOps.exif_transpose(im)
    return np.array(im if im.mode == "RGB" else im.convert("RGB"))  # a writable copy (convert() would add another)


def png_bit_depth(path: str | Path) -> tuple[int, int]:
    """``(bit depth, colour type)`` from a PNG's IHDR chunk (colour type 0 = gray, 2 = RGB, 4/6 = + alpha)."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(26)
    if len(head) < 26 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        raise ImageReadError(f"depth file {path} is not a PNG")
    return head[24], head[25]


def read_depth_png(path: str | Path, encoding: DepthEncoding | float,
                   known_range: tuple[str, float] | None = None) -> np.ndarray:
    """Read a single-channel 16-bit depth PNG as ``(H, W)`` float32 metres (0 = invalid).

    ``encoding`` is ``"mm"`` (v / 1000), ``"kitti"`` (v / 256) or a number of units per metre. An 8-bit or
    colour PNG is refused with an error naming the file, since reading it would silently give wrong metres.
    ``known_range = (dataset name, max metres)`` checks the decoded depths with :func:`check_depth_range`.
    """
    path = Path(path)
    scale = _depth_scale(encoding)
    if not path.is_file():
        raise FileNotFoundError(f"depth PNG not found: {path}")
    bits, color_type = png_bit_depth(path)
    im = _open_image(path)
    if bits != 16 or color_type != 0:
        kind = {0: "gray", 2: "RGB", 3: "palette", 4: "gray+alpha", 6: "RGBA"}.get(color_type, f"colour type {color_type}")
        raise ImageReadError(
            f"depth PNG must be 16-bit single-channel; {path} is {bits}-bit {kind} (mode {im.mode}) — wrong depth encoding?"
        )
    v_HW = np.asarray(im, dtype=np.uint16) if im.mode.startswith("I;16") else np.asarray(im).astype(np.uint16)
    depth_HW = v_HW.astype(np.float32) / np.float32(scale)
    if known_range is not None:
        check_depth_range(depth_HW, path, encoding, *known_range)
    return depth_HW


def describe_encoding(encoding: DepthEncoding | float) -> str:
    """``"'mm' (metres = v / 1000)"``, ``"'kitti' (metres = v / 256)"`` or ``"metres = v / <scale>"``."""
    scale = _depth_scale(encoding)
    return f"{encoding!r} (metres = v / {scale:g})" if isinstance(encoding, str) else f"metres = v / {scale:g}"


def check_depth_range(depth_HW: np.ndarray, path: str | Path, encoding: DepthEncoding | float, dataset: str,
                      max_depth: float) -> None:
    """Refuse a depth map decoded with the wrong encoding: an :class:`ImageReadError` naming the file, the
    encoding assumed and the one that would fit, when more than :data:`OUT_OF_RANGE_SHARE` of the valid depths
    lie beyond ``max_depth``, the farthest ``dataset`` holds (e.g. NYU's millimetre PNGs read as KITTI's
    v / 256 come out 3.9x too far: 2.8-25 m for rooms of 0.7-6.5 m). Too near cannot be told from a small room.
    """
    v = depth_HW[depth_HW > 0]
    if v.size == 0 or (v > max_depth).mean() <= OUT_OF_RANGE_SHARE:
        return
    scale = _depth_scale(encoding)
    fits = [f"as {describe_encoding(name)} they would span {v.min() * scale / s:.2f}..{v.max() * scale / s:.2f} m"
            for name, s in DEPTH_PNG_SCALE.items()
            if s != scale and (v * scale / s > max_depth).mean() <= OUT_OF_RANGE_SHARE]
    advice = f"; {fits[0]}: wrong depth encoding?" if fits else ": wrong depth encoding, or not a depth map of this dataset?"
    raise ImageReadError(f"{path}: read as {describe_encoding(encoding)} its depths span {v.min():.2f}..{v.max():.2f} m, "
                         f"{(v > max_depth).mean():.0%} of them beyond the {max_depth:g} m that {dataset} holds{advice}")


def encode_depth_png(depth_HW: np.ndarray, encoding: DepthEncoding | float) -> np.ndarray:
    """Metres -> uint16 PNG values: ``round(depth * scale)``; non-finite and <= 0 -> 0 (invalid).

    Depths beyond the encoding's range (65.535 m for ``"mm"``, 255.996 m for ``"kitti"``) saturate at 65535
    with a warning (monodepth2's ``np.uint16(depth * 256)`` would wrap around instead).
    """
    scale = _depth_scale(encoding)
    d = np.asarray(depth_HW, dtype=np.float64)
    if d.ndim != 2:
        raise ValueError(f"depth map must be (H, W), got shape {d.shape}")
    v = np.where(np.isfinite(d) & (d > 0), np.round(d * scale), 0.0)
    if (over := int((v > 65535).sum())) > 0:
        log.warning("%d depth values exceed %.3f m, the largest %s can store; saturated", over, 65535 / scale, encoding)
    return np.clip(v, 0, 65535).astype(np.uint16)


def write_depth_png(path: str | Path, depth_HW: np.ndarray, encoding: DepthEncoding | float) -> Path:
    """Write ``(H, W)`` metres as a 16-bit gray PNG (see :func:`encode_depth_png`), atomically."""
    v_HW = encode_depth_png(depth_HW, encoding)
    im = Image.fromarray(v_HW)  # uint16 -> mode I;16, saved as 16-bit gray
    return atomic_write(path, lambda tmp: im.save(tmp, format="PNG"))


def make_sample(image_HW3: np.ndarray, depth_HW: np.ndarray, focal: float, name: str) -> dict:
    """The sample dict shared by all depth loaders.

    ``image_HW3`` is uint8 RGB, ``depth_HW`` metres (non-finite or <= 0 -> 0). Returns ``{"image": (3, H, W)
    float32 in [0, 1], "depth": (1, H, W) float32 metres (0 = invalid), "valid": (1, H, W) bool (depth > 0),
    "focal": float (pixels), "name": str}``.
    """
    if image_HW3.dtype != np.uint8 or image_HW3.ndim != 3 or image_HW3.shape[2] != 3:
        raise ValueError(f"{name}: image must be (H, W, 3) uint8, got {image_HW3.shape} {image_HW3.dtype}")
    if image_HW3.shape[:2] != depth_HW.shape:
        raise ValueError(f"{name}: image is {image_HW3.shape[:2]} but depth is {depth_HW.shape}")
    image_3HW = torch.from_numpy(np.array(image_HW3, dtype=np.uint8, order="C")).permute(2, 0, 1).float().div_(255.0)
    depth = np.where(np.isfinite(depth_HW) & (depth_HW > 0), depth_HW, 0.0).astype(np.float32)
    depth_1HW = torch.from_numpy(depth)[None]
    return {"image": image_3HW, "depth": depth_1HW, "valid": depth_1HW > 0, "focal": float(focal), "name": name}
