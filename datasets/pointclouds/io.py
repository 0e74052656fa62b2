"""Point-cloud files: load PLY / PCD / XYZ / TXT / NPY / NPZ / HDF5 and meshes as ``(N, 3)`` float64 points.

================  ======================================================================================
suffix            read as
================  ======================================================================================
``.pcd``          open3d (``DATA ascii``, ``binary`` and ``binary_compressed``), normals when present
``.ply``          the vertices of a point-cloud PLY (open3d); a PLY with faces is a mesh (below)
``.xyz .txt .pts``  text, whitespace or comma separated, one point a row, the first 3 columns
``.npy``          an ``(N, 3+)`` array, the first 3 columns
``.npz``          the array ``points``, else ``data``, else the only array (``normals`` when present)
``.h5 .hdf5``     ``data`` (N, 3) or a one-cloud (1, N, 3); whole ModelNet40 files: :func:`load_h5_point_clouds`
meshes            ``.obj .off .stl .glb .gltf`` and PLY with faces: ``n_mesh_points`` area-uniform surface
                  samples (:func:`scalear.datasets.meshes.load_mesh` + ``sample_surface``), with face normals
================  ======================================================================================

Every file that cannot be used (unreadable, corrupt, empty, no finite point, wrong shape) raises
:class:`PointCloudError`, whose message names the file and the problem. Points with NaN or infinite coordinates
(the invalid pixels of an organized PCD from a depth camera or stereo rig) are dropped with a warning that says how
many. Coordinates are returned as stored, in float64: georeferenced clouds (UTM, ~1e6 m) keep their millimetres;
:func:`normalize_points` centres in float64 before it casts the cloud into the unit cube as float32, with the same
convention as :func:`~scalear.datasets.meshes.normalize_mesh` (bounding box centred, longest side ``extent``).
"""

from __future__ import annotations

import io
import os
import re
import warnings
from pathlib import Path

import numpy as np

from scalear.datasets.meshes.io import MESH_SUFFIXES, MeshError, load_mesh
from scalear.datasets.meshes.sampling import sample_surface
from scalear.deps import open3d
from scalear.io import atomic_write

TEXT_SUFFIXES = (".xyz", ".txt", ".pts")
H5_SUFFIXES = (".h5", ".hdf5")
#: files read as point clouds (PLY may also be a mesh: decided by its header)
POINT_SUFFIXES = (".pcd", ".ply", ".npy", ".npz", *TEXT_SUFFIXES, *H5_SUFFIXES)
#: every suffix :func:`load_point_cloud` reads
SUFFIXES = tuple(dict.fromkeys(POINT_SUFFIXES + MESH_SUFFIXES))


class PointCloudError(ValueError):
    """A point-cloud file that cannot be used; the message names the file and the problem."""


def _check(arr: np.ndarray, path: Path, what: str = "points") -> tuple[np.ndarray, np.ndarray]:
    """``arr`` as (N, 3) float64 (its first 3 columns) without its non-finite rows, and the mask of the rows kept;
    :class:`PointCloudError` when nothing usable is left."""
    arr = np.asarray(arr)
    if arr.dtype.kind not in "fiu":
        raise PointCloudError(f"{path}: {what} have dtype {arr.dtype}, expected numbers")
    if arr.ndim != 2 or arr.shape[1] < 3:
        raise PointCloudError(f"{path}: {what} have shape {arr.shape}, expected (N, 3) or (N, 3+)")
    if arr.shape[0] == 0:
        raise PointCloudError(f"{path}: empty point cloud (no points)")
    arr = arr[:, :3].astype(np.float64)
    keep = np.isfinite(arr).all(1)
    if not keep.any():
        raise PointCloudError(f"{path}: all {len(arr)} {what} hold NaN or infinite coordinates")
    if not keep.all():
        warnings.warn(f"{path}: dropped {int((~keep).sum())} of {len(arr)} {what} with NaN or infinite coordinates",
                      stacklevel=3)
    return arr[keep], keep


def _ply_faces(path: Path) -> int:
    """The number of faces a PLY header declares (0 for a point cloud)."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    if not head.startswith(b"ply"):
        raise PointCloudError(f"{path}: not a PLY file (no 'ply' magic)")
    end = head.find(b"end_header")
    if end < 0:
        raise PointCloudError(f"{path}: corrupt PLY header (no end_header)")
    m = re.search(rb"element\s+face\s+(\d+)", head[:end])
    return int(m.group(1)) if m else 0


def _read_open3d(path: Path, fmt: str) -> tuple[np.ndarray, np.ndarray | None]:
    o3d = open3d()

    if fmt == "pcd":
        with open(path, "rb") as f:
            if b"DATA" not in f.read(4096):
                raise PointCloudError(f"{path}: not a PCD file (no DATA line in the header)")
    # open3d does not raise on bad files: it logs and returns an empty cloud
    with o3d.utility.VerbosityContextManager(o3d.utility.VerbosityLevel.Error):
        pc = o3d.io.read_point_cloud(str(path), format=fmt, remove_nan_points=False, remove_infinite_points=False)
    points = np.asarray(pc.points)
    if len(points) == 0:
        raise PointCloudError(f"{path}: no points read (empty, truncated or corrupt {fmt.upper()} file)")
    normals = np.asarray(pc.normals, dtype=np.float32) if pc.has_normals() else None
    return points, normals


def _read_text(path: Path) -> np.ndarray:
    try:
        text = path.read_text()
    except UnicodeDecodeError as e:
        raise PointCloudError(f"{path}: not a text point cloud ({e})") from e
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "input contained no data": refused below as an empty cloud
            arr = np.loadtxt(io.StringIO(text.replace(",", " ")), dtype=np.float64, comments="#", ndmin=2)
    except ValueError as e:
        raise PointCloudError(f"{path}: cannot parse as rows of numbers ({e})") from e
    return arr


def _read_npy(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        obj = np.load(path, allow_pickle=False)
    except Exception as e:  # ValueError, OSError, EOFError, BadZipFile... for corrupt files
        raise PointCloudError(f"{path}: cannot read ({type(e).__name__}: {e})") from e
    if isinstance(obj, np.ndarray):
        return obj, None
    with obj as z:
        keys = list(z.files)
        key = next((k for k in ("points", "data") if k in keys), keys[0] if len(keys) == 1 else None)
        if key is None:
            raise PointCloudError(f"{path}: NPZ holds {keys}; expected an array named 'points' or 'data', or one array")
        return z[key], (z["normals"] if "normals" in keys else None)


def _read_h5(path: Path):
    import h5py

    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise PointCloudError(f"{path}: cannot read HDF5 file ({e})") from e


def load_h5_point_clouds(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """A ModelNet40 HDF5 file (PointNet's ``ply_data_*.h5``): ``data`` (S, N, 3) float and ``label`` (S, 1) int.

    Returns ``(points (S, N, 3) float32, labels (S,) int64)``; :class:`PointCloudError` if ``data`` is
    missing or misshapen, holds NaN / inf, or the labels do not match it (a file without ``label`` gets -1).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"point-cloud file not found: {path}")
    with _read_h5(path) as f:
        if "data" not in f:
            raise PointCloudError(f"{path}: HDF5 file has no 'data' dataset (holds {sorted(f.keys())})")
        data = np.asarray(f["data"])
        labels = np.asarray(f["label"]) if "label" in f else np.full(len(data), -1)
    if data.ndim != 3 or data.shape[2] < 3 or 0 in data.shape[:2]:
        raise PointCloudError(f"{path}: 'data' has shape {data.shape}, expected (S, N, 3) with S, N > 0")
    if data.dtype.kind not in "fiu":
        raise PointCloudError(f"{path}: 'data' has dtype {data.dtype}, expected numbers")
    data = data[..., :3].astype(np.float32)
    if not np.all(np.isfinite(data)):
        bad = int((~np.isfinite(data)).any((1, 2)).sum())
        raise PointCloudError(f"{path}: {bad} of {len(data)} clouds hold NaN or infinite coordinates")
    labels = labels.reshape(-1)
    if labels.shape != (len(data),) or labels.dtype.kind not in "iu":
        raise PointCloudError(f"{path}: 'label' has shape {labels.shape} and dtype {labels.dtype}, expected "
                              f"({len(data)}, 1) integers")
    return data, labels.astype(np.int64)


def _load_h5_single(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    with _read_h5(path) as f:
        key = next((k for k in ("points", "data") if k in f), None)
        if key is None:
            raise PointCloudError(f"{path}: HDF5 file has no 'data' or 'points' dataset (holds {sorted(f.keys())})")
        arr = np.asarray(f[key])
        normals = np.asarray(f["normal"]) if "normal" in f else None
    if arr.ndim == 3:
        if arr.shape[0] != 1:
            raise PointCloudError(f"{path}: '{key}' holds {arr.shape[0]} clouds; read them with load_h5_point_clouds")
        arr, normals = arr[0], (normals[0] if normals is not None and normals.ndim == 3 else None)
    return arr, normals


def load_point_cloud(path: str | Path, return_normals: bool = False, n_mesh_points: int = 2048,
                     seed: int = 0) -> np.ndarray | tuple[np.ndarray, np.ndarray | None]:
    """The points ``(N, 3)`` float64 of a point-cloud or mesh file (formats: module docstring), without the
    points that have NaN / inf coordinates (dropped with a warning).

    With ``return_normals`` returns ``(points, normals)``, ``normals`` (N, 3) float32 or None when the file
    has none or they are unusable (misshapen, NaN); text files never have them. Meshes give ``n_mesh_points``
    surface samples drawn with ``seed``.
    :class:`PointCloudError` (naming the file) for unusable files, FileNotFoundError for missing ones.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"point-cloud file not found: {path}")
    if path.stat().st_size == 0:
        raise PointCloudError(f"{path}: empty file (0 bytes)")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise PointCloudError(f"{path}: unsupported point-cloud format {path.suffix!r}; expected one of {SUFFIXES}")
    normals = None
    if suffix in MESH_SUFFIXES and (suffix != ".ply" or _ply_faces(path) > 0):
        try:
            mesh = load_mesh(path)
        except MeshError as e:
            raise PointCloudError(str(e)) from e
        points, normals = sample_surface(mesh, n_mesh_points, np.random.default_rng(seed))
    elif suffix in (".pcd", ".ply"):
        points, normals = _read_open3d(path, suffix[1:])
    elif suffix in TEXT_SUFFIXES:
        points = _read_text(path)
    elif suffix in (".npy", ".npz"):
        points, normals = _read_npy(path)
    else:
        points, normals = _load_h5_single(path)
    points, kept = _check(points, path)
    if normals is not None:  # unusable normals are dropped, not fatal: the points are what matters
        normals = np.asarray(normals)
        ok = normals.shape == kept.shape + (3,) and normals.dtype.kind == "f"
        normals = normals[kept] if ok else None
        normals = normals.astype(np.float32) if ok and np.isfinite(normals).all() else None
    return (points, normals) if return_normals else points


def normalize_points(points: np.ndarray, extent: float = 0.9) -> np.ndarray:
    """``points`` (N, 3) centred on their bounding box with the longest side ``extent``, as float32: they lie in
    [-extent/2, extent/2]^3 (the convention of :func:`~scalear.datasets.meshes.normalize_mesh`)."""
    if not 0 < extent <= 1:
        raise ValueError(f"extent must be in (0, 1], got {extent}")
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3 or len(pts) == 0:
        raise ValueError(f"points must be a non-empty (N, 3) array, got shape {pts.shape}")
    lo, hi = pts.min(0), pts.max(0)
    size = float((hi - lo).max())
    if size <= 0:
        raise ValueError("cannot normalise a point cloud of zero extent (all points at one place)")
    return ((pts - (lo + hi) / 2) * (extent / size)).astype(np.float32)


def farthest_point_sample(points: np.ndarray, n: int, return_index: bool = False,
                          start_index: int = 0) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """``n`` points of ``points`` (N, 3) by farthest point sampling (open3d ``farthest_point_down_sample``),
    starting from ``start_index``: each next point is the one farthest from those already chosen.

    Returns (n, 3) float32 (all N points, in order, when ``n >= N``); with ``return_index`` also their (n,)
    int64 indices into ``points``. Duplicated input points are never chosen twice while distinct ones remain.
    """
    o3d = open3d()

    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3 or len(pts) == 0:
        raise ValueError(f"points must be a non-empty (N, 3) array, got shape {pts.shape}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if n >= len(pts):
        idx = np.arange(len(pts))
    else:
        pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
        chosen = np.asarray(pc.farthest_point_down_sample(n, start_index).points)
        # open3d returns coordinates: find their indices (exact matches; equal points share one index)
        tree = o3d.geometry.KDTreeFlann(pc)
        idx = np.array([tree.search_knn_vector_3d(p, 1)[1][0] for p in chosen], dtype=np.int64)
    out = pts[idx].astype(np.float32)
    return (out, idx.astype(np.int64)) if return_index else out


def save_ply(points: np.ndarray, path: str | Path, normals: np.ndarray | None = None, ascii: bool = False) -> Path:
    """Write ``points`` (N, 3) (and ``normals`` (N, 3)) as a point-cloud PLY, atomically; returns the path."""
    o3d = open3d()

    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"points must be (N, 3), got shape {pts.shape}")
    pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
    if normals is not None:
        nrm = np.asarray(normals, dtype=np.float64)
        if nrm.shape != pts.shape:
            raise ValueError(f"normals must match points {pts.shape}, got {nrm.shape}")
        pc.normals = o3d.utility.Vector3dVector(nrm)

    def write(tmp: str) -> None:
        tmp_ply = tmp + ".ply"  # open3d picks the format from the suffix (its format= is ignored on writing)
        try:
            if not o3d.io.write_point_cloud(tmp_ply, pc, write_ascii=ascii):
                raise OSError(f"open3d could not write {path}")
            os.replace(tmp_ply, tmp)
        finally:
            if os.path.exists(tmp_ply):
                os.remove(tmp_ply)

    return atomic_write(path, write)
