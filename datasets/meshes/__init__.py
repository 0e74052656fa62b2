"""Mesh data for SAR3D: loading and repair, folder layouts (ShapeNet, ModelNet), procedural objects,
SDF sampling (winding-number sign), depth/normal renders, and the cached SDF dataset with its Lightning data module."""

from scalear.datasets.meshes.data import MeshDataModule, MeshSDFDataset, preprocess_mesh, split_records
from scalear.datasets.meshes.folders import SHAPENET_SYNSETS, MeshRecord, scan_mesh_folder
from scalear.datasets.meshes.io import MESH_SUFFIXES, MeshError, MeshInfo, inspect_mesh, load_mesh, normalize_mesh
from scalear.datasets.meshes.procedural import PROCEDURAL_CLASSES, make_shape, write_procedural_set
from scalear.datasets.meshes.render import (
    camera_views,
    look_at,
    render_condition_image,
    render_depth_normals,
    shaded_preview,
)
from scalear.datasets.meshes.sampling import (
    enclosure,
    grid_points,
    inside,
    sample_sdf,
    sample_surface,
    sdf_grid,
    signed_distance,
    winding_numbers,
)

__all__ = [
    "MESH_SUFFIXES",
    "PROCEDURAL_CLASSES",
    "SHAPENET_SYNSETS",
    "MeshDataModule",
    "MeshError",
    "MeshInfo",
    "MeshRecord",
    "MeshSDFDataset",
    "camera_views",
    "enclosure",
    "grid_points",
    "inside",
    "inspect_mesh",
    "load_mesh",
    "look_at",
    "make_shape",
    "normalize_mesh",
    "preprocess_mesh",
    "render_condition_image",
    "render_depth_normals",
    "sample_sdf",
    "sample_surface",
    "scan_mesh_folder",
    "sdf_grid",
    "shaded_preview",
    "signed_distance",
    "split_records",
    "winding_numbers",
    "write_procedural_set",
]
