"""Export a Lightning checkpoint of any :class:`~scalear.training.base.ScalearModule` as safetensors."""

from __future__ import annotations

import importlib
from pathlib import Path

from scalear.io import load_torch_file


def module_class(checkpoint: dict, path: str | Path):
    name = checkpoint.get("scalear_module")
    if not name:
        raise ValueError(f"{path} was not written by a scalear LightningModule (no 'scalear_module' entry)")
    mod, _, cls = name.rpartition(".")
    return getattr(importlib.import_module(mod), cls)


def export_checkpoint(ckpt_path: str | Path, out_dir: str | Path) -> Path:
    """Rebuild the module of ``ckpt_path`` (``weights_only=True``) and write its models into ``out_dir``."""
    ckpt = load_torch_file(ckpt_path)
    cls = module_class(ckpt, ckpt_path)
    module = cls.load_from_checkpoint(str(ckpt_path), map_location="cpu", weights_only=True)
    return module.export(out_dir)
