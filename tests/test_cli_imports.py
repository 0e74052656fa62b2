"""The ``scalear`` command's help and every domain's help import no heavy library (torch, Lightning, kornia, open3d,
trimesh, matplotlib): each runs in a fresh interpreter and reports what it imported. ``from scalear import ...``
still gives every public name (loaded on first use)."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "lightning", "kornia", "open3d", "trimesh", "matplotlib")

HELPS = {
    "scalear --help": "from scalear.cli import main; main(['--help'])",
    "scalear core --help": "from scalear.cli import main; main(['core', '--help'])",
    "scalear depth --help": "from scalear.cli import main; main(['depth', '--help'])",
    "scalear depth predict --help": "from scalear.cli import main; main(['depth', 'predict', '--help'])",
    "scalear restore --help": "from scalear.cli import main; main(['restore', '--help'])",
    "scalear restore predict --help": "from scalear.cli import main; main(['restore', 'predict', '--help'])",
    "scalear sar3d generate --help": "from scalear.cli import main; main(['sar3d', 'generate', '--help'])",
    "scalear g3pt eval --help": "from scalear.cli import main; main(['g3pt', 'eval', '--help'])",
}


def _imported(code: str) -> list[str]:
    probe = (f"import sys\ntry:\n    {code}\nexcept SystemExit:\n    pass\n"
             f"print('IMPORTED', sorted(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return eval(out.rsplit("IMPORTED", 1)[1])


@pytest.mark.parametrize("command", sorted(HELPS))
def test_help_imports_no_heavy_library(command):
    assert _imported(HELPS[command]) == [], command


def test_public_names_load_on_first_use():
    assert _imported("import scalear, scalear.domains.depth, scalear.domains.restoration, scalear.domains.sar3d, "
                     "scalear.domains.g3pt") == []
    # the prediction commands' image reading and writing: torch, but neither kornia nor matplotlib
    assert _imported("import scalear.datasets.restoration.io, scalear.datasets.depth.io, scalear.viz") == ["torch"]
    import scalear
    import scalear.domains.restoration as restoration

    import importlib

    for package in ("scalear", "scalear.domains.restoration", "scalear.domains.sar3d", "scalear.domains.g3pt",
                    "scalear.datasets.restoration"):
        module = importlib.import_module(package)
        for name in module.__all__:
            assert getattr(module, name) is not None and name in dir(module), (package, name)
    from scalear import NextScaleTransformer, create_model, sample  # noqa: F401
    from scalear.transformer import NextScaleTransformer as direct

    assert NextScaleTransformer is direct and restoration.psnr.__module__ == "scalear.domains.restoration.metrics"
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        scalear.not_a_name  # noqa: B018


def test_loading_an_exported_model_imports_only_its_kind(tmp_path):
    """depth predict / restore with an exported DAR / Varformer import neither Lightning (DepthART's module brings
    it) nor kornia; DepthART's module is imported only for a DepthART."""
    from scalear.domains.depth.dar import create_dar
    from scalear.domains.restoration.varformer import create_varformer
    from scalear.io import save_pretrained

    save_pretrained(create_dar("tiny"), tmp_path / "dar")
    save_pretrained(create_varformer("tiny"), tmp_path / "varformer")
    code = ("from scalear.domains.depth.models import load_predictor; "
            "from scalear.domains.restoration.predict import load_restorer; "
            f"load_predictor(r'{tmp_path / 'dar'}'); load_restorer(r'{tmp_path / 'varformer'}'); "
            "assert 'scalear.domains.depth.depthart' not in sys.modules")
    assert _imported(code) == ["torch"]
