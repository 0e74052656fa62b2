"""The restoration part of `scalear quickstart`: wired end to end (fast mode: a few training steps per stage),
and, in full, meeting the bars it was measured to meet."""

import json

import numpy as np
import pytest
from PIL import Image

from scalear.datasets.restoration.degradations import EVAL_SUITE
from scalear.domains.restoration.quickstart import CLASSICAL, METHODS, NOISE_KEYS, run, tune


def test_tuning_picks_stronger_smoothing_for_stronger_noise():
    tv, _ = CLASSICAL["TV (tuned)"]
    w = tune(tv, (0.02, 0.05, 0.1, 0.2), ("noise15", "noise50"), 64)
    assert set(w) == {"noise15", "noise50"} and w["noise15"] < w["noise50"]
    bilateral, _ = CLASSICAL["bilateral (tuned)"]
    s = tune(bilateral, ((0.02, 1.5), (0.06, 1.5), (0.15, 1.5)), ("noise15", "noise50"), 64)
    assert s["noise15"][0] < s["noise50"][0]


def test_restoration_quickstart_fast(tmp_path, single_thread):
    md = run(tmp_path, fast=True)
    root = tmp_path / "restoration"
    m = json.loads((root / "metrics.json").read_text())
    assert list(m["heldout"]) == list(EVAL_SUITE) and m["fast"] is True
    for key, row in m["heldout"].items():
        expected = set(METHODS) if key in NOISE_KEYS else set(METHODS) - set(CLASSICAL)
        assert set(row) == expected, key
        assert all(np.isfinite(r["psnr"]) and 0 <= r["ssim"] <= 1 and r["count"] == 3 for r in row.values())
    n25 = m["heldout"]["noise25"]
    assert 18 < n25["degraded input"]["psnr"] < 23  # sigma 25/255 noise: ~20.2 dB before clipping
    assert n25["TV (tuned)"]["psnr"] > n25["degraded input"]["psnr"] + 3
    assert n25["bilateral (tuned)"]["psnr"] > n25["degraded input"]["psnr"] + 2
    assert set(m["seconds"]) >= {"prior_tokenizer", "prior_transformer", "varformer", "varformer_no_prior"}
    for name in ("export/varformer", "export_no_prior/varformer", "export/tokenizer", "export/transformer"):
        assert (root / name / "model.safetensors").is_file(), name
    for pic in ("noise25_degraded_restored_clean.png", "chelsea_all_degradations_degraded_restored_clean.png"):
        assert f"restoration/{pic}" in md
        with Image.open(root / pic) as im:
            assert im.mode == "RGB" and im.width > 3 * 64
    assert "| noise25 |" in md and "no prior" in md


@pytest.mark.slow
def test_restoration_quickstart_full_meets_the_bars(tmp_path, single_thread):
    """The full quickstart (STEPS: ~6.6 min on one CPU thread) on 256 px centre crops of the held-out photos.

    Measured (one thread, seed 0), noise25 PSNR: Varformer 28.22, no prior 28.12, tuned TV 27.88, tuned bilateral
    26.62, noisy input 20.57 dB. The issue's bars: >= 3 dB over the noisy input and above the tuned classical
    baselines (asserted with margins below the measured +7.65, +0.34 and +1.61 dB); the prior's gain over the
    ablation (+0.10 dB on noise25, +0.25 on noise15) is reported, too small for one seed to assert."""
    run(tmp_path)
    m = json.loads((tmp_path / "restoration" / "metrics.json").read_text())
    check_full_bars(m)


def check_full_bars(m: dict) -> None:
    n25 = m["heldout"]["noise25"]
    model, noisy, tv, bil = (n25[k]["psnr"] for k in ("Varformer", "degraded input", "TV (tuned)", "bilateral (tuned)"))
    print(f"\nnoise25 PSNR: Varformer {model:.2f}, noisy {noisy:.2f}, TV {tv:.2f}, bilateral {bil:.2f}, "
          f"no prior {n25['no prior']['psnr']:.2f}")
    assert model >= noisy + 6
    assert model >= tv + 0.15
    assert model >= bil + 1.0
    assert tv > noisy + 5 and bil > noisy + 4  # the baselines are tuned, not straw men
    for key in NOISE_KEYS:  # the model denoises every noise level of the suite
        row = m["heldout"][key]
        assert row["Varformer"]["psnr"] >= row["degraded input"]["psnr"] + 5, key
