"""Restoring image files and scoring a model on degraded/clean pairs (the work behind ``scalear restore``).

:func:`restore_image` is the one prediction path: ``model.restore`` (whole or in tiles), and a grey input
(three equal channels) gives a grey output, the channel mean of the model's. :func:`restore_files` writes
``<out>/<stem>_restored.png`` per input (``<stem>``: :func:`scalear.cli_files.unique_stems`, which keeps the inputs'
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
from typing import TYPE_CHECKING, Iterable, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from scalear import cli_files
from scalear.errors import UsageError, is_out_of_memory
from scalear.datasets.depth.io import ImageReadError, png_bit_depth
from scalear.datasets.restoration.io import IMAGE_SUFFIXES, read_image_tensor, write_image
from scalear.domains.restoration.tiling import restore_tiled

if TYPE_CHECKING:
    from scalear.domains.restoration.metrics import RestorationEvaluator


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
    return cli_files.collect_inputs(spec, IMAGE_SUFFIXES)


def output_names(inputs: Sequence[Path]) -> list[str]:
    """``<stem>_restored.png`` per input, ``<stem>`` distinct for distinct inputs (:func:`scalear.cli_files.unique_stems`:
    ``a/2.png``, ``b/2.png`` -> ``a/2_restored.png``, ``b/2_restored.png``)."""
    return [f"{stem}_restored.png" for stem in cli_files.unique_stems(inputs)]


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


#: zlib level of 8-bit PNG outputs (a restored photo barely compresses further at higher levels, at several times
#: the time); pixels are the same at any level
PNG_COMPRESS_LEVEL = 1


def _write_output(path: Path, y_3HW: torch.Tensor, bits: int) -> Path:
    """:func:`~scalear.datasets.restoration.io.write_image`, with an 8-bit PNG encoded at :data:`PNG_COMPRESS_LEVEL`."""
    if bits != 8 or path.suffix.lower() != ".png":
        return write_image(path, y_3HW, bits)
    from PIL import Image

    from scalear.io import atomic_write

    x = y_3HW.detach().cpu().permute(1, 2, 0).numpy()
    image = Image.fromarray((np.clip(x, 0, 1) * 255.0).round().astype(np.uint8))  # as write_image quantises
    return atomic_write(path, lambda tmp: image.save(tmp, format="PNG", compress_level=PNG_COMPRESS_LEVEL))


def restore_files(model, inputs: Sequence[Path], out: Path, *, tile: int | None = None, overlap: int = 32,
                  bits: Literal["auto", 8, 16] = "auto", device: torch.device | str = "cpu",
                  progress: bool = True, batch_size: int = 1) -> RestoreReport:
    """Restore every input into ``out`` (module docstring); unreadable images are reported and skipped.

    The images of one size among ``batch_size`` consecutive inputs are restored as one batch (each output is its
    restoration alone up to float rounding of the batched arithmetic); worker threads read the next inputs and
    write the previous outputs while the model runs (:func:`scalear.cli_files.run_in_batches`)."""
    from tqdm import tqdm

    cli_files.check_output_folder(out, inputs)
    out.mkdir(parents=True, exist_ok=True)
    report = RestoreReport()

    def run(batch: list[tuple[tuple[Path, str], torch.Tensor]]) -> list[torch.Tensor]:
        same_size: dict[tuple[int, ...], list[int]] = {}
        for i, (_, x_3HW) in enumerate(batch):
            same_size.setdefault(tuple(x_3HW.shape), []).append(i)
        restored: dict[int, torch.Tensor] = {}
        for idx in same_size.values():
            x_B3HW = torch.stack([batch[i][1] for i in idx]).to(device)
            with torch.no_grad():
                try:
                    y_B3HW = restore_image(model, x_B3HW, tile, overlap).float().cpu()
                except UsageError as e:
                    more = f" (and {len(idx) - 1} more of its batch: try --batch-size 1)" if len(idx) > 1 else ""
                    raise UsageError(f"{batch[idx[0]][0][0]}{more}: {e}") from None
            restored.update(zip(idx, y_B3HW))
        return [restored[i] for i in range(len(batch))]

    def write(item: tuple[Path, str], x_3HW: torch.Tensor, y_3HW: torch.Tensor) -> tuple[Path, float]:
        path, name = item
        written = _write_output(out / name, y_3HW, _bits(path) if bits == "auto" else bits)
        ref = x_3HW if y_3HW.shape == x_3HW.shape else F.interpolate(x_3HW[None], y_3HW.shape[-2:], mode="bilinear",
                                                                       antialias=True)[0]  # a fixed-size model
        return written, (y_3HW - ref).pow(2).mean().sqrt().item() * 255

    items = list(zip(inputs, output_names(inputs)))
    with tqdm(total=len(items), desc="restore", unit="img", disable=not progress, file=sys.stderr) as bar:
        for (path, _), outcome in cli_files.run_in_batches(items, batch_size,
                                                       lambda item: read_image_tensor(item[0], exif_transpose=True),
                                                       run, write, skip=(ImageReadError, FileNotFoundError)):
            if isinstance(outcome, BaseException):
                report.failed[str(path)] = str(outcome)
                tqdm.write(f"skipped {path}: {outcome}", file=sys.stderr)
            else:
                report.written[str(path)], report.change[str(path)] = outcome
            bar.update()
    return report


@torch.no_grad()
def evaluate(model, data: Iterable[dict], *, tile: int | None = None, overlap: int = 32, crop_border: int = 0,
             device: torch.device | str = "cpu", progress: bool = True, total: int | None = None) -> RestorationEvaluator:
    """PSNR / SSIM (RGB and Y) per degradation of :func:`restore_image` on batches ``{"degraded", "clean",
    "degradation", "name"}``, with each image's gain over its degraded input (``worse`` when negative)."""
    from tqdm import tqdm

    from scalear.domains.restoration.metrics import RestorationEvaluator

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
