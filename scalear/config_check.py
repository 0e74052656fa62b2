"""Checking a config dict against its dataclass before anything is built from it.

Every model config is a :class:`JSONConfig`, whose ``from_dict`` (the path of ``config.json`` in
:func:`scalear.io.from_pretrained` and of the YAML dicts the training modules receive) calls :func:`check_config`:
an unknown key, or a value whose type does not fit the field's annotation (a string where an int is expected), is a
:class:`~scalear.errors.UsageError` naming the key, instead of a ``TypeError`` deep inside a layer's constructor.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class C:
    ...     width: int = 8
    ...     dropout: float = 0.0
    >>> check_config(C, {"width": 16, "dropout": 1})
    >>> check_config(C, {"width": "16"}, "demo config")
    Traceback (most recent call last):
    ...
    scalear.errors.UsageError: demo config key 'width' must be an int, got '16'
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal, TypeVar, Union, get_args, get_origin

from scalear.errors import UsageError

_NAMES = {int: "an int", float: "a number", bool: "true or false", str: "a string", type(None): "null"}


def _fits(value: Any, tp: Any) -> bool:
    """Whether ``value`` fits the annotation ``tp``. Only values as read from JSON / YAML are judged: other objects
    (a ``ScaleSchedule`` given from Python) and annotations other than the plain types are left to the class."""
    if not isinstance(value, (bool, int, float, str, type(None), list, tuple, dict)):
        return True
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if origin is Literal:
        return value in args
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp in (str, type(None)):
        return isinstance(value, tp)
    if tp in (dict, Mapping) or origin in (dict, Mapping):
        return isinstance(value, Mapping)
    if tp in (tuple, list) or origin in (tuple, list, Sequence):
        if not isinstance(value, (tuple, list)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(_fits(v, a) for v, a in zip(value, args))
        return not args or all(_fits(v, args[0]) for v in value)
    return True


def _describe(tp: Any) -> str:
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if tp in (tuple, list) or origin in (tuple, list, Sequence):
        return f"a list of {_describe(args[0]).removeprefix('an ').removeprefix('a ')}s" if args else "a list"
    if tp in (dict, Mapping) or origin in (dict, Mapping):
        return "a mapping"
    return _NAMES.get(tp, getattr(tp, "__name__", str(tp)))


def check_config(cls: type, d: Mapping[str, Any], what: str = "") -> None:
    """Refuse keys of ``d`` that are not fields of the dataclass ``cls``, and values that do not fit their field's
    annotation (int, float, bool, str, ``Literal``, optional, lists / tuples of them, mappings); ``what`` names the
    config in the :class:`~scalear.errors.UsageError` (default: the class name)."""
    what = what or cls.__name__
    if not isinstance(d, Mapping):
        raise UsageError(f"{what} must be a mapping of keys to values, got {type(d).__name__}")
    fields = cls.__dataclass_fields__
    if unknown := sorted(set(d) - set(fields)):
        raise UsageError(f"unknown {what} keys {unknown}; allowed: {sorted(fields)}")
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # an annotation that cannot be resolved here: the types are left to the class
        hints = {}
    for key, value in d.items():
        if key in hints and not _fits(value, hints[key]):
            raise UsageError(f"{what} key {key!r} must be {_describe(hints[key])}, got {value!r}")


C = TypeVar("C", bound="JSONConfig")


class JSONConfig:
    """``to_dict`` / ``from_dict`` of a dataclass model config (what ``config.json`` holds).

    ``to_dict`` is a deep copy of the fields, JSON-able: tuples become lists, values with a ``to_dict`` (a
    :class:`~scalear.schedules.ScaleSchedule`) their dict. ``from_dict`` renames the keys of older files
    (:attr:`renamed`), checks the rest (:func:`check_config`, naming the config :attr:`label`) and builds
    the config from a deep copy."""

    #: keys renamed since files were written: old name -> new name
    renamed: ClassVar[Mapping[str, str]] = {}
    #: the config's name in error messages (default: the class name)
    label: ClassVar[str] = ""

    @classmethod
    def config_name(cls) -> str:
        return cls.label or cls.__name__

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.to_dict() if hasattr(v, "to_dict") else list(v) if isinstance(v, tuple) else v
        return copy.deepcopy(out)

    @classmethod
    def from_dict(cls: type[C], d: Mapping[str, Any]) -> C:
        d = renamed_keys(d, cls.renamed)
        check_config(cls, d, cls.config_name())
        return cls(**copy.deepcopy(d))

    def replace(self: C, **overrides: Any) -> C:
        """A copy with ``overrides`` applied (validated like :meth:`from_dict`)."""
        return with_overrides(self, overrides)


def with_overrides(config: Any, overrides: Mapping[str, Any]) -> Any:
    """``config`` (a dataclass with ``to_dict`` / ``from_dict``) with ``overrides`` applied and checked by its
    ``from_dict``; ``config`` itself when there are none."""
    return type(config).from_dict({**config.to_dict(), **overrides}) if overrides else config


def renamed_keys(d: Mapping[str, Any], renames: Mapping[str, str]) -> dict[str, Any]:
    """``d`` with the keys a config class renamed (``renames``: old name -> new name) under their new names, so that
    configs written before the rename (``config.json`` of an export) still load."""
    return {renames.get(k, k): v for k, v in d.items()}


__all__ = ["JSONConfig", "check_config", "renamed_keys", "with_overrides"]
