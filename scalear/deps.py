"""Optional dependencies of the 3D data (the ``[3d]`` extra), imported in one place each with an install hint."""

from __future__ import annotations

from types import ModuleType

INSTALL_3D = ("pip install 'scalear[3d]' (open3d-cpu on x86-64 Linux, open3d elsewhere, libigl, manifold3d); on "
              "Debian / Ubuntu open3d also needs the system library: apt-get install libusb-1.0-0")


def _import(name: str, what: str) -> ModuleType:
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as e:
        cause = "the system library libusb-1.0 is missing" if "libusb" in str(e) else f"{what} is not installed"
        raise ImportError(f"{cause} ({e}); {INSTALL_3D}") from e


def open3d() -> ModuleType:
    """``open3d`` (ray casting, point-cloud files, renders): the mesh and point-cloud data and the procedural RGB-D
    scenes (the depth domain's built-in data) need it."""
    return _import("open3d", "open3d")


def igl() -> ModuleType:
    """libigl's ``igl`` (generalized winding numbers: inside / outside of meshes)."""
    return _import("igl", "libigl")


def status_3d() -> str:
    """One line for ``scalear info``: the versions of the 3D dependencies, or why one cannot be imported."""
    parts = []
    for name, load in (("open3d", open3d), ("libigl", igl)):
        try:
            parts.append(f"{name} {getattr(load(), '__version__', 'installed')}")
        except ImportError as e:
            parts.append(f"{name} unavailable: {e}")
    return "; ".join(parts)
