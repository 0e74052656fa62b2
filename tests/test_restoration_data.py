"""Restoration data: image reading (8/16-bit, grey/RGB, JPEG), benchmark pair layouts, on-the-fly pairs,
the built-in photo splits and the data module; end to end on real files written to tmp_path."""

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scalear.datasets.depth.io import ImageReadError
from scalear.datasets.restoration import ALL_IN_ONE, EVAL_SUITE
from scalear.datasets.restoration.data import (
    SKIMAGE_HELDOUT,
    SKIMAGE_TRAIN,
    DegradedDataset,
    ImageFolder,
    PairedFolderDataset,
    RestorationDataModule,
    SkimagePhotos,
    detect_layout,
    load_skimage_photo,
)
from scalear.datasets.restoration.io import read_image, write_image

pytestmark = pytest.mark.usefixtures("single_thread")
RNG = np.random.default_rng(0)


def rgb8(h: int = 24, w: int = 32) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def smooth8(h: int = 24, w: int = 32) -> np.ndarray:
    """A smooth colour image (JPEG keeps it well), different on every call."""
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    phase = RNG.uniform(0, 6, 3)
    return (127.5 + 100 * np.sin(3 * xx[..., None] + 2 * yy[..., None] + phase)).astype(np.uint8)


def save8(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, **({"quality": 95} if path.suffix == ".jpg" else {}))
    return path


def save16(path: Path, arr16: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_image(path, torch.from_numpy(arr16.astype(np.float32) / 65535).permute(2, 0, 1), bits=16)
    return path


# ----------------------------------------------------------------------------------------- reading images


def test_read_8bit_png_is_exact(tmp_path):
    a = rgb8()
    x = read_image(save8(tmp_path / "a.png", a))
    assert x.dtype == np.float32 and x.shape == (24, 32, 3)
    assert np.array_equal(np.round(x * 255).astype(np.uint8), a)


def test_read_16bit_rgb_png_keeps_16_bits(tmp_path):
    a16 = RNG.integers(0, 65536, (10, 12, 3)).astype(np.uint16)
    x = read_image(save16(tmp_path / "a16.png", a16))
    assert np.abs(x * 65535 - a16).max() < 0.01  # not truncated to 8 bits


def test_read_grey_8_and_16_bit_become_three_channels(tmp_path):
    g8 = RNG.integers(0, 256, (9, 11), dtype=np.uint8)
    x8 = read_image(save8(tmp_path / "g8.png", g8))
    g16 = RNG.integers(0, 65536, (9, 11)).astype(np.uint16)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    x16 = read_image(tmp_path / "g16.png")
    assert x8.shape == x16.shape == (9, 11, 3)
    assert np.array_equal(x8[..., 0], x8[..., 2]) and np.allclose(x8[..., 1] * 255, g8)
    assert np.allclose(x16[..., 1] * 65535, g16, atol=0.01)


def test_read_jpeg_and_rgba(tmp_path):
    a = np.repeat(np.linspace(0, 255, 32, dtype=np.uint8)[None], 24, 0)[..., None].repeat(3, 2)
    x = read_image(save8(tmp_path / "a.jpg", a))
    assert np.abs(x * 255 - a).mean() < 2
    rgba = np.concatenate([a, np.zeros_like(a[..., :1])], 2)
    assert np.allclose(read_image(save8(tmp_path / "a4.png", rgba)) * 255, a)  # alpha dropped, not composited


def test_corrupt_and_missing_images_are_named(tmp_path):
    good = save8(tmp_path / "a.png", rgb8())
    bad = tmp_path / "broken.png"
    bad.write_bytes(good.read_bytes()[:60])
    with pytest.raises(ImageReadError, match="broken.png"):
        read_image(bad)
    (tmp_path / "text.jpg").write_text("not an image")
    with pytest.raises(ImageReadError, match="text.jpg"):
        read_image(tmp_path / "text.jpg")
    with pytest.raises(FileNotFoundError, match="nope.png"):
        read_image(tmp_path / "nope.png")


# ----------------------------------------------------------------------------------------- paired layouts


def test_rain100l_layout_pairs_rain_to_norain_names(tmp_path):
    clean = {i: rgb8() for i in (1, 2, 3)}
    for i, c in clean.items():
        save8(tmp_path / "norain" / f"norain-{i:03d}.png", c)
        save8(tmp_path / "rainy" / f"rain-{i:03d}.png", 255 - c)
    ds = PairedFolderDataset(tmp_path)
    assert ds.layout.degraded == "rainy" and ds.degradation == "rain" and len(ds) == 3
    for k, s in enumerate(ds):
        assert s["name"] == f"rain-{k + 1:03d}"
        assert torch.allclose(s["clean"] * 255, torch.from_numpy(clean[k + 1]).permute(2, 0, 1).float(), atol=1e-3)
        assert torch.allclose(s["degraded"], 1 - s["clean"], atol=1e-6)


def test_sots_layout_maps_hazy_names_to_the_clear_id(tmp_path):
    c1, c2 = smooth8(), smooth8()
    save8(tmp_path / "clear" / "0001.png", c1)
    save8(tmp_path / "clear" / "0002.png", c2)
    for name, c in [("0001_0.8_0.2.jpg", c1), ("0001_0.9_0.16.jpg", c1), ("0002_1_0.08.jpg", c2)]:
        save8(tmp_path / "hazy" / name, c)
    ds = PairedFolderDataset(tmp_path)
    assert ds.degradation == "haze"
    assert [(p.degraded.name, p.clean.name) for p in ds.pairs] == [
        ("0001_0.8_0.2.jpg", "0001.png"), ("0001_0.9_0.16.jpg", "0001.png"), ("0002_1_0.08.jpg", "0002.png")]
    s = ds[2]
    assert (s["degraded"] - s["clean"]).abs().mean() < 0.02  # a JPEG of the same picture
    assert (ds[0]["clean"] - s["clean"]).abs().mean() > 0.1  # ... and not of the other one


def test_lol_layout_with_16bit_pngs(tmp_path):
    high = RNG.integers(0, 65536, (16, 20, 3)).astype(np.uint16)
    save16(tmp_path / "our485" / "high" / "1.png", high)
    save16(tmp_path / "our485" / "low" / "1.png", high // 8)
    ds = PairedFolderDataset(tmp_path / "our485")
    assert ds.degradation == "low_light"
    s = ds[0]
    assert torch.allclose(s["clean"] * 65535, torch.from_numpy(high.astype(np.float32)).permute(2, 0, 1), atol=0.02)
    assert torch.allclose(s["degraded"] * 65535, torch.from_numpy((high // 8).astype(np.float32)).permute(2, 0, 1), atol=0.02)


def test_gopro_sequences_and_blur_sharp_name_swap(tmp_path):
    for seq in ("GOPR0384_11_00", "GOPR0385_11_01"):
        for i in (1, 2):
            c = rgb8()
            save8(tmp_path / seq / "sharp" / f"{i:06d}.png", c)
            save8(tmp_path / seq / "blur" / f"{i:06d}.png", c // 2)
    ds = PairedFolderDataset(tmp_path, degradation="deblur")
    assert len(ds) == 4 and ds.degradation == "deblur"
    assert ds[3]["name"] == "GOPR0385_11_01/000002"
    assert torch.allclose(ds[0]["degraded"], (ds[0]["clean"] * 255 // 2) / 255, atol=1e-6)
    # the GoPro authors' example names differ by the word itself
    save8(tmp_path / "ex" / "blur" / "Istanbul_blur1.png", rgb8())
    save8(tmp_path / "ex" / "sharp" / "Istanbul_sharp1.png", rgb8())
    assert PairedFolderDataset(tmp_path / "ex").pairs[0].clean.name == "Istanbul_sharp1.png"


def test_explicit_folders_case_insensitive_detection_and_crops(tmp_path):
    c = rgb8(40, 50)
    save8(tmp_path / "Input" / "x.png", c)
    save8(tmp_path / "Target" / "X.png", c)
    ds = PairedFolderDataset(tmp_path, crop_size=(16, 24), hflip=True, seed=1)
    s = ds[0]
    assert s["clean"].shape == (3, 16, 24) and torch.equal(s["clean"], s["degraded"])  # same crop on both
    assert torch.equal(ds[0]["clean"], s["clean"])  # seeded
    save8(tmp_path / "mine" / "n" / "a.png", c)
    save8(tmp_path / "mine" / "c" / "a.png", c)
    ds = PairedFolderDataset(tmp_path / "mine", degraded_dir="n", clean_dir="c")
    assert ds.degradation == "n" and len(ds) == 1


def test_unmatched_files_are_named_or_skipped(tmp_path, caplog):
    save8(tmp_path / "low" / "1.png", rgb8())
    save8(tmp_path / "low" / "2.png", rgb8())
    save8(tmp_path / "high" / "1.png", rgb8())
    save8(tmp_path / "high" / "9.png", rgb8())
    with pytest.raises(ValueError, match=r"2 image\(s\) without .*low/2.png, high/9.png.*on_unmatched='skip'"):
        PairedFolderDataset(tmp_path)
    with caplog.at_level(logging.WARNING):
        ds = PairedFolderDataset(tmp_path, on_unmatched="skip")
    assert len(ds) == 1 and "low/2.png" in caplog.text


def test_bad_folders_and_bad_pairs_raise_naming_them(tmp_path):
    save8(tmp_path / "a" / "1.png", rgb8())
    save8(tmp_path / "b" / "1.png", rgb8())
    with pytest.raises(ValueError, match=r"no known degraded/clean layout among the sub-folders \['a', 'b'\].*"
                                         r"--pair-dirs DEGRADED:CLEAN.*--pair-rule"):
        detect_layout(tmp_path)
    with pytest.raises(ValueError, match="both degraded_dir and clean_dir"):
        PairedFolderDataset(tmp_path, degraded_dir="a")
    with pytest.raises(FileNotFoundError, match="'zz'"):
        PairedFolderDataset(tmp_path, degraded_dir="a", clean_dir="zz")
    save8(tmp_path / "b" / "2.png", rgb8(24, 30))
    save8(tmp_path / "a" / "2.png", rgb8(24, 32))
    (tmp_path / "a" / "3.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    save8(tmp_path / "b" / "3.png", rgb8())
    ds = PairedFolderDataset(tmp_path, degraded_dir="a", clean_dir="b")
    with pytest.raises(ValueError, match=r"size mismatch: .*a/2.png is \(24, 32\) but .*b/2.png is \(24, 30\)"):
        ds[1]
    with pytest.raises(ImageReadError, match="3.png"):
        ds[2]


def test_polyu_pairs_in_one_folder_real_to_mean(tmp_path):
    """PolyU's CroppedImages/ as published: <camera>_<scene>_real.JPG next to <camera>_<scene>_mean.JPG."""
    names = ["Canon5D2_5_160_3200_chair_10", "Nikon800_4_100_3200_plug_11"]
    means = {n: smooth8() for n in names}
    for n, m in means.items():
        save8(tmp_path / "CroppedImages" / f"{n}_mean.JPG", m)
        save8(tmp_path / "CroppedImages" / f"{n}_real.JPG", 255 - m)
    for root in (tmp_path / "CroppedImages", tmp_path):  # the folder itself, or the download's top folder
        ds = PairedFolderDataset(root)
        assert ds.layout.tokens == ("_real", "_mean") and ds.degradation == "noise"
        assert [(p.degraded.name, p.clean.name) for p in ds.pairs] == [(f"{n}_real.JPG", f"{n}_mean.JPG") for n in names]
    s = PairedFolderDataset(tmp_path / "CroppedImages")[1]
    assert s["name"] == f"{names[1]}_real"
    assert (s["degraded"] + s["clean"] - 1).abs().mean() < 0.02  # the JPEG of 255 - mean, paired with the mean


def test_sidd_pairs_in_scene_folders_noisy_to_gt(tmp_path):
    """SIDD Medium: one folder per scene holding <n>_NOISY_SRGB_<k>.PNG and <n>_GT_SRGB_<k>.PNG."""
    gts = {}
    for scene, n in (("0001_001_S6_00100_00060_3200_L", "0001"), ("0002_001_S6_00100_00020_3200_N", "0002")):
        for k in ("010", "011"):
            gts[scene, k] = rgb8()
            save8(tmp_path / scene / f"{n}_GT_SRGB_{k}.PNG", gts[scene, k])
            save8(tmp_path / scene / f"{n}_NOISY_SRGB_{k}.PNG", gts[scene, k] // 2)
    ds = PairedFolderDataset(tmp_path)
    assert ds.layout.tokens == ("NOISY", "GT") and len(ds) == 4
    assert ds.pairs[3].name == "0002_001_S6_00100_00020_3200_N/0002_NOISY_SRGB_011"
    assert ds.pairs[3].clean.name == "0002_GT_SRGB_011.PNG"
    s = ds[3]
    assert torch.allclose(s["clean"] * 255, torch.from_numpy(gts["0002_001_S6_00100_00020_3200_N", "011"]).permute(2, 0, 1).float(), atol=1e-3)
    assert torch.allclose(s["degraded"], (s["clean"] * 255 // 2) / 255, atol=1e-6)
    # a scene missing its ground truth is named, not silently dropped
    (tmp_path / "0001_001_S6_00100_00060_3200_L" / "0001_GT_SRGB_011.PNG").unlink()
    with pytest.raises(ValueError, match=r"1 image\(s\) without .*0001_NOISY_SRGB_011.PNG.*--unmatched skip"):
        PairedFolderDataset(tmp_path)
    assert len(PairedFolderDataset(tmp_path, on_unmatched="skip")) == 3


def test_custom_pair_rule_in_one_folder_and_across_sub_folders(tmp_path):
    c = {i: rgb8() for i in range(3)}
    for i, im in c.items():  # one folder: scene<i>_noisy.png next to scene<i>.png (an empty clean part)
        save8(tmp_path / "flat" / f"scene{i}.png", im)
        save8(tmp_path / "flat" / f"scene{i}_NOISY.png", 255 - im)
    with pytest.raises(ValueError, match="no known degraded/clean layout"):
        PairedFolderDataset(tmp_path / "flat")
    ds = PairedFolderDataset(tmp_path / "flat", pair_rule="_noisy:")
    assert [(p.degraded.name, p.clean.name) for p in ds.pairs] == [(f"scene{i}_NOISY.png", f"scene{i}.png") for i in c]
    assert ds.degradation == "flat" and torch.allclose(ds[2]["degraded"], 1 - ds[2]["clean"], atol=1e-6)
    # across sub-folders (and the same folder named twice): the rule maps the degraded names to the clean ones
    for i, im in c.items():
        save8(tmp_path / "sub" / "input" / f"img{i}_x4.png", im // 4)
        save8(tmp_path / "sub" / "target" / f"img{i}_hr.png", im)
    ds = PairedFolderDataset(tmp_path / "sub", pair_rule=("_x4", "_hr"))
    assert [p.clean.name for p in ds.pairs] == ["img0_hr.png", "img1_hr.png", "img2_hr.png"]
    assert len(PairedFolderDataset(tmp_path, "flat", "flat", pair_rule="_noisy:")) == 3
    with pytest.raises(ValueError, match="share the folder 'flat'; give a pair rule"):
        PairedFolderDataset(tmp_path, "flat", "flat")
    with pytest.raises(ValueError, match=r"pair rule '_real': expected DEGRADED:CLEAN"):
        PairedFolderDataset(tmp_path / "flat", pair_rule="_real")
    with pytest.raises(ValueError, match=r"pair rule ':_mean'"):
        PairedFolderDataset(tmp_path / "flat", pair_rule=":_mean")
    with pytest.raises(ValueError, match=r"the pair rule _blur:_sharp pairs no two images"):
        PairedFolderDataset(tmp_path / "flat", pair_rule="_blur:_sharp")


# ----------------------------------------------------------------------------------------- on-the-fly pairs


def test_clean_folder_degraded_on_the_fly(tmp_path):
    save8(tmp_path / "sub" / "grey.png", np.full((48, 64, 3), 128, np.uint8))
    save8(tmp_path / "b.jpg", rgb8(48, 64))
    folder = ImageFolder(tmp_path)
    assert [folder[i]["name"] for i in range(len(folder))] == ["b", "sub/grey"]
    ds = DegradedDataset(folder, "gaussian_noise:sigma=25", crop_size=32, repeats=3, seed=0)
    assert len(ds) == 6
    s = ds[1]
    assert s["degradation"] == "gaussian_noise:sigma=25" and s["clean"].shape == (3, 32, 32)
    assert torch.allclose(s["clean"], torch.full_like(s["clean"], 128 / 255))
    assert (s["degraded"] - s["clean"]).std().item() * 255 == pytest.approx(25, rel=0.1)
    assert torch.equal(ds[1]["degraded"], s["degraded"])  # seeded per index
    assert not torch.equal(ds[3]["degraded"], s["degraded"])  # the next pass differs
    other = DegradedDataset(folder, "gaussian_noise:sigma=25", crop_size=32, repeats=3, seed=1)
    assert not torch.equal(other[1]["degraded"], s["degraded"])
    with pytest.raises(ValueError, match="sub/grey: 48x64 image is smaller than the crop 50x50"):
        DegradedDataset(folder, "haze", crop_size=50)[1]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty: no images"):
        ImageFolder(tmp_path / "empty")


def test_skimage_splits_are_disjoint_named_real_photos():
    assert not set(SKIMAGE_TRAIN) & set(SKIMAGE_HELDOUT)
    held = SkimagePhotos("heldout")
    assert held.names == list(SKIMAGE_HELDOUT)
    for s in held:
        assert s["clean"].shape[0] == 3 and min(s["clean"].shape[1:]) >= 256
        assert 0.05 < s["clean"].std() and s["clean"].min() >= 0 and s["clean"].max() <= 1
    coins = load_skimage_photo("coins")  # a grey photo
    assert coins.shape[2] == 3 and np.array_equal(coins[..., 0], coins[..., 2])
    left, right = load_skimage_photo("motorcycle_left"), load_skimage_photo("motorcycle_right")
    assert left.shape == right.shape == (500, 741, 3) and not np.array_equal(left, right)
    with pytest.raises(ValueError, match="no photograph 'nope'"):
        load_skimage_photo("nope")


def test_data_module_batches_and_fixed_validation():
    dm = RestorationDataModule(batch_size=4, crop_size=48, val_crop_size=64, val_batch_size=6, repeats=2,
                               val_degradations=["noise25", "haze", "jpeg:quality=10"])
    dm.setup("fit")
    assert len(dm.dataset("train")) == 2 * len(SKIMAGE_TRAIN)
    b = next(iter(dm.train_dataloader()))
    assert set(b) == {"clean", "degraded", "degradation", "name"}
    assert b["clean"].shape == b["degraded"].shape == (4, 3, 48, 48)
    assert set(b["degradation"]) <= set(ALL_IN_ONE)
    v1, v2 = (next(iter(dm.val_dataloader())) for _ in range(2))
    assert torch.equal(v1["degraded"], v2["degraded"])
    labels = [s["degradation"] for s in dm.dataset("val")]
    assert labels == ["noise25"] * 3 + ["haze"] * 3 + ["jpeg:quality=10"] * 3
    assert (v1["degraded"][:3] - v1["clean"][:3]).std().item() * 255 == pytest.approx(25, rel=0.15)
    assert "noise25" in EVAL_SUITE
    with pytest.raises(ValueError, match="unknown degradation"):
        RestorationDataModule(val_degradations=["no_such_thing"])


def test_data_module_on_paired_folders(tmp_path):
    for split, n in (("train", 3), ("test", 2)):
        for i in range(n):
            c = rgb8(40, 40)
            save8(tmp_path / split / "sharp" / f"{i}.png", c)
            save8(tmp_path / split / "blur" / f"{i}.png", c // 2)
    dm = RestorationDataModule(train_paired=str(tmp_path / "train"), val_paired=str(tmp_path / "test"),
                               crop_size=16, val_crop_size=None, batch_size=2, val_batch_size=1)
    dm.setup("fit")
    b = next(iter(dm.train_dataloader()))
    assert b["clean"].shape == (2, 3, 16, 16) and b["degradation"] == ["motion_blur"] * 2
    v = next(iter(dm.val_dataloader()))
    assert v["clean"].shape == (1, 3, 40, 40)
    with pytest.raises(ValueError, match="not both"):
        RestorationDataModule(train_dir="a", train_paired="b")


# ----------------------------------------------------------------------------------------- real sample data


def test_shared_restoration_pairs(shared_data):
    root = shared_data / "restoration"
    rain = PairedFolderDataset(root / "derain")  # Rain100L, AirNet's input/ + target/
    s = rain[0]
    assert s["clean"].shape == (3, 320, 480)
    mse = (s["degraded"] - s["clean"]).pow(2).mean().item()
    assert 20 < -10 * np.log10(mse) < 32 and (s["degraded"] >= s["clean"] - 0.1).float().mean() > 0.95  # streaks brighten
    haze = PairedFolderDataset(root / "dehaze")
    assert [(p.degraded.name, p.clean.name) for p in haze.pairs] == [("0001_0.8_0.2.jpg", "0001.png")]
    h = haze[0]
    assert h["degraded"].mean() > h["clean"].mean()  # airlight brightens
    blur = PairedFolderDataset(root / "deblur")
    assert blur.degradation == "motion_blur" and blur.pairs[0].clean.name == "Istanbul_sharp1.png"
    with pytest.raises(ValueError, match="00002.png"):
        PairedFolderDataset(root / "denoise", "noisy_sigma25", "clean")
    noisy = PairedFolderDataset(root / "denoise", "noisy_sigma25", "clean", on_unmatched="skip")[0]
    assert (noisy["degraded"] - noisy["clean"]).std().item() * 255 == pytest.approx(23.9, abs=0.5)  # the manifest's value


def test_shared_clean_photos_read(shared_data):
    root = shared_data / "restoration" / "clean"
    folder = ImageFolder(root)
    assert [folder[i]["name"] for i in range(len(folder))] == ["McMaster/1", "McMaster/2", "Set12/01", "Set12/02"]
    grey = folder[2]["clean"]
    assert grey.shape == (3, 256, 256) and torch.equal(grey[0], grey[2])
    assert folder[0]["clean"].shape == (3, 500, 500)
    low = read_image(shared_data / "restoration" / "lowlight" / "low" / "22.png")
    assert low.max() * 255 == pytest.approx(78, abs=0.5)  # the manifest's max value
