"""Every notebook in notebooks/ runs top to bottom without errors on its tiny (fast) settings."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="session")
def kernel_name(tmp_path_factory: pytest.TempPathFactory):
    """A kernel running this interpreter: "python3" when it is ipykernel's own spec (``python`` in its argv is run
    as ``sys.executable`` by jupyter_client), else a spec installed for this interpreter in a temporary folder."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        argv0 = KernelSpecManager().get_kernel_spec("python3").argv[0]
    except NoSuchKernel:
        argv0 = None
    if argv0 in ("python", f"python{sys.version_info[0]}", f"python{sys.version_info[0]}.{sys.version_info[1]}",
                 sys.executable):
        yield "python3"
        return
    from ipykernel.kernelspec import install

    prefix = tmp_path_factory.mktemp("jupyter")
    install(kernel_name="scalear-tests", prefix=str(prefix))  # argv: sys.executable -m ipykernel_launcher
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_PATH", os.pathsep.join([str(prefix / "share" / "jupyter"), os.environ.get("JUPYTER_PATH", "")]))
        yield "scalear-tests"


def test_notebooks_found() -> None:
    names = {p.stem for p in NOTEBOOKS}
    assert {"core", "depth", "restoration", "sar3d", "g3pt"} <= names, names


# one test per notebook; the xdist_group marks let `--dist loadgroup` (or `load`) spread them over workers
# (the project's default `--dist loadfile` keeps one file's tests on one worker)
@pytest.mark.parametrize("path", [pytest.param(p, id=p.name, marks=pytest.mark.xdist_group(f"notebook-{p.stem}"))
                                  for p in NOTEBOOKS])
def test_notebook_runs(path: Path, tmp_path: Path, kernel_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # the kernel inherits this environment: tiny settings, outputs under tmp_path, one thread, no display
    for key, value in {"SCALEAR_NOTEBOOK_FAST": "1", "SCALEAR_NOTEBOOK_OUT": str(tmp_path / "out"),
                       "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg"}.items():
        monkeypatch.setenv(key, value)
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{path.name}: commit it without outputs"
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name=kernel_name,
                                     resources={"metadata": {"path": str(tmp_path)}})
    try:
        client.execute()  # raises CellExecutionError (the failing cell and its traceback) on any error
    except nbclient.exceptions.CellExecutionError as e:
        if hasattr(e, "add_note"):
            e.add_note(f"in notebook {path.name}")
        raise
    images = sum(o.get("output_type") == "display_data" and "image/png" in o.get("data", {})
                 for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert images >= 3, f"{path.name} drew {images} pictures"
