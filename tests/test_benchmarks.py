"""Smoke tests of the benchmark scripts on their smallest settings: they run and print a table (no timing asserts)."""

import importlib
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    return importlib.import_module


def test_bench_sampling_runs(bench, capsys):
    results = bench("bench_sampling").main(["--sizes", "tiny", "--schedule", "digits", "--min-time", "0", "--repeats", "1"])
    assert [(r["size"], r["schedule"]) for r in results] == [("tiny", "digits")]
    assert results[0]["sec_cached"] > 0 and results[0]["sec_recompute"] > 0
    out = capsys.readouterr().out
    assert "KV cache vs recomputing" in out and "torch" in out and "peak" in out


def test_bench_tokenizer_runs(bench, capsys):
    results = bench("bench_tokenizer").main(["--presets", "tiny", "--min-time", "0", "--repeats", "1"])
    assert [r["preset"] for r in results] == ["tiny"]
    assert results[0]["sec_encode"] > 0 and results[0]["mib_decode"] >= 0
    assert "Tokenizer" in capsys.readouterr().out


def test_bench_depth_runs(bench, capsys):
    results = bench("bench_depth").main(["--presets", "tiny", "--min-time", "0", "--repeats", "1", "--size", "48,64"])
    assert [r["preset"] for r in results] == ["tiny"]
    assert results[0]["sec_per_image"] > 0 and results[0]["mib"] >= 0 and results[0]["params"] > 0
    out = capsys.readouterr().out
    assert "Depth inference" in out and "48x64" in out and "torch" in out


def test_bench_flags_are_checked(bench):
    with pytest.raises(SystemExit):
        bench("bench_sampling").parse_args(["--sizes", "huge"])
    with pytest.raises(SystemExit):
        bench("bench_tokenizer").parse_args(["--presets", "tiny,nope"])
    with pytest.raises(SystemExit):
        bench("bench_depth").parse_args(["--presets", "huge"])
    with pytest.raises(SystemExit):
        bench("bench_depth").parse_args(["--size", "480"])
    assert bench("bench_depth").parse_args([]).size == (480, 640)
