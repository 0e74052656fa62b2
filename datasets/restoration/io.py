"""Reading and writing photos for restoration: 8- and 16-bit PNG, JPEG, TIFF, grey or RGB, as RGB floats.

8-bit files and 16-bit grey TIFFs are decoded by Pillow; 16-bit PNGs (which Pillow truncates to 8 bits when
they are RGB) and the 16-bit TIFFs Pillow cannot open by kornia-rs (``kornia.io.load_image``). Grey becomes
three equal channels, alpha is dropped, palette images are expanded. A missing file raises
``FileNotFoundError``; a corrupt or unsupported one :class:`ImageReadError` naming the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from scalear.datasets.depth.io import ImageReadError, png_bit_depth
from scalear.io import atomic_write

#: file suffixes treated as images when scanning folders
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")


def _is_16bit_png(path: Path) -> bool:
    try:
        return png_bit_depth(path)[0] == 16
    except ImageReadError:  # not a PNG (whatever its suffix): Pillow decides
        return False


def _read_kornia(path: Path) -> np.ndarray:
    from kornia.io import ImageLoadType, load_image  # here: kornia takes a fifth of a second to import

    try:
        x_CHW = load_image(path, ImageLoadType.UNCHANGED)
    except (ValueError, OSError) as e:
        raise ImageReadError(f"cannot read image {path}: {e}") from e
    return x_CHW.permute(1, 2, 0).numpy()


def _read_pil(path: Path, exif_transpose: bool) -> np.ndarray:
    try:
        im = Image.open(path)
        im.load()  # decode now, so that a truncated file fails here
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        if path.suffix.lower() in (".tif", ".tiff"):  # e.g. 16-bit RGB TIFF
            return _read_kornia(path)
        raise ImageReadError(f"cannot read image {path}: {e}") from e
    if exif_transpose:
        im = ImageOps.exif_transpose(im)
    if im.mode.startswith("I;16"):
        return np.asarray(im, dtype=np.uint16)
    if im.mode == "I":
        v = np.asarray(im)
        if v.min() < 0 or v.max() > 65535:
            raise ImageReadError(f"{path}: 32-bit integer image with values outside 0-65535; expected 8 or 16 bits")
        return v.astype(np.uint16)
    if im.mode == "F":
        raise ImageReadError(f"{path}: floating-point image (mode F); expected an 8- or 16-bit photo")
    return np.asarray(im if im.mode == "RGB" else im.convert("RGB"))  # one copy: convert() would add another


def read_image(path: str | Path, exif_transpose: bool = False) -> np.ndarray:
    """``(H, W, 3)`` float32 RGB in ``[0, 1]`` from an 8-bit (``/ 255``) or 16-bit (``/ 65535``) image file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    v = _read_kornia(path) if path.suffix.lower() == ".png" and _is_16bit_png(path) else _read_pil(path, exif_transpose)
    if v.dtype not in (np.uint8, np.uint16):
        raise ImageReadError(f"{path}: {v.dtype} samples; expected 8- or 16-bit integers")
    if v.ndim == 2:
        v = v[..., None]
    if v.ndim != 3 or v.shape[2] not in (1, 2, 3, 4):
        raise ImageReadError(f"{path}: unsupported image layout {v.shape}")
    v = v[..., :1] if v.shape[2] in (1, 2) else v[..., :3]  # drop alpha
    x = v.astype(np.float32) / np.float32(255.0 if v.dtype == np.uint8 else 65535.0)
    return np.repeat(x, 3, axis=2) if x.shape[2] == 1 else x


def read_image_tensor(path: str | Path, exif_transpose: bool = False) -> torch.Tensor:
    """:func:`read_image` as a ``(3, H, W)`` float32 tensor."""
    return torch.from_numpy(read_image(path, exif_transpose)).permute(2, 0, 1).contiguous()


def write_image(path: str | Path, x_3HW: torch.Tensor | np.ndarray, bits: int = 8) -> Path:
    """Write RGB in ``[0, 1]`` (``(3, H, W)`` tensor or ``(H, W, 3)`` array) atomically: 8-bit PNG/JPEG/TIFF by
    suffix through Pillow, or a 16-bit PNG (``bits=16``, ``.png`` only) through kornia-rs."""
    path = Path(path)
    x = x_3HW.detach().cpu().permute(1, 2, 0).numpy() if isinstance(x_3HW, torch.Tensor) else np.asarray(x_3HW)
    if x.ndim != 3 or x.shape[2] != 3:
        raise ValueError(f"{path}: expected an RGB image (3, H, W) / (H, W, 3), got shape {x.shape}")
    suffix = path.suffix.lower()
    if bits == 16:
        if suffix != ".png":
            raise ValueError(f"{path}: 16-bit output is written as PNG only")
        import kornia_rs

        v16 = np.ascontiguousarray((np.clip(x, 0, 1) * 65535.0).round().astype(np.uint16))
        return atomic_write(path, lambda tmp: kornia_rs.io.write_image_png_u16(tmp, v16, "rgb"))
    if bits != 8:
        raise ValueError(f"bits must be 8 or 16, got {bits}")
    fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP"}.get(suffix)
    if fmt is None:
        raise ValueError(f"{path}: unsupported output suffix; use .png, .jpg, .tif or .bmp")
    im = Image.fromarray((np.clip(x, 0, 1) * 255.0).round().astype(np.uint8))
    return atomic_write(path, lambda tmp: im.save(tmp, format=fmt, **({"quality": 95} if fmt == "JPEG" else {})))
