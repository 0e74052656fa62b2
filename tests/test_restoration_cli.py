"""``scalear restore``: predict on real files (8/16-bit PNG, JPEG, grey) with a corrupt one named and skipped,
inputs untouched, output folder checks, tiles, eval's per-degradation JSON, and fit through LightningCLI."""

from __future__ import annotations

import hashlib
import json
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
