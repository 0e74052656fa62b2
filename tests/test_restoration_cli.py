"""``scalear restore``: predict on real files (8/16-bit PNG, JPEG, grey) with a corrupt one named and skipped,
inputs untouched, output folder checks, tiles, eval's per-degradation JSON, and fit through LightningCLI."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scalear.datasets.depth.io import png_bit_depth
from scalear.datasets.restoration.io import read_image, write_image
from scalear.domains.restoration.cli import main
from scalear.domains.restoration.varformer import create_varformer
from scalear.io import save_pretrained

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return save_pretrained(create_varformer("tiny"), tmp_path_factory.mktemp("model") / "varformer")


@pytest.fixture()
def photos(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    d = tmp_path / "photos"
    d.mkdir()
    rgb = rng.random((40, 56, 3)).astype(np.float32)
    write_image(d / "rgb8.png", rgb)
    write_image(d / "rgb16.png", rgb[:36, :44], bits=16)
    write_image(d / "photo.jpg", rgb[:30])
    Image.fromarray((rng.random((33, 47)) * 255).astype(np.uint8), mode="L").save(d / "grey.png")
    Image.fromarray((rng.random((20, 24)) * 65535).astype(np.uint16)).save(d / "grey16.png")
    (d / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 10)
    (d / "notes.txt").write_text("not an image")
    return d


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_predict_folder_writes_every_readable_image_and_names_the_bad_one(model_dir, photos, tmp_path, capsys):
    before = _digests(photos)
    out = tmp_path / "restored"
    rc = main(["--model", str(model_dir), "--input", str(photos), "--out", str(out), "--quiet", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 1 and "corrupt.png" in err
    assert _digests(photos) == before  # inputs untouched, nothing written next to them
    written = sorted(p.name for p in out.iterdir())
    assert written == ["grey16_restored.png", "grey_restored.png", "photo_restored.png", "rgb16_restored.png",
                       "rgb8_restored.png"]
    for name, src in [("rgb8", "rgb8.png"), ("rgb16", "rgb16.png"), ("photo", "photo.jpg"), ("grey", "grey.png"),
                      ("grey16", "grey16.png")]:
        y, x = read_image(out / f"{name}_restored.png"), read_image(photos / src)
        assert y.shape == x.shape and 0 <= y.min() and y.max() <= 1
    assert png_bit_depth(out / "rgb16_restored.png")[0] == 16 and png_bit_depth(out / "grey16_restored.png")[0] == 16
    assert png_bit_depth(out / "rgb8_restored.png")[0] == 8


def test_predict_batches_write_what_one_at_a_time_writes(model_dir, photos, tmp_path, capsys):
    """--batch-size 3 (mixed sizes, a grey image, a corrupt file, two images of one size): the outputs and the
    reported changes of --batch-size 1, up to float rounding of the batched arithmetic (one 8-bit level); an 8-bit
    PNG output holds what write_image writes, pixel for pixel."""
    from scalear.domains.restoration.predict import load_restorer, restore_files

    rng = np.random.default_rng(1)
    write_image(photos / "rgb8_b.png", rng.random((40, 56, 3)).astype(np.float32))  # the size of rgb8.png
    model = load_restorer(model_dir)
    inputs = sorted(p for p in photos.iterdir() if p.suffix != ".txt")
    reps = {b: restore_files(model, inputs, tmp_path / f"b{b}", progress=False, batch_size=b) for b in (1, 3)}
    capsys.readouterr()
    assert list(reps[1].written) == list(reps[3].written) == [str(p) for p in inputs if p.name != "corrupt.png"]
    assert list(reps[3].failed) == [str(photos / "corrupt.png")]
    for src, out in reps[1].written.items():
        a, b = (np.array(Image.open(tmp_path / f"b{k}" / out.name)).astype(int) for k in (1, 3))
        assert a.shape == b.shape and np.abs(a - b).max() <= 1, out.name
        assert reps[3].change[src] == pytest.approx(reps[1].change[src], abs=0.01)
    y = torch.from_numpy(read_image(photos / "rgb8.png")).permute(2, 0, 1)[None]
    from scalear.domains.restoration.predict import restore_image

    with torch.no_grad():
        write_image(tmp_path / "ref.png", restore_image(model, y)[0])
    assert np.array_equal(np.array(Image.open(tmp_path / "b1/rgb8_restored.png")), np.array(Image.open(tmp_path / "ref.png")))
    assert main(["--model", "identity", "--input", str(photos), "--out", str(tmp_path / "id"), "--batch-size", "4",
                 "--quiet"]) == 1
    assert np.array_equal(read_image(tmp_path / "id/rgb8_b_restored.png"), read_image(photos / "rgb8_b.png"))


def test_identity_with_tiles_reproduces_the_input_exactly(photos, tmp_path):
    out = tmp_path / "same"
    rc = main(["predict", "--model", "identity", "--input", str(photos / "rgb*.png"), "--out", str(out), "--tile", "16",
               "--overlap", "8", "--quiet"])
    assert rc == 0
    for stem in ("rgb8", "rgb16"):
        np.testing.assert_array_equal(read_image(out / f"{stem}_restored.png"), read_image(photos / f"{stem}.png"))


def test_varformer_tiled_and_whole_agree_and_output_folder_checks(model_dir, photos, tmp_path, capsys):
    assert main(["--model", str(model_dir), "--input", str(photos / "rgb8.png"), "--out", str(tmp_path / "a"),
                 "--tile", "32", "--overlap", "16", "--quiet"]) == 0
    assert read_image(tmp_path / "a" / "rgb8_restored.png").shape == (40, 56, 3)
    before = _digests(photos)
    assert main(["--model", str(model_dir), "--input", str(photos), "--out", str(photos), "--quiet"]) == 2
    assert "never overwritten" in capsys.readouterr().err and _digests(photos) == before
    assert main(["--model", str(model_dir), "--input", str(tmp_path / "none*.png"), "--out", str(tmp_path / "b")]) == 2
    assert main(["--model", str(photos), "--input", str(photos), "--out", str(tmp_path / "c")]) == 2
    assert "config.json" in capsys.readouterr().err
    assert main(["--model", "identity", "--input", str(photos), "--out", str(tmp_path / "d"), "--tile", "16",
                 "--overlap", "16"]) == 2
    assert "overlap" in capsys.readouterr().err and not (tmp_path / "d").exists()


def test_eval_prints_and_writes_metrics_per_degradation(tmp_path, capsys):
    out = tmp_path / "metrics.json"
    rc = main(["eval", "--model", "identity", "--degradations", "noise25,jpeg20", "--crop", "64", "--out", str(out),
               "--quiet"])
    text = capsys.readouterr().out
    assert rc == 0 and "noise25" in text and "PSNR" in text
    doc = json.loads(out.read_text())
    m = doc["metrics"]
    assert set(m) == {"noise25", "jpeg20", "average"} and m["noise25"]["count"] == 3
    assert 19.0 < m["noise25"]["psnr"] < 22.0  # sigma 25/255 Gaussian noise: ~20.2 dB before clipping
    assert len(doc["per_image"]) == 6
    assert main(["eval", "--model", "identity", "--degradations", "no_such_thing", "--quiet"]) == 2


def test_eval_on_a_paired_folder(tmp_path, capsys):
    rng = np.random.default_rng(1)
    for sub in ("input", "target"):
        (tmp_path / "bench" / sub).mkdir(parents=True)
    for i in range(2):
        clean = rng.random((24, 32, 3)).astype(np.float32)
        write_image(tmp_path / "bench" / "target" / f"{i}.png", clean)
        write_image(tmp_path / "bench" / "input" / f"{i}.png", np.clip(clean + 0.05, 0, 1))
    out = tmp_path / "paired.json"
    assert main(["eval", "--model", "identity", "--paired", str(tmp_path / "bench"), "--out", str(out), "--quiet"]) == 0
    m = json.loads(out.read_text())["metrics"]
    assert set(m) == {"bench", "average"} and m["bench"]["count"] == 2 and 25 < m["bench"]["psnr"] < 28
    assert main(["eval", "--model", "identity", "--paired", str(tmp_path / "bench"), "--degradations", "rain"]) == 2
    assert "--paired" in capsys.readouterr().err


def test_entry_points_reach_the_restore_verbs_and_the_model_kind(model_dir):
    r = subprocess.run([sys.executable, "-m", "scalear.cli", "restore", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "predict" in r.stdout and "eval" in r.stdout
    code = f"from scalear.io import from_pretrained; print(type(from_pretrained({str(model_dir)!r})).__name__)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)  # a fresh process: no import
    assert r.returncode == 0 and r.stdout.strip() == "Varformer", r.stderr


def test_fit_trains_and_exports(tmp_path):
    root = tmp_path / "run"
    rc = main(["fit", "--config", str(REPO / "configs/restoration/varformer_tiny.yaml"),
               "--model.init_args.prior_tokenizer", "null", "--model.init_args.prior_transformer", "null",
               "--model.init_args.model", "{use_prior: true, freeze: [tokenizer]}",
               "--trainer.max_steps", "2", "--trainer.val_check_interval", "2", "--trainer.log_every_n_steps", "1",
               "--trainer.enable_progress_bar", "false",
               "--trainer.default_root_dir", str(root), "--trainer.logger.init_args.save_dir", str(root),
               "--data.init_args.repeats", "1", "--data.init_args.val_degradations", "[noise25]",
               "--data.init_args.batch_size", "4"])
    assert rc == 0
    export = root / "export" / "varformer"  # the run folder's stable export, not under logs/version_N
    assert (export / "model.safetensors").is_file()
    header = (root / "logs" / "version_0" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"val/psnr", "val/ssim", "val/psnr_noise25", "train/l1", "train/tokens"} <= set(header)
    assert main(["--model", str(export), "--input", str(REPO / "configs"), "--out", str(tmp_path / "x"), "--quiet"]) == 2


# ------------------------------------------------------------------------------------ real benchmark layouts


def _psnr8(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR of two 8-bit-valued float images in [0, 1], by hand."""
    return float(10 * np.log10(1.0 / np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))


def test_eval_polyu_and_sidd_named_folders_of_real_files(shared_data, tmp_path, capsys):
    """The real noisy/clean pair of ../shared renamed as PolyU (one folder, *_real / *_mean) and as SIDD
    (scene folders, NOISY / GT) is scored as published; the identity's PSNR is the hand-computed one."""
    src = shared_data / "restoration" / "denoise"
    noisy, clean = src / "noisy_sigma25" / "00001.png", src / "clean" / "00001.png"
    expected = _psnr8(read_image(noisy), read_image(clean))
    assert expected == pytest.approx(20 * np.log10(255 / 23.9), abs=0.1)  # the manifest's measured noise std
    polyu = tmp_path / "PolyU" / "CroppedImages"
    polyu.mkdir(parents=True)
    (polyu / "Canon5D2_5_160_3200_chair_10_real.png").write_bytes(noisy.read_bytes())
    (polyu / "Canon5D2_5_160_3200_chair_10_mean.png").write_bytes(clean.read_bytes())
    sidd = tmp_path / "SIDD" / "0001_001_S6_00100_00060_3200_L"
    sidd.mkdir(parents=True)
    (sidd / "0001_NOISY_SRGB_010.PNG").write_bytes(noisy.read_bytes())
    (sidd / "0001_GT_SRGB_010.PNG").write_bytes(clean.read_bytes())
    for root in (tmp_path / "PolyU", tmp_path / "SIDD"):
        out = tmp_path / f"{root.name}.json"
        assert main(["eval", "--model", "identity", "--paired", str(root), "--out", str(out), "--quiet"]) == 0
        doc = json.loads(out.read_text())
        assert doc["metrics"]["noise"]["count"] == 1
        assert doc["metrics"]["noise"]["psnr"] == pytest.approx(expected, abs=1e-3)
        assert doc["per_image"][0]["gain"] == 0.0 and not doc["per_image"][0]["worse"]
    # a mean image without its noisy partner: named, with the flag that skips it
    (polyu / "Nikon800_4_100_3200_plug_11_mean.png").write_bytes(clean.read_bytes())
    assert main(["eval", "--model", "identity", "--paired", str(polyu), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Nikon800_4_100_3200_plug_11_mean.png" in err and "--unmatched skip" in err
    assert main(["eval", "--model", "identity", "--paired", str(polyu), "--unmatched", "skip", "--quiet"]) == 0
    assert "pairs 1" in capsys.readouterr().out


def test_eval_pair_rule_and_pair_dirs_for_other_namings(tmp_path, capsys):
    rng = np.random.default_rng(2)
    flat = tmp_path / "flat"
    flat.mkdir()
    expected = []
    for i in range(2):
        clean = rng.integers(0, 256, (24, 32, 3)).astype(np.float32) / 255
        noisy = np.clip(clean + rng.choice([-4, 4], clean.shape) / 255, 0, 1)
        write_image(flat / f"shot{i}.png", clean)
        write_image(flat / f"shot{i}_Noisy.png", noisy)
        expected.append(_psnr8(read_image(flat / f"shot{i}_Noisy.png"), read_image(flat / f"shot{i}.png")))
    assert main(["eval", "--model", "identity", "--paired", str(flat), "--quiet"]) == 2
    assert "--pair-rule DEGRADED:CLEAN" in capsys.readouterr().err
    out = tmp_path / "rule.json"
    assert main(["eval", "--model", "identity", "--paired", str(flat), "--pair-rule", "_noisy:", "--out", str(out),
                 "--quiet"]) == 0
    doc = json.loads(out.read_text())
    assert [r["name"] for r in doc["per_image"]] == ["shot0_Noisy", "shot1_Noisy"]
    assert [r["psnr"] for r in doc["per_image"]] == pytest.approx(expected, abs=1e-4)
    # two sub-folders no layout knows, named by --pair-dirs; the same folder twice takes the rule
    for sub in ("deg", "ref"):
        (tmp_path / "mine" / sub).mkdir(parents=True)
    write_image(tmp_path / "mine" / "deg" / "a.png", read_image(flat / "shot0_Noisy.png"))
    write_image(tmp_path / "mine" / "ref" / "a.png", read_image(flat / "shot0.png"))
    out = tmp_path / "dirs.json"
    assert main(["eval", "--model", "identity", "--paired", str(tmp_path / "mine"), "--pair-dirs", "deg:ref",
                 "--out", str(out), "--quiet"]) == 0
    assert json.loads(out.read_text())["metrics"]["deg"]["psnr"] == pytest.approx(expected[0], abs=1e-4)
    assert main(["eval", "--model", "identity", "--paired", str(tmp_path), "--pair-dirs", "flat:flat", "--pair-rule",
                 "_noisy:", "--quiet"]) == 0
    capsys.readouterr()
    for bad, msg in [(["--pair-rule", "_noisy"], "expected DEGRADED:CLEAN"), (["--pair-dirs", "deg"], "--pair-dirs 'deg'"),
                     (["--pair-dirs", "flat:flat"], "give a pair rule")]:
        assert main(["eval", "--model", "identity", "--paired", str(tmp_path if "flat:flat" in bad else flat), *bad,
                     "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and msg in err, err
    assert main(["eval", "--model", "identity", "--degradations", "noise25", "--pair-rule", "_a:_b", "--quiet"]) == 2
    assert "--paired folders only" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ grey in, grey out


def test_grey_input_gives_exactly_grey_output(model_dir, photos, shared_data, tmp_path):
    """The (untrained, so channel-mixing) Varformer drifts the channels of a grey input apart; the written
    restorations of grey files (8- and 16-bit, whole or tiled, a real Set12 photo) have equal channels."""
    from scalear.domains.restoration.predict import is_grey, load_restorer, restore_image

    model = load_restorer(model_dir)
    grey = torch.from_numpy(read_image(photos / "grey.png")).permute(2, 0, 1)[None]
    raw = model.restore(grey)
    assert (raw[:, 0] - raw[:, 1]).abs().max() > 1 / 255  # the model alone is not grey-preserving
    fixed = restore_image(model, torch.cat([grey, torch.rand_like(grey)]))
    assert is_grey(fixed).tolist() == [True, False]  # the colour image of the batch keeps its colours
    torch.testing.assert_close(fixed[0, 0], raw[0].mean(0))
    shutil.copy(shared_data / "restoration" / "clean" / "Set12" / "01.png", photos / "set12_01.png")
    for extra in ([], ["--tile", "24", "--overlap", "8"]):
        out = tmp_path / f"out{len(extra)}"
        assert main(["--model", str(model_dir), "--input", str(photos / "*grey*.png"), "--out", str(out), "--quiet",
                     *extra]) == 0
        names = ["grey_restored.png", "grey16_restored.png"]
        if not extra:  # the 256 px photo whole (in 24 px tiles it would take minutes)
            assert main(["--model", str(model_dir), "--input", str(photos / "set12_01.png"), "--out", str(out),
                         "--quiet"]) == 0
            names.append("set12_01_restored.png")
        for name in names:
            v = np.asarray(Image.open(out / name)) if name != "grey16_restored.png" else read_image(out / name)
            assert v.shape[2] == 3 and np.array_equal(v[..., 0], v[..., 1]) and np.array_equal(v[..., 1], v[..., 2])
            assert v.std() > 0  # not a flat image


# ------------------------------------------------------------------------------------ made worse: told


def test_eval_names_the_images_made_worse_and_predict_says_it_cannot_tell(model_dir, photos, tmp_path, capsys):
    from scalear.domains.restoration.predict import evaluate, load_restorer, restore_files

    class Halve:  # a "restorer" that halves the contrast: every image ends further from its clean original
        def restore(self, x):
            return 0.5 * x + 0.25

    clean = torch.full((1, 3, 16, 16), 0.5) + torch.linspace(-0.4, 0.4, 16)
    batch = {"degraded": clean + 0.02, "clean": clean, "degradation": ["noise"], "name": ["ramp"]}
    ev = evaluate(Halve(), [batch], progress=False)
    (r,) = ev.worse_than_input()
    mse = ((0.5 * (clean + 0.02) + 0.25 - clean) ** 2).mean().item()
    assert r["name"] == "ramp" and r["psnr"] == pytest.approx(-10 * np.log10(mse), abs=1e-3)
    assert r["input_psnr"] == pytest.approx(-20 * np.log10(0.02), abs=1e-3) and r["gain"] < 0
    # eval on clean photos ("none"): the identity changes nothing, the untrained Varformer makes both worse
    clean_dir = tmp_path / "clean"
    clean_dir.mkdir()
    for n in ("rgb8.png", "grey.png"):
        shutil.copy(photos / n, clean_dir / n)
    assert main(["eval", "--model", "identity", "--clean-dir", str(clean_dir), "--degradations", "none", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "worse than input" not in text and "gain" in text
    out = tmp_path / "m.json"
    assert main(["eval", "--model", str(model_dir), "--clean-dir", str(clean_dir), "--degradations", "none",
                 "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "worse than input: 2 of 2 image(s): grey (none, -inf dB), rgb8 (none, -inf dB)" in text
    doc = json.loads(out.read_text())
    assert doc["metrics"]["none"]["worse"] == 2 and all(r["worse"] for r in doc["per_image"])
    # predict has no reference: it says so, and how much the model changed the images (identity: nothing)
    rep = restore_files(load_restorer("identity"), [photos / "rgb8.png"], tmp_path / "p", progress=False)
    assert rep.change == {str(photos / "rgb8.png"): 0.0}
    assert main(["--model", str(model_dir), "--input", str(photos / "rgb8.png"), "--out", str(tmp_path / "q"),
                 "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "no reference: predict cannot tell whether the outputs are better" in text and "rgb8.png" in text
    y, x = read_image(tmp_path / "q" / "rgb8_restored.png"), read_image(photos / "rgb8.png")
    rms = float(np.sqrt(np.mean((y.astype(np.float64) - x) ** 2)) * 255)
    assert rms > 0.5 and f"{rms:.1f} to {rms:.1f} levels" in text
