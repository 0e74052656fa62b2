"""The depth part of `scalear quickstart` is wired end to end (fast mode: a few training steps)."""

import json

from scalear.domains.depth.quickstart import run


def test_depth_quickstart_fast(tmp_path):
    md = run(tmp_path, fast=True)
    m = json.loads((tmp_path / "depth" / "metrics.json").read_text())
    assert len(m["abs_rel_per_scale"]) == 4 and set(m["middlebury"]) == {"metric (as predicted)", "median-scaled"}
    best_constant = next(v for k, v in m["procedural_test"].items() if k.startswith("best constant"))
    assert 0 < best_constant["abs_rel"] < 1 and 0 < m["procedural_test"]["DAR"]["abs_rel"]
    for pic in ("procedural_input_truth_prediction.png", "middlebury_input_truth_prediction.png"):
        assert pic in md and (tmp_path / "depth" / pic).stat().st_size > 1000
    assert (tmp_path / "depth" / "export" / "dar" / "model.safetensors").is_file()
