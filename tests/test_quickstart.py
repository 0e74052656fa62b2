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
