"""The depth CLI and what it stands on: the best constant predictor, predictor loading, the data modules,
``scalear depth predict`` on real photos (one corrupt), ``scalear depth eval`` on procedural / Middlebury /
NYU (.mat and folder) / KITTI files built in tmp, and on the real samples in ../shared/data when present.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

from scalear.datasets.depth import read_depth_png
from scalear.domains.depth.cli import main
from scalear.datasets.depth.data import DepthAugment, KittiDepthDataModule, NyuDepthDataModule
from scalear.domains.depth.metrics import crop_mask
from scalear.domains.depth.predict import backproject, default_intrinsics
from scalear.cli_files import unique_stems
from scalear.domains.depth.models import (
    ConstantDepthPredictor,
    DepthPredictor,
    fit_constant,
    load_predictor,
    weighted_median,
)
from scalear.io import register_model_kind, save_pretrained


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8-range images (a JPEG against the pixels it encoded), by kornia."""
    import kornia

    return float(kornia.metrics.psnr(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64),
                                     255.0))


# ------------------------------------------------------------------------------------------- constant baseline


def _abs_rel_per_image(c: np.ndarray, gts: list[np.ndarray]) -> np.ndarray:
    """AbsRel of constants ``c`` (K,), averaged per image as the protocol does."""
    return np.mean([(np.abs(g[None] - c[:, None]) / g[None]).mean(1) for g in gts], axis=0)


def test_weighted_median_minimises_weighted_l1() -> None:
    rng = np.random.default_rng(1)
    v, w = rng.uniform(0, 10, 31), rng.uniform(0.1, 3, 31)
    m = weighted_median(torch.from_numpy(v), torch.from_numpy(w)).item()
    grid = np.concatenate([v, np.linspace(0, 10, 5001)])
    cost = lambda c: (w * np.abs(v - c)).sum()  # noqa: E731
    assert cost(m) <= min(cost(c) for c in grid) + 1e-9
    assert weighted_median(torch.tensor([1.0, 2.0, 10.0]), torch.tensor([1.0, 1.0, 5.0])).item() == 10.0


def test_fit_constant_is_optimal_against_brute_force() -> None:
    rng = np.random.default_rng(0)
    samples, gts = [], []
    for n, (h, w) in enumerate([(6, 7), (9, 5), (4, 4)]):  # images of different sizes and depth scales
        d = rng.lognormal(np.log(2.0 + 3 * n), 0.6, (h, w)).astype(np.float32)
        d[0, :3] = 0  # invalid pixels
        samples.append({"depth": torch.from_numpy(d)[None], "valid": torch.from_numpy(d > 0)[None]})
        gts.append(d[d > 0].astype(np.float64))
    c = fit_constant(samples, "abs_rel")
    grid = np.linspace(0.5, 30, 60001)
    best = _abs_rel_per_image(grid, gts).min()
    assert _abs_rel_per_image(np.array([c]), gts)[0] <= best + 1e-9

    c_sq = fit_constant(samples, "sq_rel")
    sq = lambda cs: np.mean([((g[None] - cs[:, None]) ** 2 / g[None]).mean(1) for g in gts], axis=0)  # noqa: E731
    assert sq(np.array([c_sq]))[0] <= sq(grid).min() + 1e-9
    # the same from a loader of batches, and through the predictor
    loader = DataLoader([samples[0], samples[0]], batch_size=2)
    assert fit_constant(loader) == pytest.approx(fit_constant([samples[0]]))
    pred = ConstantDepthPredictor(c).predict_depth(torch.rand(2, 3, 5, 6))
    assert pred.shape == (2, 1, 5, 6) and torch.all(pred == torch.tensor(c, dtype=torch.float32))
    with pytest.raises(ValueError, match="no valid ground-truth"):
        fit_constant([{"depth": torch.zeros(1, 3, 3)}])


class _BrightnessDepth(nn.Module):
    """A test depth model: depth = 1 + 4 * (1 - gray) metres (one learnable-looking parameter)."""

    scalear_kind = "test_brightness_depth"

    def __init__(self, cfg: dict):
        super().__init__()
        self.cfg = cfg
        self.scale = nn.Parameter(torch.tensor(float(cfg["scale"])))

    def predict_depth(self, image_B3HW: torch.Tensor) -> torch.Tensor:
        return 1.0 + self.scale * (1.0 - image_B3HW.mean(1, keepdim=True))


class _NotDepth(nn.Module):
    scalear_kind = "test_not_depth"

    def __init__(self, cfg: dict):
        super().__init__()
        self.lin = nn.Linear(1, 1)


register_model_kind("test_brightness_depth", _BrightnessDepth, lambda m: m.cfg)
register_model_kind("test_not_depth", _NotDepth, lambda m: {})


def test_load_predictor_specs(tmp_path: Path) -> None:
    p = load_predictor("constant:2.5")
    assert isinstance(p, DepthPredictor) and p.depth == 2.5
    for bad in ("constant:abc", "constant:-1"):
        with pytest.raises(ValueError, match="constant:<metres>"):
            load_predictor(bad)
    with pytest.raises(FileNotFoundError, match="exported model folder"):
        load_predictor(tmp_path / "absent")
    save_pretrained(_BrightnessDepth({"scale": 4.0}), tmp_path / "m")
    m = load_predictor(tmp_path / "m")
    assert isinstance(m, _BrightnessDepth) and not m.training
    assert torch.allclose(m.predict_depth(torch.zeros(1, 3, 2, 2)), torch.full((1, 1, 2, 2), 5.0))
    save_pretrained(_NotDepth({}), tmp_path / "n")
    with pytest.raises(ValueError, match="no predict_depth"):
        load_predictor(tmp_path / "n")


# ------------------------------------------------------------------------------------------------------ predict


@pytest.fixture
def photos(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    import skimage.data

    folder = tmp_path / "photos"
    folder.mkdir()
    imgs = {"astronaut": skimage.data.astronaut()[::4, ::4], "coffee": skimage.data.coffee()[::4, ::3]}
    Image.fromarray(imgs["astronaut"]).save(folder / "astronaut.png")
    Image.fromarray(imgs["coffee"]).save(folder / "coffee.jpg", quality=95)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return folder, imgs


def test_predict_folder_writes_all_outputs_and_skips_corrupt(photos, tmp_path: Path, capsys) -> None:
    import trimesh

    folder, imgs = photos
    save_pretrained(_BrightnessDepth({"scale": 4.0}), tmp_path / "model")
    out = tmp_path / "out"
    K = (150.0, 140.0, 60.0, 70.0)
    rc = main(["predict", "--model", str(tmp_path / "model"), "--input", str(folder), "--out", str(out), "--ply",
               "--intrinsics", ",".join(map(str, K)), "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 1  # documented: 1 = some inputs skipped, the rest written
    assert "broken.jpg" in err and "skipped" in err
    assert not list(out.glob("broken*")) and not list(out.glob(".*"))  # nothing for the corrupt one, no temp files
    assert sorted(p.name for p in folder.iterdir()) == ["astronaut.png", "broken.jpg", "coffee.jpg"]  # inputs untouched
    for stem, img in imgs.items():
        H, W = img.shape[:2]
        names = [f"{stem}_depth_mm.png", f"{stem}_depth.npy", f"{stem}_depth_color.png", f"{stem}_side_by_side.jpg",
                 f"{stem}_depth.json", f"{stem}.ply"]
        assert all((out / n).is_file() for n in names), sorted(p.name for p in out.iterdir())
        d = np.load(out / f"{stem}_depth.npy")
        assert d.dtype == np.float32 and d.shape == (H, W) and 1.0 <= d.min() and d.max() <= 5.0 and d.std() > 0.1
        assert np.abs(read_depth_png(out / f"{stem}_depth_mm.png", "mm") - d).max() <= 0.0005 + 1e-6  # < 1 mm
        side = json.loads((out / f"{stem}_depth.json").read_text())
        assert side["png_scale_per_metre"] == 1000.0 and side["intrinsics"]["fx"] == K[0] and side["intrinsics"]["given"]
        color = np.array(Image.open(out / f"{stem}_depth_color.png"))
        preview = np.array(Image.open(out / f"{stem}_side_by_side.jpg")).astype(int)  # input | colour, JPEG
        src = np.array(Image.open(folder / ("astronaut.png" if stem == "astronaut" else "coffee.jpg")).convert("RGB"))
        assert preview.shape == (H, 2 * W, 3) and _psnr(preview, np.concatenate([src, color], 1)) > 35
        color = color.astype(float).sum(-1)
        near, far = np.unravel_index(d.argmin(), d.shape), np.unravel_index(d.argmax(), d.shape)
        assert color[near] > color[far]  # near = bright

        cloud = trimesh.load(out / f"{stem}.ply")
        assert len(cloud.vertices) == H * W and cloud.colors.shape[0] == H * W
        v, u = H // 3, W // 5  # a hand-picked pixel: vertex v * W + u (row-major)
        z = d[v, u]
        np.testing.assert_allclose(cloud.vertices[v * W + u], [(u - K[2]) * z / K[0], (v - K[3]) * z / K[1], z], rtol=1e-5)
        assert np.array_equal(cloud.colors[v * W + u, :3], src[v, u])


def test_predict_no_pictures_writes_the_same_depth_files_alone(photos, tmp_path: Path) -> None:
    folder, imgs = photos
    save_pretrained(_BrightnessDepth({"scale": 4.0}), tmp_path / "model")
    outs = {flag: tmp_path / f"out{len(flag)}" for flag in ((), ("--no-pictures",))}
    for flag, out in outs.items():
        assert main(["predict", "--model", str(tmp_path / "model"), "--input", str(folder), "--out", str(out),
                     "--quiet", "--device", "cpu", *flag]) == 1  # broken.jpg skipped
    full, bare = (sorted(p.name for p in out.iterdir()) for out in outs.values())
    assert bare == [n for n in full if not n.endswith(("_depth_color.png", "_side_by_side.jpg"))]
    assert len(bare) == 3 * len(imgs)
    for name in bare:  # the depth files are byte for byte those written with the pictures
        a, b = ((out / name).read_bytes() for out in outs.values())
        if name.endswith(".json"):
            a, b = (json.loads(x) for x in (a, b))
            assert a.pop("colormap") and "colormap" not in b
        assert a == b, name


def test_predict_single_file_default_intrinsics_and_refuses_input_folder(photos, tmp_path: Path, capsys) -> None:
    folder, imgs = photos
    out = tmp_path / "o"
    assert main(["predict", "--model", "constant:2", "--input", str(folder / "astronaut.png"), "--out", str(out),
                 "--quiet"]) == 0
    side = json.loads((out / "astronaut_depth.json").read_text())
    H, W = imgs["astronaut"].shape[:2]
    assert [side["intrinsics"][k] for k in ("fx", "fy", "cx", "cy")] == list(default_intrinsics(H, W)) == [1.2 * W, 1.2 * W, W / 2, H / 2]
    assert not (out / "astronaut.ply").exists()
    assert np.array_equal(np.array(Image.open(out / "astronaut_depth_mm.png")), np.full((H, W), 2000, np.uint16))

    before = sorted(p.name for p in folder.iterdir())
    assert main(["predict", "--model", "constant:2", "--input", str(folder / "*.png"), "--out", str(folder)]) == 2
    assert "never overwritten" in capsys.readouterr().err and sorted(p.name for p in folder.iterdir()) == before
    assert main(["predict", "--model", "constant:2", "--input", str(tmp_path / "nothing*.png"), "--out", str(out)]) == 2
    # far depths switch the PNG to KITTI's 1/256 m; --max-depth caps; shared stems get the extension
    assert main(["predict", "--model", "constant:70", "--input", str(folder / "astronaut.png"), "--out", str(out / "far"),
                 "--quiet"]) == 0
    assert json.loads((out / "far/astronaut_depth.json").read_text())["png_scale_per_metre"] == 256.0
    assert np.all(read_depth_png(out / "far/astronaut_depth_256.png", "kitti") == 70.0)
    assert main(["predict", "--model", "constant:70", "--max-depth", "1.5", "--input", str(folder / "astronaut.png"),
                 "--out", str(out / "cap"), "--quiet"]) == 0
    assert np.all(np.load(out / "cap/astronaut_depth.npy") == 1.5)
    assert unique_stems([Path("x/a.png"), Path("y/a.JPG"), Path("b.png")]) == ["x/a", "y/a", "b"]
    assert unique_stems([Path("x/a.png"), Path("x/a.JPG")]) == ["a_png", "a_jpg"]
    xyz, idx = backproject(np.array([[0.0, 2.0]], np.float32), (1.0, 1.0, 0.0, 0.0))
    assert idx.tolist() == [1] and xyz.tolist() == [[2.0, 0.0, 2.0]]


def _matplotlib_colorize(depth_HW: np.ndarray, cmap: str = "magma", vmin=None, vmax=None) -> np.ndarray:
    """The colour pictures as they were made before the table lookup: through matplotlib's colormap call."""
    import matplotlib

    valid = depth_HW > 0
    v = depth_HW[valid]
    lo = vmin if vmin is not None else (float(np.percentile(v, 2)) if v.size else 0.0)
    hi = vmax if vmax is not None else (float(np.percentile(v, 98)) if v.size else 1.0)
    t = np.clip((hi - depth_HW) / max(hi - lo, 1e-6), 0, 1) if hi > lo else np.full(depth_HW.shape, 0.5)
    rgb = matplotlib.colormaps[cmap](t)[..., :3]
    rgb[~valid] = 0
    return (rgb * 255).round().astype(np.uint8)


def test_colour_map_table_is_matplotlibs_pixel_for_pixel() -> None:
    import matplotlib

    from scalear.domains.depth.predict import colorize_depth
    from scalear.viz import colormap_lut

    built_in = colormap_lut("magma")
    assert built_in.shape == (256, 3) and not built_in.flags.writeable
    assert np.array_equal(built_in, (matplotlib.colormaps["magma"](np.arange(256))[:, :3] * 255).round().astype(np.uint8))
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        d = rng.uniform(0.1, 10, (61, 83)).astype(dtype)
        d[rng.random(d.shape) < 0.1] = 0
        d[0, :6] = [np.nan, np.inf, -1.0, 0.0, 1e9, 5.0]
        for cmap in ("magma", "viridis", "gray"):
            for kw in ({}, {"vmin": 1.0, "vmax": 5.0}, {"vmin": 3.0, "vmax": 3.0}):
                assert np.array_equal(colorize_depth(d, cmap, **kw), _matplotlib_colorize(d, cmap, **kw)), (dtype, cmap, kw)
    for flat in (np.zeros((4, 5), np.float32), np.full((4, 5), 2.0, np.float32)):
        assert np.array_equal(colorize_depth(flat), _matplotlib_colorize(flat))
    with pytest.raises(ValueError, match="unknown colour map"):
        colormap_lut("no-such-map")


def test_predict_batches_write_what_one_at_a_time_writes(photos, tmp_path: Path, capsys) -> None:
    """--batch-size 3 over two sizes and an unreadable file: each image's files are those of --batch-size 1 (byte
    for byte with a per-pixel model; up to float rounding of the batched arithmetic with DAR), and the colour
    pictures are the depth's colour map exactly."""
    from scalear.domains.depth.predict import colorize_depth

    folder, imgs = photos
    Image.fromarray(imgs["astronaut"][:, ::-1].copy()).save(folder / "mirrored.png")  # same size as astronaut.png
    save_pretrained(_BrightnessDepth({"scale": 4.0}), tmp_path / "bright")
    dar = pytest.importorskip("scalear.domains.depth.dar", reason="the DAR model is not in this checkout")
    torch.manual_seed(0)
    model = dar.create_dar("tiny")
    with torch.no_grad():  # away from the initialisation, whose depth is nearly constant
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    save_pretrained(model, tmp_path / "dar")
    for name in ("bright", "dar"):
        outs = {}
        for b in (1, 3):
            outs[b] = tmp_path / f"{name}_b{b}"
            rc = main(["predict", "--model", str(tmp_path / name), "--input", str(folder), "--out", str(outs[b]),
                       "--batch-size", str(b), "--quiet", "--device", "cpu"])
            assert rc == 1 and "broken.jpg" in capsys.readouterr().err
        one, three = (sorted(p.name for p in outs[b].iterdir()) for b in (1, 3))
        assert one == three and len(one) == 3 * 5
        for stem in ("astronaut", "mirrored", "coffee"):
            d1, d3 = (np.load(outs[b] / f"{stem}_depth.npy") for b in (1, 3))
            png1, png3 = (np.array(Image.open(outs[b] / f"{stem}_depth_mm.png")).astype(int) for b in (1, 3))
            if name == "bright":
                assert all((outs[1] / f).read_bytes() == (outs[3] / f).read_bytes() for f in one if f.startswith(stem))
            else:
                assert d1.std() > 1e-3
                np.testing.assert_allclose(d3, d1, rtol=1e-5)
                assert np.abs(png3 - png1).max() <= 1
            src = np.array(Image.open(next(folder.glob(f"{stem}.*"))).convert("RGB"))
            for b in (1, 3):
                d = np.load(outs[b] / f"{stem}_depth.npy")
                color = np.array(Image.open(outs[b] / f"{stem}_depth_color.png"))
                assert np.array_equal(color, colorize_depth(d)) and np.array_equal(color, _matplotlib_colorize(d))
                preview = np.array(Image.open(outs[b] / f"{stem}_side_by_side.jpg")).astype(int)
                assert _psnr(preview, np.concatenate([src, color], 1)) > 35  # a JPEG of input | colour
    with pytest.raises(SystemExit) as exit_:
        main(["predict", "--model", "constant:2", "--input", str(folder), "--out", str(tmp_path / "x"), "--batch-size", "0"])
    assert exit_.value.code == 2 and "--batch-size: must be a positive integer" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------------- eval


def _direct_abs_rel(c: float, samples: list[tuple[np.ndarray, np.ndarray]], lo: float, hi: float, crop: str = "none") -> float:
    """Mean over images of mean |gt - c| / gt over valid pixels in (lo, hi) inside the crop."""
    vals = []
    for d, valid in samples:
        m = valid & (d > lo) & (d < hi) & crop_mask(crop, *d.shape).numpy()  # type: ignore[arg-type]
        vals.append(np.mean(np.abs(d[m].astype(np.float64) - c) / d[m]))
    return float(np.mean(vals))


def test_eval_procedural_and_middlebury_constant(tmp_path: Path, capsys) -> None:
    from scalear.datasets.depth import load_middlebury_motorcycle
    from scalear.datasets.procedural_rgbd import ProceduralRGBDDataset

    rc = main(["eval", "--model", "constant:3", "--dataset", "procedural", "--size", "2", "--image-size", "16,24",
               "--out", str(tmp_path / "p.json"), "--quiet", "--device", "cpu"])
    out = capsys.readouterr().out
    assert rc == 0 and "AbsRel" in out and "SILog" in out and "2 images" in out
    doc = json.loads((tmp_path / "p.json").read_text())
    ds = ProceduralRGBDDataset("test", 2, (16, 24))
    direct = _direct_abs_rel(3.0, [(s["depth"][0].numpy(), s["valid"][0].numpy()) for s in ds], 0.1, 10.0)
    assert doc["metrics"]["abs_rel"] == pytest.approx(direct, rel=1e-9) and doc["dataset"] == "procedural"
    assert len(doc["per_image"]) == 2 and f"{doc['metrics']['abs_rel']:.3f}" in out

    assert main(["eval", "--model", "constant:2.75", "--dataset", "middlebury", "--out", str(tmp_path / "m.json"),
                 "--quiet"]) == 0
    doc = json.loads((tmp_path / "m.json").read_text())
    s = load_middlebury_motorcycle()
    direct = _direct_abs_rel(2.75, [(s["depth"][0].numpy(), s["valid"][0].numpy())], 1e-3, 10.0)
    assert doc["metrics"]["abs_rel"] == pytest.approx(direct, rel=1e-9) and doc["metrics"]["count"] == 1
    assert "AbsRel" in capsys.readouterr().out


def _nyu_frames(n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (n, 480, 640, 3), dtype=np.uint8)
    depths = rng.uniform(0.5, 10.0, (n, 480, 640)).astype(np.float32)
    depths[:, ::16, ::32] = rng.uniform(10.0, 12.0, (n, 30, 20))  # 0.2% beyond the 10 m cap (NYU holds no more)
    return images, np.round(depths * 1000) / 1000


def test_eval_nyu_folder_and_labeled_mat(tmp_path: Path, capsys) -> None:
    from test_depth_data import _write_nyu_mat

    images, depths = _nyu_frames(3)
    folder = tmp_path / "nyu"
    folder.mkdir()
    for i in range(2):  # DenseDepth test naming
        Image.fromarray(images[i]).save(folder / f"image_{i}.png")
        Image.fromarray(np.round(depths[i] * 1000).astype(np.uint16)).save(folder / f"depth_{i}.png")
    assert main(["eval", "--model", "constant:4", "--dataset", "nyu", "--data-root", str(folder),
                 "--out", str(tmp_path / "f.json"), "--quiet"]) == 0
    doc = json.loads((tmp_path / "f.json").read_text())
    direct = _direct_abs_rel(4.0, [(depths[i], depths[i] > 0) for i in range(2)], 1e-3, 10.0, "eigen_nyu")
    assert doc["metrics"]["abs_rel"] == pytest.approx(direct, rel=1e-6) and doc["config"]["crop"] == "eigen_nyu"

    _write_nyu_mat(tmp_path / "labeled.mat", images, depths, depths, ["a", "b", "c"])
    scipy.io.savemat(tmp_path / "splits.mat", {"trainNdxs": np.array([[1]]), "testNdxs": np.array([[2], [3]])})
    assert main(["eval", "--model", "constant:4", "--dataset", "nyu", "--data-root", str(tmp_path / "labeled.mat"),
                 "--split-file", str(tmp_path / "splits.mat"), "--out", str(tmp_path / "l.json"), "--quiet"]) == 0
    doc = json.loads((tmp_path / "l.json").read_text())
    direct = _direct_abs_rel(4.0, [(depths[i], depths[i] > 0) for i in (1, 2)], 1e-3, 10.0, "eigen_nyu")
    assert doc["metrics"]["abs_rel"] == pytest.approx(direct, rel=1e-6)
    assert [r["name"] for r in doc["per_image"]] == ["b/rgb_00001", "c/rgb_00002"]
    assert main(["eval", "--model", "constant:4", "--dataset", "nyu", "--data-root", str(tmp_path / "labeled.mat")]) == 2
    assert "needs --split-file" in capsys.readouterr().err


def test_eval_kitti_reports_frames_with_gt(tmp_path: Path, capsys) -> None:
    from test_depth_data import _kitti_tree

    _, gts = _kitti_tree(tmp_path)
    rc = main(["eval", "--model", "constant:20", "--dataset", "kitti", "--data-root", str(tmp_path),
               "--split-file", str(tmp_path / "split.txt"), "--out", str(tmp_path / "k.json"), "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0 and "2 of 3 listed frames have ground truth (1 without are left out)" in out
    doc = json.loads((tmp_path / "k.json").read_text())
    assert (doc["listed"], doc["without_gt"], doc["frames"]) == (3, 1, 2) and doc["config"]["crop"] == "garg"
    samples = [(gts[k] / 256.0, gts[k] > 0) for k in (1, 2)]
    assert doc["metrics"]["abs_rel"] == pytest.approx(_direct_abs_rel(20.0, samples, 1e-3, 80.0, "garg"), rel=1e-6)


def test_eval_kitti_flat_folder_annotated_and_velodyne(tmp_path: Path, capsys) -> None:
    """A flat rgb/ + depth/ folder and an image_2/ + velodyne/ + calib/ folder through the CLI, no split list."""
    from test_depth_data import _A, _B, _E, _flat_kitti_annotated, _write_bin, _write_object_calib

    gts = _flat_kitti_annotated(tmp_path / "ann")
    assert main(["eval", "--model", "constant:20", "--dataset", "kitti", "--data-root", str(tmp_path / "ann"),
                 "--out", str(tmp_path / "a.json"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "2 of 3 listed frames have ground truth (1 without are left out)" in out and "metres = v / 256" in out
    doc = json.loads((tmp_path / "a.json").read_text())
    samples = [(gts[k] / 256.0, gts[k] > 0) for k in ("a", "b")]
    assert doc["metrics"]["abs_rel"] == pytest.approx(_direct_abs_rel(20.0, samples, 1e-3, 80.0, "garg"), rel=1e-6)
    assert [r["name"] for r in doc["per_image"]] == ["a", "b"] and doc["config"]["crop"] == "garg"

    vel = tmp_path / "vel"
    (vel / "image_2").mkdir(parents=True)
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(vel / "image_2" / "000000.png")
    _write_bin(vel / "velodyne" / "000000.bin", [_A, _B, _E])  # camera z 5 m at row 28 col 22, 4 m at row 26 col 0
    _write_object_calib(vel / "calib" / "000000.txt")
    # Garg crop of 48x64: rows 19..46, cols 2..60, so only the 5 m point counts: |5 - 4| / 5
    assert main(["eval", "--model", "constant:4", "--dataset", "kitti", "--data-root", str(vel), "--gt", "velodyne",
                 "--out", str(tmp_path / "v.json"), "--quiet"]) == 0
    doc = json.loads((tmp_path / "v.json").read_text())
    assert doc["metrics"]["abs_rel"] == pytest.approx(0.2) and doc["per_image"][0]["pixels"] == 1
    assert "calib/000000.txt" in doc["ground_truth"] and "camera z" in doc["ground_truth"]
    # no crop: both points, (0.2 + 0) / 2
    assert main(["eval", "--model", "constant:4", "--dataset", "kitti", "--data-root", str(vel), "--gt", "velodyne",
                 "--crop", "none", "--out", str(tmp_path / "v.json"), "--quiet"]) == 0
    doc = json.loads((tmp_path / "v.json").read_text())
    assert doc["metrics"]["abs_rel"] == pytest.approx(0.1) and doc["config"]["crop"] == "none"

    capsys.readouterr()
    (vel / "calib" / "000000.txt").unlink()
    assert main(["eval", "--model", "constant:4", "--dataset", "kitti", "--data-root", str(vel), "--gt", "velodyne"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "000000.bin: no calibration to project it with" in err
    assert main(["eval", "--model", "constant:4", "--dataset", "kitti", "--data-root", str(tmp_path)]) == 2
    assert "a raw KITTI tree needs --split-file" in capsys.readouterr().err


def test_eval_range_warning_median_scaled_row_and_overrides(tmp_path: Path, capsys) -> None:
    """A model whose depth stops below the cap is scored with a warning; --median-scaling adds the scale-free
    row (hand-computed for a constant: pred = median(gt)); caps and crops can be overridden, bad ones refused."""
    dar = pytest.importorskip("scalear.domains.depth.dar", reason="the DAR model is not in this checkout")
    from test_depth_data import _flat_kitti_annotated

    gts = _flat_kitti_annotated(tmp_path / "ann")
    save_pretrained(dar.create_dar("tiny"), tmp_path / "dar")  # bins 0.1..10 m
    args = ["eval", "--dataset", "kitti", "--data-root", str(tmp_path / "ann"), "--quiet", "--device", "cpu"]
    assert main([*args, "--model", str(tmp_path / "dar"), "--out", str(tmp_path / "d.json")]) == 0
    captured = capsys.readouterr()
    assert "warning: the model predicts at most 10 m" in captured.err and "up to 80 m" in captured.err
    assert json.loads((tmp_path / "d.json").read_text())["warnings"][0].startswith("the model predicts at most 10 m")
    assert main([*args, "--model", str(tmp_path / "dar"), "--max-depth", "10"]) == 0
    assert "warning" not in capsys.readouterr().err  # scored within its range
    assert main([*args, "--model", "constant:20"]) == 0 and "warning" not in capsys.readouterr().err  # no range declared

    assert main([*args, "--model", "constant:20", "--median-scaling", "--crop", "none", "--min-depth", "2",
                 "--max-depth", "60", "--out", str(tmp_path / "m.json")]) == 0
    out = capsys.readouterr().out
    assert "metric\n" in out and "median-scaled\n" in out and out.count("AbsRel") == 2
    doc = json.loads((tmp_path / "m.json").read_text())
    assert doc["config"] == {"max_depth": 60.0, "min_depth": 2.0, "crop": "none", "median_scaling": False,
                             "median_of_ratios": False}
    samples = [(gts[k] / 256.0, gts[k] > 0) for k in ("a", "b")]
    assert doc["metrics"]["abs_rel"] == pytest.approx(_direct_abs_rel(20.0, samples, 2.0, 60.0), rel=1e-6)
    scaled = []
    for d, valid in samples:
        g = d[valid & (d > 2.0) & (d < 60.0)].astype(np.float64)
        scaled.append(np.mean(np.abs(g - np.median(g)) / g))  # 20 x median(g) / 20
    assert doc["median_scaled"]["metrics"]["abs_rel"] == pytest.approx(np.mean(scaled), rel=1e-6)
    assert doc["median_scaled"]["config"]["median_scaling"] is True

    assert main([*args, "--model", "constant:20", "--min-depth", "5", "--max-depth", "3"]) == 2
    assert "need 0 < min_depth < max_depth" in capsys.readouterr().err
    assert main([*args, "--model", "constant:20", "--crop", "eigen_nyu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs 480x640 ground truth, got 48x64" in err


# ------------------------------------------------------------------------------------------------ data modules


def test_data_modules_and_augment(tmp_path: Path) -> None:
    from test_depth_data import _kitti_tree

    images, depths = _nyu_frames(1)
    Image.fromarray(images[0]).save(tmp_path / "image_0.png")
    Image.fromarray(np.round(depths[0] * 1000).astype(np.uint16)).save(tmp_path / "depth_0.png")
    (tmp_path / "train.csv").write_text("image_0.png,depth_0.png\n")
    dm = NyuDepthDataModule(root=str(tmp_path), train_list=str(tmp_path / "train.csv"), batch_size=1,
                            crop_size=(64, 96), resize=(240, 320))
    b = next(iter(dm.test_dataloader()))
    assert b["image"].shape == (1, 3, 480, 640) and b["depth"].shape == (1, 1, 480, 640)
    t = next(iter(dm.train_dataloader()))
    assert t["image"].shape == (1, 3, 64, 96) and t["depth"].shape == (1, 1, 64, 96)
    assert t["focal"].item() == pytest.approx(518.8579 / 2)
    with pytest.raises(ValueError, match="exactly one"):
        NyuDepthDataModule()

    kroot = tmp_path / "kitti"
    _kitti_tree(kroot)
    kb = next(iter(KittiDepthDataModule(str(kroot), test_split=str(kroot / "split.txt")).test_dataloader()))
    assert kb["image"].shape[-2:] == kb["depth"].shape[-2:] and kb["name"] == ["2011_09_26/2011_09_26_drive_0002_sync 0000000001 l"]

    # flip and crop move image, depth and valid together
    img = torch.arange(2 * 5, dtype=torch.float32).reshape(1, 2, 5).expand(3, 2, 5) / 10
    s = {"image": img, "depth": img[:1] + 1, "valid": img[:1] > 0.05, "focal": 1.0, "name": "x"}
    g = torch.Generator().manual_seed(0)
    for _ in range(8):
        o = DepthAugment(crop_size=(2, 3), hflip=True, generator=g)(s)
        assert o["image"].shape == (3, 2, 3) and torch.equal(o["depth"], o["image"][:1] + 1)
        assert torch.equal(o["valid"], o["image"][:1] > 0.05)


# ------------------------------------------------------------------------------------------------ real samples


@pytest.mark.shared_data
def test_eval_real_nyu_and_kitti_samples(shared_data: Path, tmp_path: Path, capsys) -> None:
    assert main(["eval", "--model", "constant:3", "--dataset", "nyu", "--data-root", str(shared_data / "nyu/dense_test"),
                 "--out", str(tmp_path / "nyu.json"), "--quiet"]) == 0
    doc = json.loads((tmp_path / "nyu.json").read_text())
    assert doc["metrics"]["count"] == 7 and 0.2 < doc["metrics"]["abs_rel"] < 1.0

    folder = "2011_09_26/2011_09_26_drive_0001_sync"
    root = tmp_path / "kitti"
    (root / "2011_09_26").mkdir(parents=True)
    for f in ("calib_cam_to_cam.txt", "calib_velo_to_cam.txt"):
        (root / "2011_09_26" / f).symlink_to(shared_data / "kitti/calib_2011_09_26" / f)
    for name in ("0000000005", "0000000050"):
        for src, dst in (("rgb", f"{folder}/image_02/data"), ("depth", "2011_09_26_drive_0001_sync/proj_depth/groundtruth/image_02")):
            (root / dst).mkdir(parents=True, exist_ok=True)
            (root / dst / f"{name}.png").symlink_to(shared_data / "kitti/annotated" / src / f"{name}.png")
    (root / "split.txt").write_text(f"{folder} 5 l\n{folder} 50 l\n{folder} 50 r\n")  # the right image has no GT
    (root / folder / "image_03/data").mkdir(parents=True)
    (root / folder / "image_03/data/0000000050.png").symlink_to(shared_data / "kitti/annotated/rgb/0000000050.png")
    for kb in ([], ["--kb-crop"]):
        assert main(["eval", "--model", "constant:15", "--dataset", "kitti", "--data-root", str(root), "--split-file",
                     str(root / "split.txt"), "--out", str(tmp_path / "k.json"), "--quiet", *kb]) == 0
        assert "2 of 3 listed frames have ground truth" in capsys.readouterr().out
        doc = json.loads((tmp_path / "k.json").read_text())
        assert doc["metrics"]["count"] == 2 and 0.3 < doc["metrics"]["abs_rel"] < 2.0


@pytest.mark.shared_data
def test_eval_real_kitti_flat_folders(shared_data: Path, tmp_path: Path, capsys) -> None:
    """The real annotated pair folder and the real object-benchmark frame with its scan, as they are, end to end;
    the real scan with the real raw-data calibration given by --calib; the real KITTI pair named as NYU is refused
    by its range."""
    from scalear.datasets.depth import project_velodyne, read_velo_calibration, read_velodyne_bin

    kitti = shared_data / "kitti"
    assert main(["eval", "--model", "constant:15", "--dataset", "kitti", "--data-root", str(kitti / "annotated"),
                 "--out", str(tmp_path / "a.json"), "--quiet"]) == 0
    assert "2 of 2 listed frames have ground truth" in capsys.readouterr().out
    doc = json.loads((tmp_path / "a.json").read_text())
    samples = [(d, d > 0) for d in (read_depth_png(kitti / f"annotated/depth/{n}.png", "kitti") for n in ("0000000005", "0000000050"))]
    assert doc["metrics"]["count"] == 2
    assert doc["metrics"]["abs_rel"] == pytest.approx(_direct_abs_rel(15.0, samples, 1e-3, 80.0, "garg"), rel=1e-6)

    obj = kitti / "object_velodyne"
    assert main(["eval", "--model", "constant:15", "--dataset", "kitti", "--data-root", str(obj), "--gt", "velodyne",
                 "--out", str(tmp_path / "v.json"), "--quiet"]) == 0
    doc = json.loads((tmp_path / "v.json").read_text())
    d = project_velodyne(read_velodyne_bin(obj / "velodyne/000000.bin"), read_velo_calibration(obj / "calib/000000.txt").P, (370, 1224))
    assert doc["metrics"]["abs_rel"] == pytest.approx(_direct_abs_rel(15.0, [(d, d > 0)], 1e-3, 80.0, "garg"), rel=1e-6)
    assert 5_000 < doc["per_image"][0]["pixels"] < 20_000

    raw = tmp_path / "raw"
    (raw / "image_2").mkdir(parents=True)
    Image.fromarray(np.zeros((375, 1242, 3), np.uint8)).save(raw / "image_2" / "000000.png")
    (raw / "velodyne").mkdir()
    (raw / "velodyne" / "000000.bin").symlink_to(obj / "velodyne/000000.bin")
    assert main(["eval", "--model", "constant:15", "--dataset", "kitti", "--data-root", str(raw), "--gt", "velodyne",
                 "--calib", str(kitti / "calib_2011_09_26"), "--out", str(tmp_path / "r.json"), "--quiet"]) == 0
    doc = json.loads((tmp_path / "r.json").read_text())
    assert "calib_cam_to_cam.txt" in doc["ground_truth"] and 5_000 < doc["per_image"][0]["pixels"] < 20_000

    capsys.readouterr()
    nyu = tmp_path / "nyu"
    nyu.mkdir()
    (nyu / "image_0.png").symlink_to(kitti / "annotated/rgb/0000000005.png")
    (nyu / "depth_0.png").symlink_to(kitti / "annotated/depth/0000000005.png")
    assert main(["eval", "--model", "constant:3", "--dataset", "nyu", "--data-root", str(nyu), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "depth_0.png: read as 'mm' (metres = v / 1000)" in err and "NYU Depth v2" in err


# ---------------------------------------------------------------------------------------------------------- CLI


def test_depth_help_lists_verbs_and_fit_message(monkeypatch: pytest.MonkeyPatch) -> None:
    r = subprocess.run([sys.executable, "-m", "scalear.cli", "depth", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert all(v in r.stdout for v in ("predict", "eval", "fit"))
    from scalear.cli import domain_entry_points

    assert "depth" in domain_entry_points()
    import importlib.util

    if importlib.util.find_spec("scalear.domains.depth.training") is None:
        with pytest.raises(SystemExit, match="arrives with the DAR model"):
            main(["fit"])
    else:  # delegated to LightningCLI (run_lightning) with the rest of the command line
        import scalear.cli

        seen = []
        monkeypatch.setattr(scalear.cli, "run_lightning", lambda argv: seen.append(list(argv)))
        assert main(["fit", "--config", "x.yaml"]) == 0 and seen == [["fit", "--config", "x.yaml"]]


def test_exported_dar_model_through_predict_and_eval(photos, tmp_path: Path) -> None:
    dar = pytest.importorskip("scalear.domains.depth.dar", reason="the DAR model is not in this checkout")
    save_pretrained(dar.create_dar("tiny"), tmp_path / "dar")
    folder, imgs = photos
    assert main(["predict", "--model", str(tmp_path / "dar"), "--input", str(folder / "coffee.jpg"),
                 "--out", str(tmp_path / "o"), "--quiet", "--device", "cpu"]) == 0
    d = np.load(tmp_path / "o/coffee_depth.npy")
    assert d.shape == imgs["coffee"].shape[:2] and np.isfinite(d).all() and (d > 0).all()
    assert main(["eval", "--model", str(tmp_path / "dar"), "--dataset", "procedural", "--size", "1", "--image-size",
                 "16,24", "--out", str(tmp_path / "e.json"), "--quiet", "--device", "cpu"]) == 0
    assert json.loads((tmp_path / "e.json").read_text())["metrics"]["count"] == 1
