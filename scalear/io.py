"""Checkpoint I/O: weights as safetensors plus a JSON config, written atomically.

An exported model is a folder::

    model.safetensors   # weights (no pickle)
    config.json         # {"kind": "<registered kind>", "config": {...constructor config...}, "scalear": "<version>"}

``from_pretrained(folder)`` rebuilds the model from the config and loads the weights strictly. Kinds are
registered with :func:`register_model_kind`; the core registers ``vqvae`` and ``transformer``, domains add
their own. Anything that is not plain weights is read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import glob
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from scalear.errors import UsageError

#: kind -> (builder from config dict, config of a model as a JSON-able dict)
_KINDS: dict[str, tuple[Callable[[dict], nn.Module], Callable[[nn.Module], dict]]] = {}


#: kind -> {old weight-name prefix: new prefix}, for files written before an attribute was renamed
_RENAMED_WEIGHTS: dict[str, dict[str, str]] = {}


def register_model_kind(kind: str, build: Callable[[dict], nn.Module], get_config: Callable[[nn.Module], dict],
                        renamed_weights: dict[str, str] | None = None) -> None:
    """Teach :func:`save_pretrained` / :func:`from_pretrained` a model kind; ``renamed_weights`` maps the old
    prefixes of weight names this kind's files may still use to the new ones."""
    _KINDS[kind] = (build, get_config)
    _RENAMED_WEIGHTS[kind] = dict(renamed_weights or {})


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
    """Call ``write(tmp_path)`` then move the file into place, so a crash never leaves a half-written file.

    The temporary file is hidden beside ``path`` (``.<name>.<pid>.<random>.tmp``) and removed on any exception or
    KeyboardInterrupt (and on SIGTERM in the ``scalear`` command, which turns it into an exit). A process killed
    with SIGKILL cannot remove it: the next write of ``path`` removes the leftovers of processes that no longer
    run (input folders skip hidden files meanwhile)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
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


def _remove_stale_temporaries(path: Path) -> None:
    """Remove ``.<name>.<pid>.*.tmp`` files of :func:`atomic_write` beside ``path`` whose process is gone (POSIX)."""
    if os.name != "posix":
        return
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = tmp.name[len(path.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and not _process_runs(int(pid)):
            tmp.unlink(missing_ok=True)


def _process_runs(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


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
    """The ``config.json`` of an exported model folder, checked to be ``{"kind": str, "config": {...}, ...}``."""
    cfg_path = Path(folder) / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path} not found: an exported scalear model folder has config.json and model.safetensors")
    try:
        meta = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{cfg_path} is not valid JSON: {e}") from None
    if not (isinstance(meta, dict) and isinstance(meta.get("kind"), str) and isinstance(meta.get("config"), dict)):
        raise UsageError(f'{cfg_path} is not a scalear model config: expected {{"kind": "<name>", "config": {{...}}}}')
    return meta


def _load_kind_plugin(kind: str) -> None:
    """Import the module that registers ``kind``, named in the ``scalear.model_kinds`` entry-point group
    (``dar = "scalear.domains.depth.dar"``), so domains' models load without the core importing a domain."""
    from importlib.metadata import entry_points

    for ep in entry_points(group="scalear.model_kinds"):
        if ep.name == kind:
            ep.load()


def available_memory(device: str | torch.device = "cpu") -> int:
    """Bytes that can still be allocated on ``device``: a CUDA device's free memory; else the RAM available to
    this process (Linux ``MemAvailable``, capped by a cgroup v2 memory limit; else the physical memory)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemAvailable:"))
        free = kb * 1024
    except (OSError, StopIteration, ValueError):
        free = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        cg = Path("/sys/fs/cgroup")
        limit = (cg / "memory.max").read_text().strip()
        if limit != "max":
            free = min(free, int(limit) - int((cg / "memory.current").read_text()))
    except (OSError, ValueError):
        pass
    return free


def _check_memory(skeleton: nn.Module, device: torch.device, cfg_path: Path) -> None:
    """Refuse a model (built on the meta device) that cannot be loaded onto ``device``: building it and reading
    its weights take twice its size on ``device`` (the model on the CPU first when ``device`` is a GPU)."""
    n = sum(t.numel() for t in skeleton.parameters())
    size = sum(t.numel() * t.element_size() for t in (*skeleton.parameters(), *skeleton.buffers()))
    needs = {torch.device("cpu"): size} if device.type != "cpu" else {}
    needs[device] = needs.get(device, 0) + 2 * size
    for dev, need in needs.items():
        if need > (free := available_memory(dev)):
            raise UsageError(f"{cfg_path}: this {n / 1e6:,.1f}M-parameter model needs about {need / 2**30:,.2f} GiB "
                             f"on {dev.type} to load, more than the {max(free, 0) / 2**30:,.2f} GiB available; "
                             "refusing to build it")


def _weight_shapes(weights: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape of a safetensors file, from its header (nothing is loaded)."""
    from safetensors import safe_open

    try:
        with safe_open(str(weights), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise ValueError(f"{weights} is not a readable safetensors file: {e}") from None


class _MoreTensorsThanTheFile(Exception):
    pass


def _build_on_meta(build: Callable[[dict], nn.Module], config: dict, max_parameters: int) -> nn.Module:
    """``build(config)`` on the meta device (no memory), stopped as soon as it registers more than
    ``max_parameters`` parameters (a config far larger than its weights file builds no further)."""
    count = 0

    def guard(module: nn.Module, name: str, param: Any) -> None:
        nonlocal count
        count += 1
        if count > max_parameters:
            raise _MoreTensorsThanTheFile

    handle = torch.nn.modules.module.register_module_parameter_registration_hook(guard)
    try:
        with torch.device("meta"):
            return build(config)
    finally:
        handle.remove()


def from_pretrained(folder: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild an exported model from ``folder`` and load its weights strictly.

    An untrusted folder is contained: before anything is allocated the model is built on the ``meta`` device,
    which checks the config (keys and value types, by the kind's ``from_dict``); a model that would not fit in the
    memory of ``map_location`` (:func:`available_memory`) or whose tensors differ from the weights file's header is
    refused, with a :class:`~scalear.errors.UsageError` or ``ValueError`` naming the file."""
    _ensure_core_kinds()
    folder = Path(folder)
    cfg_path, weights = folder / "config.json", folder / "model.safetensors"
    meta = read_config(folder)
    kind = meta["kind"]
    if kind not in _KINDS:
        _load_kind_plugin(kind)
    if kind not in _KINDS:
        raise UsageError(f"{cfg_path}: unknown model kind {kind!r}; known: {sorted(_KINDS)}")
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} not found")
    build = _KINDS[kind][0]
    shapes = _renamed(_weight_shapes(weights), kind)
    try:
        skeleton = _build_on_meta(build, meta["config"], max_parameters=2 * len(shapes) + 64)  # slack: re-registered
    except _MoreTensorsThanTheFile:
        raise ValueError(f"{weights} does not match its config.json: the config describes far more than the "
                         f"{len(shapes)} tensors the file holds") from None
    except (TypeError, ValueError, KeyError) as e:
        raise UsageError(f"{cfg_path}: not a valid {kind} config: {e}") from None
    _check_memory(skeleton, torch.device(map_location), cfg_path)
    own = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    missing, unexpected = sorted(set(own) - set(shapes)), sorted(set(shapes) - set(own))
    bad = sorted(k for k in set(own) & set(shapes) if own[k] != shapes[k])
    if missing or unexpected or bad:
        raise ValueError(f"{weights} does not match its config.json: missing keys {missing[:8]}, unexpected keys "
                         f"{unexpected[:8]}, shape mismatches {bad[:8]}")
    model = build(meta["config"])
    try:
        state = load_file(str(weights), device=str(map_location))
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise ValueError(f"{weights} is not a readable safetensors file: {e}") from None
    model.load_state_dict(_renamed(state, kind))
    return model.to(map_location)


def _renamed(state: dict[str, Any], kind: str) -> dict[str, Any]:
    """``state`` with the weight names ``kind`` renamed since its files were written under their new names."""
    renames = _RENAMED_WEIGHTS.get(kind, {})
    return {next((new + k[len(old):] for old, new in renames.items() if k.startswith(old)), k): v
            for k, v in state.items()}


def load_torch_file(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(weights_only=True)`` with an error that names the file."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{path} is a folder, not a checkpoint file")
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # one line: torch's weights-only refusal is a paragraph advising weights_only=False
        lines = [line for line in str(e).splitlines() if line.strip()] or [""]
        refused = lines[0].startswith("Weights only load failed") and len(lines) > 1
        why = lines[1] if refused else f"{type(e).__name__}: {lines[0]}"
        raise ValueError(f"{path} could not be read as a PyTorch checkpoint of plain weights (weights_only=True): {why}") from None
