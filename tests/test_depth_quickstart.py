"""The depth part of `scalear quickstart` in full, meeting the issue's quality bars (its fast mode runs, with the
core part, in tests/test_quickstart.py::test_parts_run_in_parallel_workers_with_logs)."""

import json

import pytest

from scalear.domains.depth.quickstart import run


def _best_constant(m: dict) -> dict:
    return next(v for k, v in m["procedural_test"].items() if k.startswith("best constant"))


@pytest.mark.slow
def test_depth_quickstart_full_meets_the_bars(tmp_path, single_thread):
    """The trained quickstart DAR (configs/depth/dar_tiny.yaml, ~3 min on one CPU thread) has at most half the
    held-out AbsRel of the best constant-depth predictor, and its AbsRel falls strictly at every added scale."""
    run(tmp_path)
    m = json.loads((tmp_path / "depth" / "metrics.json").read_text())
    dar, const, per_scale = m["procedural_test"]["DAR"]["abs_rel"], _best_constant(m)["abs_rel"], m["abs_rel_per_scale"]
    print(f"\nDAR AbsRel {dar:.3f} vs best constant {const:.3f}; per scale {[round(a, 3) for a in per_scale]}")
    assert dar <= 0.5 * const
    assert all(fine < coarse for coarse, fine in zip(per_scale, per_scale[1:])), per_scale
    assert per_scale[-1] == pytest.approx(dar, abs=1e-6)  # the reported prediction is the finest scale's
