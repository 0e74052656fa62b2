"""Point clouds for G3PT: file loading (PLY / PCD / XYZ / NPY / NPZ / ModelNet40 HDF5 / meshes), normalisation,
farthest point sampling, PLY export, and the point-cloud + occupancy dataset with its Lightning data module."""

from scalear.datasets.pointclouds.data import (
    PointCloudDataModule,
    PointCloudDataset,
    PointCloudRecord,
    h5_records,
    preprocess_object,
    scan_point_cloud_folder,
)
from scalear.datasets.pointclouds.io import (
    POINT_SUFFIXES,
    SUFFIXES,
    PointCloudError,
    farthest_point_sample,
    load_h5_point_clouds,
    load_point_cloud,
    normalize_points,
    save_ply,
)

__all__ = [
    "POINT_SUFFIXES",
    "SUFFIXES",
    "PointCloudDataModule",
    "PointCloudDataset",
    "PointCloudError",
    "PointCloudRecord",
    "farthest_point_sample",
    "h5_records",
    "load_h5_point_clouds",
    "load_point_cloud",
    "normalize_points",
    "preprocess_object",
    "save_ply",
    "scan_point_cloud_folder",
]
