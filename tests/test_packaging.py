"""Packaging: `domains/` and `datasets/` ship only as `scalear.domains` / `scalear.datasets`, every
sub-package is listed in pyproject.toml, and the core never imports a domain."""

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DIRS = {"scalear": "scalear", "domains": "scalear.domains", "datasets": "scalear.datasets", "configs": "scalear.configs"}


def test_every_subpackage_is_listed():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    on_disk = set()
    for folder, pkg in DIRS.items():
        assert cfg["package-dir"][pkg] == folder
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder).parts
            on_disk.add(".".join((pkg, *rel)))
    on_disk |= {f"scalear.configs.{d.name}" for d in (ROOT / "configs").iterdir() if any(d.glob("*.yaml"))}
    assert on_disk == listed, f"add to / remove from pyproject packages: {sorted(on_disk ^ listed)}"
    assert not any(p.split(".")[0] in ("domains", "datasets") for p in listed)


def test_core_never_imports_a_domain():
    for path in (ROOT / "scalear").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.startswith(("scalear.domains", "domains")) for n in names), f"{path} imports a domain"


#: what only the 3D domains use: the shared 3D layer and the geometry libraries
THREE_D_ONLY = ("scalear.gen3d", "trimesh", "open3d", "igl", "skimage.measure")


def test_core_top_level_imports_no_3d_only_module():
    """``scalear/`` outside ``scalear/gen3d/`` reads as the VAR core: no module there imports the shared 3D layer or a
    geometry library (``scalear.deps`` only probes them for ``scalear info``), and every module of the layer is used
    by both 3D domains or by the layer itself."""
    for path in (ROOT / "scalear").rglob("*.py"):
        if "gen3d" in path.parts or path.name == "deps.py":
            continue
        bad = [n for n in _imported_names(path) if n.startswith(THREE_D_ONLY)]
        assert not bad, f"{path.relative_to(ROOT)} imports the 3D-only {bad}: move it under scalear/gen3d/"
    users = {name: [] for name in (p.stem for p in (ROOT / "scalear" / "gen3d").glob("*.py")) if name != "__init__"}
    for path in [*(ROOT / "domains").rglob("*.py"), *(ROOT / "scalear" / "gen3d").glob("*.py")]:
        for n in _imported_names(path):
            if n.startswith("scalear.gen3d."):
                users[n.split(".")[2]].append(path.parent.name)
    for name, where in users.items():
        assert {"sar3d", "g3pt"} <= set(where) or "gen3d" in where, f"scalear.gen3d.{name} is used by {set(where)}"
    assert not any(set(w) & {"depth", "restoration"} for w in users.values())


def test_data_modules_live_in_datasets():
    """One rule for data: every LightningDataModule is defined under ``datasets/`` (domains hold models and their
    training modules), and ``datasets/`` imports no domain."""
    for folder in ("scalear", "domains", "datasets"):
        for path in (ROOT / folder).rglob("*.py"):
            tree = ast.parse(path.read_text())
            modules = [c.name for c in ast.walk(tree) if isinstance(c, ast.ClassDef)
                       and any(ast.unparse(b).endswith("LightningDataModule") for b in c.bases)]
            assert folder == "datasets" or not modules, f"{path.relative_to(ROOT)} defines data modules {modules}"
            if folder == "datasets":
                assert not [n for n in _imported_names(path) if n.startswith("scalear.domains")], path


def test_installed_names():
    import scalear.datasets
    import scalear.domains

    assert Path(scalear.domains.__file__).parent == ROOT / "domains"
    assert Path(scalear.datasets.__file__).parent == ROOT / "datasets"


def _imported_names(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.append(node.module or "")
    return names


def test_no_import_under_the_bare_folder_names():
    """``domains`` / ``datasets`` are only ever imported as ``scalear.domains`` / ``scalear.datasets``."""
    for folder in ("scalear", "domains", "datasets", "tests", "benchmarks"):
        for path in (ROOT / folder).rglob("*.py"):
            bare = [n for n in _imported_names(path) if n.split(".")[0] in ("domains", "datasets")]
            assert not bare, f"{path} imports {bare}"


@pytest.mark.parametrize("name", ["datasets", "domains"])
def test_bare_import_from_the_repository_root_is_refused(name):
    """From the repository root ``import datasets`` would load this folder (shadowing Hugging Face datasets) as a
    second copy of scalear.datasets: it is an ImportError that says what to import instead."""
    r = subprocess.run([sys.executable, "-c", f"import {name}"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 1 and f"import scalear.{name}" in r.stderr


def test_missing_system_library_names_the_fix(monkeypatch):
    import importlib

    from scalear import deps

    real = importlib.import_module

    def fake(name, *a):
        if name == "open3d":
            raise ImportError("libusb-1.0.so.0: cannot open shared object file: No such file or directory")
        return real(name, *a)

    monkeypatch.setattr(importlib, "import_module", fake)
    with pytest.raises(ImportError, match="libusb-1.0 is missing.*apt-get install libusb-1.0-0"):
        deps.open3d()
    assert "open3d unavailable: the system library libusb-1.0 is missing" in deps.status_3d()


def test_docstrings_cite_papers_not_private_notes():
    """The reference notes live outside the repository: code cites the paper (and section) instead."""
    for folder in ("scalear", "domains", "datasets"):
        for path in (ROOT / folder).rglob("*.py"):
            assert "anchors.md" not in path.read_text(), path


def test_no_import_cycles_in_the_core():
    """Among the core's modules (every import, lazy ones too) no module imports one that imports it back; the
    LightningCLI runner sits below both the command and the quickstart."""
    mods = {}
    for path in (ROOT / "scalear").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {m: {d for d in _imported_names(p) if d in mods and d not in (m, "scalear")} for m, p in mods.items()}

    def reaches(start: str, goal: str, seen: set) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in graph[start])

    cyclic = sorted(m for m in graph if reaches(m, m, {m}))
    assert not cyclic, f"import cycles through {cyclic}"


def test_info_reports_the_3d_dependencies(capsys):
    from scalear.cli import main

    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "open3d" in out and "libigl" in out
