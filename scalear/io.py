"""Checkpoint I/O: weights as safetensors plus a JSON config, written atomically.

An exported model is a folder::

    model.safetensors   # weights (no pickle)
    config.json         # {"kind": "<registered kind>", "config": {...constructor config...}, "scalear": "<version>"}

``from_pretrained(folder)`` rebuilds the model from the config and loads the weights strictly. Kinds are
registered with :func:`register_model_kind`; the core registers ``vqvae`` and ``transformer``, domains add
their own. Anything that is not plain weights is read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import functools
import json
import math
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._device import DeviceContext

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
    run (input folders skip hidden files meanwhile). The folder is listed for such leftovers once per process, at
    its first write there, not at every write (a folder of thousands of outputs made each write list them all)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # the usual permissions, not mkstemp's 0600
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


@functools.cache
def _umask() -> int:
    """The process's umask (read once: reading it means setting it, which races with other threads' writes)."""
    umask = os.umask(0)
    os.umask(umask)
    return umask


#: folder -> {output name: temporaries of processes that no longer run}, listed at the first write into the folder
_STALE: dict[Path, dict[str, list[Path]]] = {}
_STALE_LOCK = threading.Lock()
_STALE_FOLDERS = 4096  #: folders remembered at most (a long-lived process may write into very many)
if hasattr(os, "register_at_fork"):  # a fork while another thread holds the lock must not leave the child stuck
    os.register_at_fork(after_in_child=lambda: globals().update(_STALE_LOCK=threading.Lock()))


def _remove_stale_temporaries(path: Path) -> None:
    """Remove ``.<name>.<pid>.<random>.tmp`` files of :func:`atomic_write` beside ``path`` whose process is gone
    (POSIX), from the folder's listing taken at this process's first write into it."""
    if os.name != "posix":
        return
    with _STALE_LOCK:
        if path.parent not in _STALE:
            while len(_STALE) >= _STALE_FOLDERS:  # forget the oldest folders (listed again at their next write)
                del _STALE[next(iter(_STALE))]
            _STALE[path.parent] = _list_stale_temporaries(path.parent)
        stale = _STALE[path.parent].pop(path.name, [])
    for tmp in stale:
        tmp.unlink(missing_ok=True)


def _list_stale_temporaries(folder: Path) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    with os.scandir(folder) as entries:
        for entry in entries:
            if not (entry.name.startswith(".") and entry.name.endswith(".tmp")):
                continue
            parts = entry.name[1:-4].rsplit(".", 2)  # name (may hold dots), pid, mkstemp's random part (no dots)
            if len(parts) == 3 and parts[1].isdigit() and not _process_runs(int(parts[1])):
                found.setdefault(parts[0], []).append(Path(entry.path))
    return found


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


#: elementwise arithmetic whose meta kernels are Python references (torch imports torch._dynamo, about a second,
#: the first time one runs): on meta tensors :class:`_MetaBuild` gives their result's shape and dtype directly
_ELEMENTWISE = frozenset(
    f for name in ("add", "sub", "mul", "div", "true_divide", "pow", "log", "log2", "log10", "log1p", "exp", "expm1",
                   "sqrt", "rsqrt", "neg", "abs", "sin", "cos", "tan", "tanh", "sigmoid", "reciprocal", "floor", "ceil",
                   "clamp", "clamp_min", "clamp_max", "maximum", "minimum", "where", "eq", "ne", "lt", "le", "gt", "ge",
                   "logical_and", "logical_or", "logical_not")
    for f in (getattr(torch, name, None), getattr(torch.Tensor, name, None)) if f is not None
) | frozenset(getattr(torch.Tensor, f"__{op}__") for op in (
    "add", "radd", "sub", "rsub", "mul", "rmul", "truediv", "rtruediv", "pow", "rpow", "neg", "eq", "ne", "lt", "le", "gt",
    "ge", "and", "or", "invert"))
_ELEMENTWISE_INPLACE = frozenset(getattr(torch.Tensor, f"{name}_") for name in (
    "add", "sub", "mul", "div", "pow", "log", "exp", "sqrt", "neg", "abs", "clamp", "clamp_min", "clamp_max"))
#: random initialisers: filling a meta tensor or a parameter that the weights file then overwrites is wasted work
_RANDOM_INIT = frozenset(
    [torch.Tensor.normal_, torch.Tensor.uniform_]
    + [getattr(torch.nn.init, name) for name in ("normal_", "uniform_", "trunc_normal_", "kaiming_normal_",
                                                 "kaiming_uniform_", "xavier_normal_", "xavier_uniform_", "orthogonal_",
                                                 "sparse_")]
)


def _first_tensor(args: tuple, kwargs: dict) -> Any:
    return args[0] if args else kwargs.get("tensor", kwargs.get("input"))


class _MetaBuild(DeviceContext):
    """``with torch.device("meta")`` for a skeleton, without torch's Python meta kernels (the first one to run
    imports torch._dynamo or sympy, about a second): on meta tensors, random initialisers and in-place arithmetic
    return their tensor, elementwise operations an empty tensor of the broadcast shape and of the dtype the same
    operation gives on zero-dimensional CPU tensors, ``arange`` / ``randn`` / ``rand`` an empty tensor of their size;
    anything else runs on the meta device as usual (slower, same result)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _RANDOM_INIT or func in _ELEMENTWISE or func in _ELEMENTWISE_INPLACE:
            tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
            if tensors and all(t.is_meta for t in tensors):
                if func in _RANDOM_INIT or func in _ELEMENTWISE_INPLACE:
                    return _first_tensor(args, kwargs)
                if (out := self._elementwise(func, args, kwargs, tensors)) is not None:
                    return out
        elif func in (torch.arange, torch.randn, torch.rand) and kwargs.get("device") is None:
            if (out := self._factory(func, args, kwargs)) is not None:
                return out
        return super().__torch_function__(func, types, args, kwargs)

    @staticmethod
    def _elementwise(func, args: tuple, kwargs: dict, tensors: list) -> torch.Tensor | None:
        def cpu(a: Any) -> Any:
            return torch.ones((), dtype=a.dtype, device="cpu") if isinstance(a, torch.Tensor) else a

        try:
            probe = func(*map(cpu, args), **{k: cpu(v) for k, v in kwargs.items()})
            shape = np.broadcast_shapes(*(tuple(t.shape) for t in tensors))  # (torch's imports sympy)
        except Exception:  # let torch raise its own error
            return None
        return torch.empty(shape, dtype=probe.dtype, device="meta") if isinstance(probe, torch.Tensor) else None

    @staticmethod
    def _factory(func, args: tuple, kwargs: dict) -> torch.Tensor | None:
        if func is torch.arange:
            if not (1 <= len(args) <= 3 and set(kwargs) <= {"dtype", "device", "requires_grad"}
                    and all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args)):
                return None
            start, end, step = (0, args[0], 1) if len(args) == 1 else (*args, 1)[:3]
            if step == 0:
                return None
            size: Any = (max(0, math.ceil((end - start) / step)),)
            dtype = kwargs.get("dtype") or (torch.int64 if all(isinstance(a, int) for a in args) else None)
        else:
            if not set(kwargs) <= {"dtype", "device", "requires_grad", "generator"}:
                return None
            size = args[0] if len(args) == 1 and isinstance(args[0], (tuple, list)) else args
            if not all(isinstance(n, int) and n >= 0 for n in size):
                return None
            dtype = kwargs.get("dtype")
        return torch.empty(size, dtype=dtype, device="meta", requires_grad=kwargs.get("requires_grad", False))


class _SkipParameterInit(TorchFunctionMode):
    """Random initialisers of parameters do nothing (:func:`from_pretrained` loads every parameter strictly next)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _RANDOM_INIT and isinstance(t := _first_tensor(args, kwargs), nn.Parameter):
            return t
        return func(*args, **kwargs)


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
        with _MetaBuild(torch.device("meta")):
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
    with _SkipParameterInit():  # every parameter is overwritten below
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
