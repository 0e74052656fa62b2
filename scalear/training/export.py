"""Export a Lightning checkpoint of any :class:`~scalear.training.base.ScalearModule` as safetensors."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

from scalear.errors import UsageError
from scalear.io import load_torch_file


def module_class(checkpoint: dict, path: str | Path) -> type:
    """The :class:`~scalear.training.base.ScalearModule` subclass a checkpoint names in ``scalear_module``. Only a
    class inside the ``scalear`` package is imported: a checkpoint never makes scalear import other code."""
    from scalear.training.base import ScalearModule

    name = checkpoint.get("scalear_module") if isinstance(checkpoint, dict) else None
    if not name:
        raise UsageError(f"{path} was not written by a scalear LightningModule (no 'scalear_module' entry)")
    if not (isinstance(name, str) and re.fullmatch(r"scalear(\.[A-Za-z_]\w*)+", name)):
        raise UsageError(f"{path}: its 'scalear_module' {name!r} is not a class of the scalear package; not importing it")
    mod, _, cls_name = name.rpartition(".")
    try:
        cls = getattr(importlib.import_module(mod), cls_name)
    except (ImportError, AttributeError):
        raise UsageError(f"{path}: its 'scalear_module' {name!r} is no class of the installed scalear") from None
    if not (isinstance(cls, type) and issubclass(cls, ScalearModule)):
        raise UsageError(f"{path}: its 'scalear_module' {name!r} is not a ScalearModule")
    return cls


def export_checkpoint(ckpt_path: str | Path, out_dir: str | Path) -> Path:
    """Rebuild the module of ``ckpt_path`` (``weights_only=True``) and write its models into ``out_dir``."""
    ckpt = load_torch_file(ckpt_path)
    cls = module_class(ckpt, ckpt_path)
    module = cls.load_from_checkpoint(str(ckpt_path), map_location="cpu", weights_only=True)
    return module.export(out_dir)
