"""Packaging: `domains/` and `datasets/` ship only as `scalear.domains` / `scalear.datasets`, every
sub-package is listed in pyproject.toml, and the core never imports a domain."""

import ast
import tomllib
from pathlib import Path

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
    assert on_disk == listed, f"add to / remove from pyproject packages: {sorted(on_disk ^ listed)}"
    assert not any(p.split(".")[0] in ("domains", "datasets") for p in listed)


def test_core_never_imports_a_domain():
    for path in (ROOT / "scalear").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.startswith(("scalear.domains", "domains")) for n in names), f"{path} imports a domain"


def test_installed_names():
    import scalear.datasets
    import scalear.domains

    assert Path(scalear.domains.__file__).parent == ROOT / "domains"
    assert Path(scalear.datasets.__file__).parent == ROOT / "datasets"
