"""Checkpoint I/O: weights as safetensors plus a JSON config, written atomically.

An exported model is a folder::

    model.safetensors   # weights (no pickle)
    config.json         # {"kind": "<registered kind>", "config": {...constructor config...}, "scalear": "<version>"}

``from_pretrained(folder)`` rebuilds the model from the config and loads the weights strictly. Kinds are
registered with :func:`register_model_kind`; the core registers ``vqvae`` and ``transformer``, domains add
their own. Anything that is not plain weights is read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file, save_file
from torch import nn

#: kind -> (builder from config dict, config of a model as a JSON-able dict)
_KINDS: dict[str, tuple[Callable[[dict], nn.Module], Callable[[nn.Module], dict]]] = {}


def register_model_kind(kind: str, build: Callable[[dict], nn.Module], get_config: Callable[[nn.Module], dict]) -> None:
    """Teach :func:`save_pretrained` / :func:`from_pretrained` a model kind."""
    _KINDS[kind] = (build, get_config)


def _ensure_core_kinds() -> None:
    if "transformer" not in _KINDS:
        from scalear.transformer import NextScaleTransformer, TransformerConfig

        register_model_kind(
            "transformer", lambda d: NextScaleTransformer(TransformerConfig.from_dict(d)), lambda m: m.cfg.to_dict()
        )
    if "vqvae" not in _KINDS:
        from scalear.vqvae import VQVAE, VQVAEConfig

        register_model_kind("vqvae", lambda d: VQVAE(VQVAEConfig.from_dict(d)), lambda m: m.config.to_dict())


def atomic_write(path: str | Path, write: Callable[[str], Any]) -> Path:
    """Call ``write(tmp_path)`` then move the file into place, so a crash never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # the usual permissions, not mkstemp's 0600
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def model_kind(model: nn.Module) -> str:
    """The registered kind of ``model`` (its class attribute ``scalear_kind``)."""
    _ensure_core_kinds()
    kind = getattr(model, "scalear_kind", None)
    if kind not in _KINDS:
        raise ValueError(f"don't know how to export a {type(model).__name__}; register it with register_model_kind")
    return kind


def save_pretrained(model: nn.Module, folder: str | Path, kind: str | None = None, extra: dict | None = None) -> Path:
    """Write ``model.safetensors`` and ``config.json`` into ``folder`` (atomically, file by file)."""
    _ensure_core_kinds()
    kind = kind or model_kind(model)
    folder = Path(folder)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(folder / "model.safetensors", lambda p: save_file(state, p))
    from scalear import __version__

    meta = {"kind": kind, "config": _KINDS[kind][1](model), "scalear": __version__, **(extra or {})}
    atomic_write(folder / "config.json", lambda p: Path(p).write_text(json.dumps(meta, indent=2)))
    return folder


def read_config(folder: str | Path) -> dict:
    cfg_path = Path(folder) / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path} not found: an exported scalear model folder has config.json and model.safetensors")
    try:
        return json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{cfg_path} is not valid JSON: {e}") from None


def _load_kind_plugin(kind: str) -> None:
    """Import the module that registers ``kind``, named in the ``scalear.model_kinds`` entry-point group
    (``dar = "scalear.domains.depth.dar"``), so domains' models load without the core importing a domain."""
    from importlib.metadata import entry_points

    for ep in entry_points(group="scalear.model_kinds"):
        if ep.name == kind:
            ep.load()


def from_pretrained(folder: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild an exported model from ``folder`` and load its weights strictly."""
    _ensure_core_kinds()
    folder = Path(folder)
    meta = read_config(folder)
    kind = meta.get("kind")
    if kind not in _KINDS and isinstance(kind, str):
        _load_kind_plugin(kind)
    if kind not in _KINDS:
        raise ValueError(f"{folder / 'config.json'}: unknown model kind {kind!r}; known: {sorted(_KINDS)}")
    model = _KINDS[kind][0](meta["config"])
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} not found")
    try:
        state = load_file(str(weights), device=str(map_location))
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise ValueError(f"{weights} is not a readable safetensors file: {e}") from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{weights} does not match its config.json: missing keys {missing[:8]}, unexpected keys {unexpected[:8]}")
    return model.to(map_location)


def load_torch_file(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(weights_only=True)`` with an error that names the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise ValueError(f"{path} could not be read as a PyTorch checkpoint (weights_only=True): {e}") from None
