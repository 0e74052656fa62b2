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


@pytest.mark.slow
def test_bench_tokenizer_compiles(bench, capsys):
    results = bench("bench_tokenizer").main(["--presets", "tiny", "--min-time", "0", "--repeats", "1", "--compile"])
    assert results[0]["sec_compile"] > 0 and results[0]["sec_decode"] > 0
    out = capsys.readouterr().out
    assert "torch.compile" in out and "compile s" in out


def test_bench_metrics3d_runs(bench, capsys):
    rows = bench("bench_metrics3d").main(["--points", "500", "--sets", "3", "--set-points", "64", "--min-time", "0",
                                          "--repeats", "1"])
    assert [r[0] for r in rows] == ["Chamfer (CD-L2)", "pairwise CD-L2 (COV/MMD/1-NNA)"]
    assert all(float(r[5]) < 1e-6 for r in rows)  # the KD-tree and dense results agree
    assert "KD-tree vs dense" in capsys.readouterr().out


def test_bench_vs_var_skips_without_a_checkout(bench, capsys):
    assert bench("bench_vs_var").main([]) == []
    assert "no --var-checkout" in capsys.readouterr().out


def test_bench_depth_runs(bench, capsys):
    results = bench("bench_depth").main(["--presets", "tiny", "--depthart-presets", "tiny", "--min-time", "0",
                                         "--repeats", "1", "--size", "48,64"])
    assert [(r["model"], r["preset"]) for r in results] == [("DAR", "tiny"), ("DepthART", "tiny")]
    assert all(r["sec_per_image"] > 0 and r["mib"] >= 0 and r["params"] > 0 for r in results)
    out = capsys.readouterr().out
    assert "Depth inference" in out and "48x64" in out and "torch" in out


def test_bench_depthart_runs(bench, capsys, tmp_path):
    """Both training modes end to end on a few scenes and steps (the real comparison: benchmarks/README.md)."""
    results = bench("bench_depthart").main(["--out", str(tmp_path), "--tokenizer-steps", "2", "--steps", "2",
                                            "--train-size", "16", "--val-size", "4", "--test-size", "2", "--threads", "1"])
    modes = {r["model"] for r in results if r["model"].startswith("DepthART")}
    assert modes == {"DepthART, teacher forcing", "DepthART, dynamic"}
    assert all(0 < r["abs_rel"] < 10 for r in results)
    assert "dynamic targets vs teacher forcing" in capsys.readouterr().out


def test_bench_flags_are_checked(bench):
    with pytest.raises(SystemExit):
        bench("bench_sampling").parse_args(["--sizes", "huge"])
    with pytest.raises(SystemExit):
        bench("bench_tokenizer").parse_args(["--presets", "tiny,nope"])
    with pytest.raises(SystemExit):
        bench("bench_depth").parse_args(["--presets", "huge"])
    with pytest.raises(SystemExit):
        bench("bench_depth").parse_args(["--depthart-presets", "tiny,huge"])
    with pytest.raises(SystemExit):
        bench("bench_depth").parse_args(["--size", "480"])
    assert bench("bench_depth").parse_args([]).size == (480, 640)
    with pytest.raises(SystemExit):
        bench("bench_depthart").parse_args(["--steps", "0"])


def test_bench_restoration_runs(bench, capsys):
    results = bench("bench_restoration").main(["--presets", "tiny", "--size", "40,52", "--min-time", "0",
                                               "--repeats", "1"])
    assert [(r["preset"], r["use_prior"]) for r in results] == [("tiny", True), ("tiny", False)]
    assert all(r["sec_per_image"] > 0 and r["mp_per_s"] > 0 and r["mib"] >= 0 for r in results)
    with_prior, without = results
    assert with_prior["params"] > without["params"] > 0  # the ablation drops the prior branch, DAE and AFT
    out = capsys.readouterr().out
    assert "Restoration throughput" in out and "40x52" in out and "MP/s" in out and "torch" in out


def test_bench_restoration_tiles_and_checks_flags(bench, capsys):
    mod = bench("bench_restoration")
    results = mod.main(["--presets", "tiny", "--size", "40,52", "--tile", "32", "--overlap", "8", "--no-ablation",
                        "--min-time", "0", "--repeats", "1"])
    assert [r["use_prior"] for r in results] == [True]
    assert "32 / 8" in capsys.readouterr().out
    assert mod.parse_args([]).size == (512, 512)
    for bad in (["--presets", "huge"], ["--size", "512"], ["--tile", "16", "--overlap", "16"], ["--batch", "0"]):
        with pytest.raises(SystemExit):
            mod.parse_args(bad)


def test_bench_sar3d_runs(bench, capsys):
    results = bench("bench_sar3d").main(["--presets", "tiny", "--condition", "class", "--resolution", "24",
                                         "--min-time", "0", "--repeats", "1"])
    assert [r["preset"] for r in results] == ["tiny"]
    r = results[0]
    assert r["sec_tokens"] > 0 and r["sec_decode"] > 0 and r["sec_mesh"] > 0
    assert r["sec_per_object"] == r["sec_tokens"] + r["sec_decode"] + r["sec_mesh"]
    out = capsys.readouterr().out
    assert "SAR3D generation time per object" in out and "0.82 s" in out
    mod = bench("bench_sar3d")
    for bad in (["--presets", "huge"], ["--resolution", "1"], ["--batch", "0"], ["--condition", "text"]):
        with pytest.raises(SystemExit):
            mod.parse_args(bad)


def test_bench_g3pt_runs(bench, capsys):
    mod = bench("bench_g3pt")
    results = mod.main(["--presets", "tiny", "--resolution", "16", "--min-time", "0", "--repeats", "1"])
    assert [r["preset"] for r in results] == ["tiny"]
    r = results[0]
    assert r["sec_tokens"] > 0 and r["sec_decode"] > 0 and r["sec_mesh"] > 0
    assert r["sec_per_shape"] == r["sec_tokens"] + r["sec_decode"] + r["sec_mesh"]
    assert "G3PT generation time per shape" in capsys.readouterr().out
    for bad in (["--presets", "huge"], ["--resolution", "1"], ["--batch", "0"]):
        with pytest.raises(SystemExit):
            mod.parse_args(bad)


def test_scaling_g3pt_runs(bench, capsys, tmp_path):
    """Three tiny widths, a few steps each on a handful of procedural shapes (the real table: benchmarks/README.md)."""
    import math

    mod = bench("scaling_g3pt")
    out = mod.main(["--quick", "--cache-dir", str(tmp_path), "--threads", "1"])
    rows = out["rows"]
    assert len(rows) == 3
    assert rows[0]["params"] < rows[1]["params"] < rows[2]["params"]
    assert all(math.isfinite(r["train_bce"]) and math.isfinite(r["val_bce"]) for r in rows)
    assert all(len(r["val_iou_levels"]) == len(r["val_bce_levels"]) == 4 and 0 <= r["val_iou"] <= 1 for r in rows)
    assert all(r["val_bce"] == r["val_bce_levels"][-1] for r in rows)
    assert math.isfinite(out["b"]) and out["a"] > 0
    text = capsys.readouterr().out
    assert "G3PT tokenizer scaling" in text and "N^-" in text
    with pytest.raises(SystemExit):
        mod.parse_args(["--widths", "32"])


def test_bench_cli_runs(bench, capsys):
    rows = bench("bench_cli").main(["--images", "2", "--size", "48,64", "--batch-sizes", "1,2", "--repeats", "1",
                                    "--threads", "1", "--no-process"])
    depth, bare = "scalear depth predict", "scalear depth predict --no-pictures"
    assert [(r[0], r[2]) for r in rows] == [(depth, "1"), (depth, "2"), (bare, "1"), (bare, "2"),
                                            ("scalear restore", "1"), ("scalear restore", "2")]
    assert all(float(r[3]) > 0 and float(r[4].replace(",", "")) > 0 for r in rows)
    assert "model vs command time per image" in capsys.readouterr().out


def test_gpu_checks_script_runs_the_benchmarks_with_arguments_they_accept(bench):
    """benchmarks/gpu_checks.sh (a device run) calls the benchmarks with flags they parse, and the fast-path tests."""
    import shlex
    import shutil
    import subprocess

    if shutil.which("bash") is None:
        pytest.skip("no bash")
    script = BENCH / "gpu_checks.sh"
    printed = subprocess.run(["bash", str(script), "run"], env={"DRY": "1", "PATH": "/usr/bin:/bin"},
                             capture_output=True, text=True, check=True).stdout.splitlines()
    commands = [shlex.split(line) for line in printed]
    scripts = [c[1] for c in commands if c[1].startswith("benchmarks/")]
    assert scripts == ["benchmarks/bench_sampling.py", "benchmarks/bench_vs_var.py", "benchmarks/bench_depth.py",
                       "benchmarks/bench_sar3d.py", "benchmarks/bench_g3pt.py", "benchmarks/bench_tokenizer.py"]
    for command in commands:
        if command[1].startswith("benchmarks/"):
            args = bench(Path(command[1]).stem).parse_args(command[2:])
            assert args.device == "cuda"
        else:
            assert command[-1] == "tests/test_sampling_fast.py" and (BENCH.parent / command[-1]).is_file()
    assert subprocess.run(["bash", str(script)], capture_output=True).returncode == 2  # usage


def test_generation_benchmarks_take_a_saved_sdf_grid(bench, capsys, tmp_path):
    """--sdf-grid: marching cubes on a saved grid (a GPU machine without open3d), refused at another resolution."""
    import numpy as np

    common = bench("_common")
    grid = common.procedural_sdf_grid(16)
    np.save(tmp_path / "chair.npy", grid)
    args = bench("bench_g3pt").parse_args(["--resolution", "16", "--sdf-grid", str(tmp_path / "chair.npy")])
    assert np.array_equal(common.load_sdf_grid(args), grid)
    args.resolution = 24
    with pytest.raises(SystemExit, match="not --resolution 24"):
        common.load_sdf_grid(args)
