"""The core quickstart end to end: real digits -> tokenizer -> class-conditional transformer -> samples that a
classifier trained on the real digits recognises as their class far above chance (10%)."""

import json

import pytest

from scalear.quickstart import quickstart_parts, run_core, write_report

#: measured with the default configs: see README "Results"; the test keeps a margin below it.
MIN_RECOGNISED = 0.80


@pytest.mark.parametrize("part", ["depth", "restoration", "sar3d", "g3pt"])
def test_each_domain_part_is_an_entry_point(part):
    assert part in quickstart_parts()


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

    report = write_report(tmp_path, [PartResult("core", "## Core\n\nbody\n", {}, 90.0),
                                     PartResult("depth", error="ValueError: boom")], 150.0)
    text = report.read_text()
    assert "- **core**: 1.5 min" in text and "- **depth**: FAILED: `ValueError: boom`" in text
    assert "Wall time 2.5 min in all" in text and "## Core" in text
    assert "boom" in (tmp_path / "report.html").read_text()


# fake parts for run_quickstart (targets "test_quickstart:<function>", importable in spawned workers too)
def _depth_part(out, fast):
    return "## Depth (fake)\n\nfirst run\n"


def _sar3d_part(out, fast):
    return "## SAR3D (fake)\n\nfirst run\n"


def _sar3d_part_again(out, fast):
    return "## SAR3D (fake)\n\nsecond run\n"


def _g3pt_part(out, fast):
    return "## G3PT (fake)\n\nfirst run\n"


def _failing_part(out, fast):
    raise ValueError("boom")


def _exiting_part(out, fast):
    raise SystemExit(2)  # as LightningCLI does on a bad config


def _fake_parts(monkeypatch, **functions: str) -> None:
    """Make ``run_quickstart`` see only these parts (``name=function of this module``)."""
    import scalear.quickstart as qs

    monkeypatch.setattr(qs, "quickstart_parts", lambda: {n: f"{__name__}:{f}" for n, f in functions.items()})


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_failed_part_is_reported_whatever_the_jobs(tmp_path, monkeypatch, jobs):
    """Failures (an exception, a CLI's SystemExit) are in the report with their traceback in the part's log,
    the other parts still run and are reported, and the exit code is 1, in-process (one job) as in workers."""
    from scalear.quickstart import run_quickstart

    _fake_parts(monkeypatch, depth="_depth_part", sar3d="_failing_part", g3pt="_exiting_part")
    assert run_quickstart(tmp_path, jobs=jobs) == 1
    text = (tmp_path / "report.md").read_text()
    assert "## Depth (fake)" in text and "- **depth**:" in text
    assert "- **sar3d**: FAILED: `ValueError: boom` (log: `logs/sar3d.log`)" in text
    assert "- **g3pt**: FAILED: `SystemExit: 2` (log: `logs/g3pt.log`)" in text
    assert "ValueError: boom" in (tmp_path / "logs" / "sar3d.log").read_text()
    assert "Traceback" in (tmp_path / "logs" / "g3pt.log").read_text()
    assert "ValueError: boom" in (tmp_path / "report.html").read_text()


def test_a_partial_run_updates_only_its_parts(tmp_path, monkeypatch):
    """Running some parts into an existing report replaces their sections and keeps the others, in the
    canonical order; a part that fails in the partial run loses its old section."""
    from scalear.quickstart import run_quickstart

    _fake_parts(monkeypatch, depth="_depth_part", sar3d="_sar3d_part", g3pt="_g3pt_part")
    assert run_quickstart(tmp_path, jobs=1) == 0
    _fake_parts(monkeypatch, depth="_failing_part", sar3d="_sar3d_part_again", g3pt="_failing_part")
    assert run_quickstart(tmp_path, domain="sar3d", jobs=1) == 0
    text = (tmp_path / "report.md").read_text()
    sections = [text.index(h) for h in ("## Depth (fake)", "## SAR3D (fake)", "## G3PT (fake)")]
    assert sections == sorted(sections) and text.count("## SAR3D") == 1
    assert "second run" in text.split("## SAR3D (fake)")[1].split("##")[0] and "first run" in text.split("## G3PT")[1]
    assert "The last run (sar3d) took" in text and "FAILED" not in text
    assert "second run" in (tmp_path / "report.html").read_text() and "G3PT (fake)" in (tmp_path / "report.html").read_text()

    assert run_quickstart(tmp_path, domain="depth", jobs=1) == 1
    text = (tmp_path / "report.md").read_text()
    assert "- **depth**: FAILED" in text and "## Depth (fake)" not in text
    assert "## SAR3D (fake)" in text and "## G3PT (fake)" in text and "- **g3pt**:" in text


def test_an_unreadable_report_sidecar_is_replaced_with_a_warning(tmp_path, monkeypatch):
    from scalear.quickstart import run_quickstart

    (tmp_path / "report.json").write_text("{not json")
    _fake_parts(monkeypatch, depth="_depth_part")
    with pytest.warns(UserWarning, match="report.json is unreadable"):
        assert run_quickstart(tmp_path, jobs=1) == 0
    assert "## Depth (fake)" in (tmp_path / "report.md").read_text()
    assert list(json.loads((tmp_path / "report.json").read_text())["parts"]) == ["depth"]


def test_html_report_keeps_code_blocks_tables_and_pictures():
    from scalear.quickstart import markdown_to_html

    md = ("## Part\n\nText with **bold** and `code`.\n\n```text\n| k | psnr |\n  indented  line\n```\n\n"
          "| a | b |\n|---|---|\n| 1 | 2 |\n\n![grid](core/grid.png)\n")
    html = markdown_to_html(md)
    assert "<pre><code class=\"language-text\">| k | psnr |\n  indented  line\n</code></pre>" in html
    assert "<table>" in html and "<td>1</td>" in html and '<img src="core/grid.png" alt="grid"' in html
    assert "<strong>bold</strong>" in html and "<h2>Part</h2>" in html


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
