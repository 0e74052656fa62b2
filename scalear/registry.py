"""One entry point to list and build every model of every installed domain, as timm's ``create_model``.

A model name is ``<kind>/<preset>``: ``vqvae/var-f16``, ``transformer/var-d16``, ``dar/base``, ``depthart/paper``,
``varformer/tiny``, ``sar3d_tokenizer/tiny``, ``g3pt_generator/tiny``, ... Each kind registers its presets and its
``create_<kind>(preset, **overrides)`` function with :func:`register_presets` (the core's at import of this module,
the domains' when their module is imported: :func:`list_models` imports them through the ``scalear.model_kinds``
entry points, so the core still never names a domain).

    >>> import scalear
    >>> "transformer/var-d16" in scalear.list_models()
    True
    >>> scalear.create_model("vqvae/tiny", in_channels=1).config.in_channels
    1
"""

from __future__ import annotations

import fnmatch
from typing import Any, Callable, Mapping

from torch import nn

#: kind -> (presets by name, create(preset_name, **overrides))
_PRESETS: dict[str, tuple[Mapping[str, Any], Callable[..., nn.Module]]] = {}


def register_presets(kind: str, presets: Mapping[str, Any], create: Callable[..., nn.Module]) -> None:
    """Make ``<kind>/<preset>`` for every key of ``presets`` buildable by :func:`create_model` through
    ``create(preset, **overrides)``. ``presets`` is read when listing, so presets added to it later appear too."""
    _PRESETS[kind] = (presets, create)


def _load_all() -> None:
    """Register the core's kinds and import every installed domain's model modules (entry points)."""
    from importlib.metadata import entry_points

    from scalear.transformer import TRANSFORMER_PRESETS, create_transformer
    from scalear.vqvae import VQVAE_PRESETS, create_vqvae

    register_presets("vqvae", VQVAE_PRESETS, create_vqvae)
    register_presets("transformer", TRANSFORMER_PRESETS, create_transformer)
    for ep in entry_points(group="scalear.model_kinds"):
        if ep.name not in _PRESETS:
            ep.load()


def list_models(pattern: str = "*") -> list[str]:
    """Every ``<kind>/<preset>`` name matching the shell-style ``pattern`` (``"depthart/*"``, ``"*/tiny"``), sorted."""
    _load_all()
    names = [f"{kind}/{preset}" for kind, (presets, _) in _PRESETS.items() for preset in presets]
    return sorted(fnmatch.filter(names, pattern))


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build model ``name`` (``<kind>/<preset>``, see :func:`list_models`) with keyword ``overrides`` of its config."""
    kind, sep, preset = name.partition("/")
    _load_all()
    if not sep or kind not in _PRESETS:
        raise KeyError(f"unknown model {name!r}: names are <kind>/<preset>, kinds {sorted(_PRESETS)}; "
                       "scalear.list_models() lists them all")
    presets, create = _PRESETS[kind]
    if preset not in presets:
        raise KeyError(f"unknown {kind} preset {preset!r}; available: {sorted(presets)}")
    return create(preset, **overrides)
