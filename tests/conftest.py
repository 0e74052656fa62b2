"""Shared fixtures: seeded RNG and the location of the real sample data in ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

if os.environ.get("PYTEST_XDIST_WORKER"):  # pytest -n N: one thread per worker process, N workers share the cores
    os.environ["OMP_NUM_THREADS"] = "1"

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def shared_data() -> Path:
    """Root of ../shared/data; tests using it skip with a reason in a clone that has no ../shared."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real sample data not found at {SHARED_DATA} (CI provides ../shared next to the clone)")
    return SHARED_DATA


@pytest.fixture(scope="module")
def single_thread():
    """One intra-op thread for a module: on a shared 2-core machine, OpenMP spin-waiting makes small ops
    10-100x slower when another process holds a core."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def import_benchmark(name: str):
    """A script of ``benchmarks/`` as a module (it imports its siblings, e.g. ``_common``, by plain name)."""
    import importlib
    import sys

    sys.path.insert(0, str(BENCHMARKS))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCHMARKS))


def write_ball_and_box_meshes(root: Path, per_class: int = 2) -> Path:
    """A mesh folder ``root/<class>/<class>_<i>.obj`` of two classes (spheres and boxes of growing size)."""
    import trimesh

    for cls, make in (("ball", lambda i: trimesh.creation.icosphere(3, 0.2 + 0.05 * i)),
                      ("box", lambda i: trimesh.creation.box(extents=(0.3, 0.4 + 0.1 * i, 0.6)))):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            make(i).export(root / cls / f"{cls}_{i}.obj")
    return root
