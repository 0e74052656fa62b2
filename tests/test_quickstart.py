"""The core quickstart end to end: real digits -> tokenizer -> class-conditional transformer -> samples that a
classifier trained on the real digits recognises as their class far above chance (10%)."""

import json

import pytest

from scalear.quickstart import run_core, write_report

#: measured with the default configs: see README "Results"; the test keeps a margin below it.
MIN_RECOGNISED = 0.80


@pytest.mark.slow
def test_generated_digits_are_recognised(tmp_path):
    part = run_core(tmp_path, per_class=20, seed=0)
    m = json.loads((tmp_path / "core" / "metrics.json").read_text())
    assert m == json.loads(json.dumps(part.metrics))
    assert m["generated_recognised_as_class"] >= MIN_RECOGNISED, m
    assert min(m["per_class"]) >= 0.3, m  # every class is generated, not a few easy ones
    # not copies of training digits: about as far from the training set as held-out real digits are
    assert m["nearest_train_distance_generated"] > 0.5 * m["nearest_train_distance_heldout"], m
    report = write_report(tmp_path, [part])
    text = report.read_text()
    for pic in ("samples.png", "reconstructions.png", "tokenizer_curves.png", "transformer_curves.png"):
        assert pic in text and (tmp_path / "core" / pic).stat().st_size > 1000
    assert "<table>" in (tmp_path / "report.html").read_text()


def test_report_lists_parts_and_failures(tmp_path):
    from scalear.quickstart import PartResult

    report = write_report(tmp_path, [PartResult("core", "## Core\n\nbody\n", {}, 90.0)],
                          {"depth": "ValueError: boom"}, 150.0)
    text = report.read_text()
    assert "- **core**: 1.5 min" in text and "- **depth**: FAILED: `ValueError: boom`" in text
    assert "Wall time 2.5 min in all" in text and "## Core" in text
    assert "boom" in (tmp_path / "report.html").read_text()


def test_unknown_part_is_refused(tmp_path):
    from scalear.quickstart import run_quickstart

    with pytest.raises(SystemExit, match="unknown part"):
        run_quickstart(tmp_path, domain="core,nope")


def test_parts_run_in_parallel_workers_with_logs(tmp_path, monkeypatch):
    """The core and depth parts (fast) in two spawned workers: both sections in one report, one log per part,
    and each part's outputs. The output folder is relative, as the default ``scalear_runs/quickstart`` is (a
    relative folder once put every stage's export under Lightning's log folder: every part failed)."""
    from scalear.quickstart import run_quickstart

    monkeypatch.chdir(tmp_path.parent)
    assert run_quickstart(tmp_path.name, domain="core,depth", fast=True, jobs=2) == 0
    text = (tmp_path / "report.md").read_text()
    assert "## Core" in text and "## Depth" in text and "- **core**:" in text and "- **depth**:" in text
    for part in ("core", "depth"):
        assert (tmp_path / "logs" / f"{part}.log").stat().st_size > 0
    core = json.loads((tmp_path / "core" / "metrics.json").read_text())
    assert core["fast"] is True and 0 <= core["generated_recognised_as_class"] <= 1
    assert (tmp_path / "core" / "export" / "transformer" / "model.safetensors").is_file()
    depth = json.loads((tmp_path / "depth" / "metrics.json").read_text())
    assert len(depth["abs_rel_per_scale"]) == 4 and set(depth["middlebury"]) == {"metric (as predicted)", "median-scaled"}
    best_constant = next(v for k, v in depth["procedural_test"].items() if k.startswith("best constant"))
    assert 0 < best_constant["abs_rel"] < 1 and 0 < depth["procedural_test"]["DAR"]["abs_rel"]
    for pic in ("depth/procedural_input_truth_prediction.png", "depth/middlebury_input_truth_prediction.png",
                "core/samples.png", "depth/dar_curves.png"):
        assert pic in text and (tmp_path / pic).stat().st_size > 1000, pic
    assert (tmp_path / "depth" / "export" / "dar" / "model.safetensors").is_file()
