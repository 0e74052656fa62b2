"""Mesh files: load OBJ / PLY / OFF / STL / GLB with trimesh, refuse broken ones, repair what can be, normalise.

:func:`load_mesh` returns a single triangle mesh with seams merged (OBJ files split vertices at UV / normal
seams and look open until merged), degenerate and duplicate faces dropped, normals made consistent and
small holes filled. :func:`inspect_mesh` also returns a :class:`MeshInfo` saying whether the result is
watertight and what was repaired. Broken files raise :class:`MeshError`, whose message names the file.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import trimesh

log = logging.getLogger(__name__)

MESH_SUFFIXES = (".obj", ".ply", ".off", ".stl", ".glb", ".gltf")
MIN_FACES = 4  # a tetrahedron
#: a mesh with more than this share of its faces in components of < SOUP_COMPONENT faces is a triangle soup
SOUP_FRACTION = 0.5
SOUP_COMPONENT = 4


class MeshError(ValueError):
    """A mesh file that cannot be used: unreadable, empty, a triangle soup, flat to a point..."""


@dataclass
class MeshInfo:
    """What :func:`inspect_mesh` found: ``watertight`` after repair, and notes on what it changed."""

    path: Path
    n_vertices: int
    n_faces: int
    n_components: int
    watertight: bool
    notes: list[str] = field(default_factory=list)


def _read(path: Path) -> trimesh.Trimesh:
    if not path.is_file():
        raise FileNotFoundError(f"mesh file not found: {path}")
    if path.suffix.lower() not in MESH_SUFFIXES:
        raise MeshError(f"{path}: unsupported mesh format {path.suffix!r}; expected one of {MESH_SUFFIXES}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. a missing .mtl file: the geometry is still fine
            mesh = trimesh.load(str(path), force="mesh", process=False)
    except Exception as e:  # trimesh raises many kinds (ValueError, IndexError, KeyError...) for corrupt files
        raise MeshError(f"{path}: cannot read mesh ({type(e).__name__}: {e})") from e
    if isinstance(mesh, trimesh.Scene):  # force="mesh" of an empty scene
        mesh = mesh.to_mesh() if mesh.geometry else trimesh.Trimesh()
    if not isinstance(mesh, trimesh.Trimesh):
        raise MeshError(f"{path}: holds a {type(mesh).__name__}, not a triangle mesh")
    return mesh


def _components(mesh: trimesh.Trimesh) -> list[np.ndarray]:
    return trimesh.graph.connected_components(mesh.face_adjacency, nodes=np.arange(len(mesh.faces)), min_len=1)


def inspect_mesh(path: str | Path) -> tuple[trimesh.Trimesh, MeshInfo]:
    """Load, clean and repair a mesh; :class:`MeshError` (naming the file and the problem) if unusable."""
    path = Path(path)
    mesh = _read(path)
    if len(mesh.faces) == 0:
        raise MeshError(f"{path}: empty mesh (no faces)")
    notes: list[str] = []
    mesh.merge_vertices(merge_tex=True, merge_norm=True)
    n0 = len(mesh.faces)
    mesh.update_faces(mesh.nondegenerate_faces())
    mesh.update_faces(mesh.unique_faces())
    mesh.remove_unreferenced_vertices()
    if (dropped := n0 - len(mesh.faces)) > 0:
        notes.append(f"dropped {dropped} degenerate or duplicate faces")
    if len(mesh.faces) < MIN_FACES:
        raise MeshError(f"{path}: too few faces ({len(mesh.faces)} after cleaning; need at least {MIN_FACES})")
    if not np.all(np.isfinite(mesh.vertices)):
        raise MeshError(f"{path}: vertices hold NaN or infinite coordinates")
    if float(mesh.extents.max()) <= 0:
        raise MeshError(f"{path}: zero extent (all vertices at one point)")
    comps = _components(mesh)
    in_small = sum(len(c) for c in comps if len(c) < SOUP_COMPONENT)
    if in_small > SOUP_FRACTION * len(mesh.faces):
        raise MeshError(f"{path}: triangle soup, not a surface ({in_small} of {len(mesh.faces)} faces lie in "
                        f"{sum(len(c) < SOUP_COMPONENT for c in comps)} tiny disconnected pieces)")
    if not mesh.is_watertight:
        trimesh.repair.fix_normals(mesh)
        n1 = len(mesh.faces)
        trimesh.repair.fill_holes(mesh)
        if len(mesh.faces) > n1:
            notes.append(f"filled holes with {len(mesh.faces) - n1} faces")
    else:
        trimesh.repair.fix_normals(mesh)
    watertight = bool(mesh.is_watertight)
    if not watertight:
        notes.append("open surface after repair: inside/outside decided by the winding number")
    info = MeshInfo(path, len(mesh.vertices), len(mesh.faces), len(_components(mesh)), watertight, notes)
    return mesh, info


def load_mesh(path: str | Path) -> trimesh.Trimesh:
    """A cleaned, repaired triangle mesh from ``path`` (see :func:`inspect_mesh`)."""
    return inspect_mesh(path)[0]


def normalize_mesh(mesh: trimesh.Trimesh, extent: float = 0.9) -> trimesh.Trimesh:
    """A copy centred on its bounding box with the longest side ``extent``: it lies in [-extent/2, extent/2]^3."""
    if not 0 < extent <= 1:
        raise ValueError(f"extent must be in (0, 1], got {extent}")
    lo, hi = mesh.bounds
    size = float((hi - lo).max())
    if size <= 0:
        raise MeshError("cannot normalise a mesh of zero extent")
    out = mesh.copy()
    out.apply_translation(-(lo + hi) / 2)
    out.apply_scale(extent / size)
    return out
