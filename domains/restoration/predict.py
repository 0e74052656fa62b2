"""Restoring image files and scoring a model on degraded/clean pairs (the work behind ``scalear restore``).

:func:`restore_image` is the one prediction path: ``model.restore`` (whole or in tiles), and a grey input
(three equal channels) gives a grey output, the channel mean of the model's. :func:`restore_files` writes
``<out>/<stem>_restored.png`` per input (``<stem>``: :func:`scalear.files.unique_stems`, which keeps the inputs'
sub-folders below their common folder; atomically; 16-bit when the input is a 16-bit PNG, else 8-bit; grey
inputs come back as RGB with equal channels), never into a folder that holds an input, and records how much
the model changed each image (with no reference it cannot know whether for the better). An unreadable input is
reported by name and skipped; the others are still written. :func:`evaluate` scores the restorations and the
inputs against the clean images, so that images made worse are reported.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Literal, Sequence

import torch
import torch.nn.functional as F

from scalear import files
from scalear.errors import UsageError, is_out_of_memory
from scalear.datasets.depth.io import ImageReadError, png_bit_depth
from scalear.datasets.restoration.io import IMAGE_SUFFIXES, read_image_tensor, write_image
from scalear.domains.restoration.metrics import RestorationEvaluator
from scalear.domains.restoration.tiling import restore_tiled


class IdentityRestorer:
    """The do-nothing baseline (``--model identity``): scores the degraded inputs themselves."""

    def restore(self, image_B3HW: torch.Tensor) -> torch.Tensor:
        return image_B3HW.clamp(0, 1)

    def to(self, device) -> "IdentityRestorer":
        return self

    def eval(self) -> "IdentityRestorer":
        return self


def load_restorer(spec: str | Path, device: torch.device | str = "cpu", vae: str | Path | None = None,
                  var: str | Path | None = None, size: int | str = "input"):
    """An exported model folder with a ``restore`` method (Varformer), ``identity``, or the released Varformer's
    files (a ``net_g`` ``.pth`` or a folder holding it; ``vae`` / ``var``: VAR's files, default beside it), whose
    outputs are at the input's size (``size="input"``) or 256x256 as the official test writes (``size=256``).
    A file that does not fit is a ValueError naming it and its first offending key."""
    from scalear.domains.restoration.varformer_checkpoints import is_official_checkpoint, load_official_varformer
    from scalear.var_checkpoints import CheckpointMismatchError

    if str(spec) != "identity" and is_official_checkpoint(spec):
        try:
            model = load_official_varformer(spec, vae, var, device)
        except CheckpointMismatchError as e:
            raise ValueError(str(e)) from None
        model.size = size
        return model
    if vae is not None or var is not None or size != "input":
        raise ValueError(f"{spec}: VAR files and an output size apply to the released Varformer's files only")
    if str(spec) == "identity":
        return IdentityRestorer()
    from scalear.io import from_pretrained

    model = from_pretrained(spec, map_location=device)
    if not callable(getattr(model, "restore", None)):
        raise ValueError(f"{spec}: a {type(model).__name__} cannot restore images (expected e.g. an exported Varformer)")
    return model.eval()


def is_grey(image_B3HW: torch.Tensor) -> torch.Tensor:
    """``(B,)`` bool: which images have three exactly equal channels."""
    x = image_B3HW.flatten(2)
    return ((x[:, 0] == x[:, 1]) & (x[:, 1] == x[:, 2])).all(1)


def restore_image(model, image_B3HW: torch.Tensor, tile: int | None = None, overlap: int = 32) -> torch.Tensor:
    """``model.restore`` of a batch in ``[0, 1]``, whole (``tile`` None) or in blended tiles; images whose
    channels are equal come back with equal channels (the mean of the model's three). An image too large to
    restore whole in the memory there is is a :class:`~scalear.errors.UsageError` suggesting ``--tile``."""
    try:
        out = restore_tiled(model, image_B3HW, tile, overlap)
    except (RuntimeError, MemoryError) as e:
        if tile is not None or not is_out_of_memory(e):
            raise
        H, W = image_B3HW.shape[-2:]
        raise UsageError(f"a {H}x{W} image does not fit in memory when restored whole ({str(e).splitlines()[0][:120]}); "
                         "restore it in tiles, e.g. --tile 512") from None
    grey = is_grey(image_B3HW)
    if grey.any():
        mean = out.double().mean(1, keepdim=True).to(out.dtype)  # exact where the channels already agree
        out = torch.where(grey.view(-1, 1, 1, 1), mean.expand_as(out), out)
    return out


def collect_inputs(spec: str | Path) -> list[Path]:
    """Image files of a file, a folder (its image files, not recursive, hidden ones skipped) or a glob."""
    return files.collect_inputs(spec, IMAGE_SUFFIXES)


def output_names(inputs: Sequence[Path]) -> list[str]:
    """``<stem>_restored.png`` per input, ``<stem>`` distinct for distinct inputs (:func:`scalear.files.unique_stems`:
    ``a/2.png``, ``b/2.png`` -> ``a/2_restored.png``, ``b/2_restored.png``)."""
    return [f"{stem}_restored.png" for stem in files.unique_stems(inputs)]


def _bits(path: Path) -> int:
    if path.suffix.lower() != ".png":
        return 8
    try:
        return 16 if png_bit_depth(path)[0] == 16 else 8
    except ImageReadError:
        return 8


@dataclass
class RestoreReport:
    """What :func:`restore_files` did: the output per input, the skipped inputs with the reason, and per written
    input the RMS change the model made, in 8-bit levels (0: left as it was)."""

    written: dict[str, Path] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    change: dict[str, float] = field(default_factory=dict)


def restore_files(model, inputs: Sequence[Path], out: Path, *, tile: int | None = None, overlap: int = 32,
                  bits: Literal["auto", 8, 16] = "auto", device: torch.device | str = "cpu",
                  progress: bool = True) -> RestoreReport:
    """Restore every input into ``out`` (module docstring); unreadable images are reported and skipped."""
    from tqdm import tqdm

    files.check_output_folder(out, inputs)
    out.mkdir(parents=True, exist_ok=True)
    report = RestoreReport()
    bar = tqdm(list(zip(inputs, output_names(inputs))), desc="restore", unit="img", disable=not progress, file=sys.stderr)
    for path, name in bar:
        try:
            x_3HW = read_image_tensor(path, exif_transpose=True)
        except (ImageReadError, FileNotFoundError) as e:
            report.failed[str(path)] = str(e)
            tqdm.write(f"skipped {path}: {e}", file=sys.stderr)
            continue
        with torch.no_grad():
            try:
                y_3HW = restore_image(model, x_3HW[None].to(device), tile, overlap)[0].float().cpu()
            except UsageError as e:
                raise UsageError(f"{path}: {e}") from None
        report.written[str(path)] = write_image(out / name, y_3HW, _bits(path) if bits == "auto" else bits)
        ref = x_3HW if y_3HW.shape == x_3HW.shape else F.interpolate(x_3HW[None], y_3HW.shape[-2:], mode="bilinear",
                                                                       antialias=True)[0]  # a fixed-size model
        report.change[str(path)] = (y_3HW - ref).pow(2).mean().sqrt().item() * 255
    return report


@torch.no_grad()
def evaluate(model, data: Iterable[dict], *, tile: int | None = None, overlap: int = 32, crop_border: int = 0,
             device: torch.device | str = "cpu", progress: bool = True, total: int | None = None) -> RestorationEvaluator:
    """PSNR / SSIM (RGB and Y) per degradation of :func:`restore_image` on batches ``{"degraded", "clean",
    "degradation", "name"}``, with each image's gain over its degraded input (``worse`` when negative)."""
    from tqdm import tqdm

    ev = RestorationEvaluator(crop_border=crop_border)
    for batch in tqdm(data, desc="eval", unit="batch", total=total, disable=not progress, file=sys.stderr):
        pred = restore_image(model, batch["degraded"].to(device), tile, overlap).float().cpu()
        labels, names = batch["degradation"], batch.get("name")
        ev.update(pred, batch["clean"].float(), labels if isinstance(labels, str) else list(labels),
                  None if names is None else ([names] if isinstance(names, str) else list(names)),
                  degraded_B3HW=batch["degraded"].float().clamp(0, 1))
    return ev


__all__ = ["IdentityRestorer", "load_restorer", "is_grey", "restore_image", "collect_inputs", "output_names",
           "RestoreReport", "restore_files", "evaluate"]
