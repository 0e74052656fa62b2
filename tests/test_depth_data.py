"""Depth data loaders: NYU (.mat v7.3, splits.mat, folder layouts, Kinect PGM), KITTI (split lists, annotated
PNGs, Velodyne projection with raw and object calib, KB crop), Middlebury Motorcycle, depth-PNG I/O.

Small files are written in each real format and checked value by value; the real samples in ../shared/data
are checked for plausible values (skipped without ../shared).
"""

from __future__ import annotations

import logging
import math
import pickle
import re
import shutil
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from scalear.datasets.depth import (
    ImageReadError,
    KittiDepthDataset,
    KittiFolderDataset,
    NyuFolderDataset,
    NyuLabeledDataset,
    check_depth_range,
    disparity_to_depth,
    generate_depth_map,
    kb_crop,
    kb_crop_offsets,
    kb_uncrop,
    load_middlebury_motorcycle,
    object_velo_to_image,
    project_velodyne,
    raw_velo_to_image,
    read_calib_file,
    read_depth_png,
    read_projection_file,
    read_velo_calibration,
    read_kinect_depth_pgm,
    read_nyu_file_list,
    read_nyu_splits,
    read_rgb,
    read_split_file,
    read_velodyne_bin,
    write_depth_png,
)
from scalear.datasets.depth.middlebury import MOTORCYCLE_CALIB, motorcycle_intrinsics
from scalear.datasets.depth.nyu import NYU_EIGEN_CROP, NYU_MAX_DEPTH

# ------------------------------------------------------------------------------------------- depth PNG I/O


def test_depth_png_roundtrip_mm_and_kitti(tmp_path: Path) -> None:
    depth = np.array([[1.234, 0.0, np.nan], [-1.0, 9.9995, 12.5]], dtype=np.float32)
    write_depth_png(tmp_path / "d_mm.png", depth, "mm")
    raw = np.array(Image.open(tmp_path / "d_mm.png"))
    assert Image.open(tmp_path / "d_mm.png").mode.startswith("I;16")
    assert raw.tolist() == [[1234, 0, 0], [0, 10000, 12500]]  # round(m * 1000); NaN and <= 0 -> 0
    np.testing.assert_allclose(read_depth_png(tmp_path / "d_mm.png", "mm"), [[1.234, 0, 0], [0, 10.0, 12.5]], atol=1e-6)

    write_depth_png(tmp_path / "d_kitti.png", depth, "kitti")
    assert np.array(Image.open(tmp_path / "d_kitti.png")).tolist() == [[316, 0, 0], [0, 2560, 3200]]  # round(m * 256)
    np.testing.assert_allclose(read_depth_png(tmp_path / "d_kitti.png", "kitti")[1], [0, 10.0, 12.5])
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # atomic: no temp files left


def test_depth_png_saturates_and_reads_foreign_16bit(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        write_depth_png(tmp_path / "far.png", np.array([[70.0, 1.0]]), "mm")
    assert "saturated" in caplog.text
    assert np.array(Image.open(tmp_path / "far.png")).tolist() == [[65535, 1000]]
    # a PNG written by someone else (KITTI's devkit writes uint16 PNGs the same way)
    Image.fromarray(np.array([[5120, 0, 65535]], dtype=np.uint16)).save(tmp_path / "k.png")
    np.testing.assert_allclose(read_depth_png(tmp_path / "k.png", "kitti"), [[20.0, 0.0, 65535 / 256]])


def test_depth_range_check_names_the_encoding_that_fits(tmp_path: Path) -> None:
    """NYU's millimetre PNGs read with KITTI's v / 256 come out 1000 / 256 = 3.9x too far; the reader says so,
    naming the file, the encoding assumed and the one that fits, instead of returning 2.7-25 m rooms."""
    depth_mm = np.linspace(700, 6500, 48 * 64).reshape(48, 64).astype(np.uint16)  # a 0.7..6.5 m room; > 2560 mm
    # reads beyond 10 m as v / 256: (6500 - 2560) / (6500 - 700) = 68% of the pixels
    (tmp_path / "nyu").mkdir()
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(tmp_path / "nyu" / "image_0.png")
    Image.fromarray(depth_mm).save(tmp_path / "nyu" / "depth_0.png")
    assert NyuFolderDataset(tmp_path / "nyu")[0]["depth"].max().item() == pytest.approx(6.5)  # mm: fine
    wrong = NyuFolderDataset(tmp_path / "nyu", depth_encoding="kitti")
    with pytest.raises(ImageReadError, match=re.escape(
            "depth_0.png: read as 'kitti' (metres = v / 256) its depths span 2.73..25.39 m, 68% of them beyond the "
            "10 m that NYU Depth v2 holds; as 'mm' (metres = v / 1000) they would span 0.70..6.50 m: wrong depth encoding?")):
        wrong[0]

    # the share allowed beyond the range: 1% of the valid pixels passes, 2% does not
    d = np.full((10, 11), 5.0, np.float32)
    d[:, 10] = 0  # invalid pixels do not count: 1 of 100 valid pixels beyond
    d[9, 9] = 11.0
    check_depth_range(d, "x.png", "mm", "NYU Depth v2", 10.0)
    d[9, 8] = 11.0
    with pytest.raises(ImageReadError, match=r"x.png: read as 'mm'.*2% of them beyond.*not a depth map of this dataset"):
        check_depth_range(d, "x.png", "mm", "NYU Depth v2", 10.0)
    # KITTI exported in millimetres and read as v / 256: beyond the LiDAR's 120 m
    folder, _ = _kitti_tree(tmp_path / "kitti")
    gt = tmp_path / "kitti" / "2011_09_26_drive_0002_sync/proj_depth/groundtruth/image_02/0000000001.png"
    Image.fromarray(np.linspace(5000, 60000, _H * _W).reshape(_H, _W).astype(np.uint16)).save(gt)
    with pytest.raises(ImageReadError, match=r"0000000001.png: read as 'kitti'.*beyond the 120 m that KITTI holds; as 'mm'"):
        KittiDepthDataset(tmp_path / "kitti", tmp_path / "kitti" / "split.txt")[0]


def test_depth_png_refuses_8bit_and_colour(tmp_path: Path) -> None:
    Image.fromarray(np.full((4, 5), 200, np.uint8)).save(tmp_path / "gray8.png")
    with pytest.raises(ImageReadError, match=r"must be 16-bit.*gray8\.png is 8-bit gray \(mode L\).*wrong depth encoding"):
        read_depth_png(tmp_path / "gray8.png", "mm")
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(ImageReadError, match=r"rgb\.png is 8-bit RGB"):
        read_depth_png(tmp_path / "rgb.png", "kitti")
    (tmp_path / "notpng.png").write_bytes(b"GIF89a....................")
    with pytest.raises(ImageReadError, match="not a PNG"):
        read_depth_png(tmp_path / "notpng.png", "mm")
    with pytest.raises(ValueError, match="unknown depth encoding"):
        read_depth_png(tmp_path / "gray8.png", "cm")  # type: ignore[arg-type]


def test_read_rgb_errors_name_the_file(tmp_path: Path) -> None:
    good = np.random.default_rng(0).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    Image.fromarray(good).save(tmp_path / "ok.png")
    assert np.array_equal(read_rgb(tmp_path / "ok.png"), good)
    Image.fromarray(good[..., 0]).save(tmp_path / "gray.png")
    assert read_rgb(tmp_path / "gray.png").shape == (6, 7, 3)

    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.jpg").write_bytes(b"this is not an image")
    for name in ("truncated.png", "garbage.jpg"):
        with pytest.raises(ImageReadError, match=re.escape(str(tmp_path / name))):
            read_rgb(tmp_path / name)
    Image.fromarray(np.zeros((4, 4), np.uint16)).save(tmp_path / "depth16.png")
    with pytest.raises(ImageReadError, match="depth16.png is mode I;16 — is this a depth map"):
        read_rgb(tmp_path / "depth16.png")
    with pytest.raises(FileNotFoundError, match="absent.png"):
        read_rgb(tmp_path / "absent.png")


# ---------------------------------------------------------------------------------------------------- NYU


def _write_nyu_mat(path: Path, images_NHW3: np.ndarray, depths_NHW: np.ndarray, raw_NHW: np.ndarray, scenes: list[str]) -> None:
    """A tiny nyu_depth_v2_labeled.mat: HDF5 with MATLAB's column-major (transposed) layout and sceneTypes refs."""
    with h5py.File(path, "w") as f:
        f["images"] = images_NHW3.transpose(0, 3, 2, 1)  # (N, 3, W, H), as h5py sees MATLAB's H x W x 3 x N
        f["depths"] = depths_NHW.transpose(0, 2, 1)  # (N, W, H)
        f["rawDepths"] = raw_NHW.transpose(0, 2, 1)
        refs = f.create_dataset("sceneTypes", (1, len(scenes)), dtype=h5py.ref_dtype)
        grp = f.create_group("#refs#")
        for i, s in enumerate(scenes):  # MATLAB chars: uint16 column (len, 1)
            grp[f"s{i}"] = np.array([[ord(c)] for c in s], dtype=np.uint16)
            refs[0, i] = grp[f"s{i}"].ref


@pytest.fixture
def nyu_mat(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    n, h, w = 3, 48, 64
    images = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    depths = rng.uniform(0.5, 9.0, (n, h, w)).astype(np.float32)
    raw = depths.copy()
    raw[:, :5] = 0  # holes
    images[1, 5, 40] = (11, 22, 33)  # a pixel to find after the transposition
    depths[1, 5, 40] = 7.25
    path = tmp_path / "nyu_depth_v2_labeled.mat"
    _write_nyu_mat(path, images, depths, raw, ["bathroom", "kitchen", "office"])
    return path, images, depths, raw


def test_nyu_labeled_mat_transposition_and_values(nyu_mat, tmp_path: Path) -> None:
    path, images, depths, raw = nyu_mat
    ds = NyuLabeledDataset(path, split="all")
    assert len(ds) == 3 and ds.hw == (48, 64)
    s = ds[1]
    assert s["image"].shape == (3, 48, 64) and s["depth"].shape == (1, 48, 64) and s["valid"].dtype == torch.bool
    assert torch.allclose(s["image"][:, 5, 40], torch.tensor([11, 22, 33]) / 255.0)
    assert s["depth"][0, 5, 40].item() == 7.25
    assert np.array_equal((s["image"] * 255).round().byte().permute(1, 2, 0).numpy(), images[1])
    assert np.array_equal(s["depth"][0].numpy(), depths[1])
    assert s["valid"].all() and s["name"] == "kitchen/rgb_00001" and s["focal"] == pytest.approx(518.8579)

    r = NyuLabeledDataset(path, split="all", depth_key="rawDepths")[2]
    assert not r["valid"][0, :5].any() and r["valid"][0, 5:].all()
    assert np.array_equal(r["depth"][0].numpy(), raw[2])
    # picklable after use (DataLoader workers reopen the file)
    ds2 = pickle.loads(pickle.dumps(ds))
    assert ds2[0]["name"] == "bathroom/rgb_00000"
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    assert batch["image"].shape == (3, 3, 48, 64) and batch["name"] == ["bathroom/rgb_00000", "kitchen/rgb_00001", "office/rgb_00002"]


def test_nyu_official_split_from_splits_mat_and_lists(nyu_mat, tmp_path: Path) -> None:
    path = nyu_mat[0]
    splits = tmp_path / "splits.mat"  # MATLAB v5, 1-based column vectors like the real file
    scipy.io.savemat(splits, {"trainNdxs": np.array([[1], [3]], np.uint16), "testNdxs": np.array([[2]], np.uint16)})
    assert {k: v.tolist() for k, v in read_nyu_splits(splits).items()} == {"train": [0, 2], "test": [1]}
    assert [s["name"] for s in NyuLabeledDataset(path, "test", splits)] == ["kitchen/rgb_00001"]
    assert [s["name"] for s in NyuLabeledDataset(path, "train", splits)] == ["bathroom/rgb_00000", "office/rgb_00002"]
    assert NyuLabeledDataset(path, [0, 2]).indices.tolist() == NyuLabeledDataset(path, [1, 3], one_based=True).indices.tolist()
    assert len(NyuLabeledDataset(path, "test", {"train": [0], "test": [1, 2]})) == 2

    with pytest.raises(ValueError, match="needs splits_file"):
        NyuLabeledDataset(path, "test")
    with pytest.raises(IndexError, match=r"\[1, 3\]"):
        NyuLabeledDataset(path, [4], one_based=True)
    with pytest.raises(ValueError, match="not an HDF5 file.*v7.3"):
        NyuLabeledDataset(splits, "all")  # a v5 .mat is not the labeled file
    with pytest.raises(ValueError, match="depth_key"):
        NyuLabeledDataset(path, "all", depth_key="depth")  # type: ignore[arg-type]


def test_nyu_folder_bts_list_densedepth_csv_and_scan(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(1)
    (tmp_path / "bathroom").mkdir()
    yy, xx = np.mgrid[0:48, 0:64]
    rgb = np.stack([xx * 4, yy * 5, np.full_like(xx, 128)], -1).astype(np.uint8)  # smooth, so JPEG keeps it
    Image.fromarray(rgb).save(tmp_path / "bathroom" / "rgb_00045.jpg", quality=95)
    depth_mm = rng.integers(500, 10000, (48, 64)).astype(np.uint16)
    depth_mm[0, :] = 0  # holes as in BTS sync_depth
    Image.fromarray(depth_mm).save(tmp_path / "bathroom" / "sync_depth_00045.png")
    lst = tmp_path / "test.txt"
    lst.write_text("bathroom/rgb_00045.jpg bathroom/sync_depth_00045.png 518.8579\nbathroom/rgb_00046.jpg None 518.8579")
    with caplog.at_level(logging.WARNING):
        ds = NyuFolderDataset(tmp_path, lst)
    assert len(ds) == 1 and ds.missing_gt == ["bathroom/rgb_00046.jpg"] and "1 of 2" in caplog.text
    s = ds[0]
    assert s["name"] == "bathroom/rgb_00045" and s["focal"] == 518.8579
    np.testing.assert_allclose(s["depth"][0].numpy(), depth_mm / 1000.0, rtol=1e-6)
    assert not s["valid"][0, 0].any() and s["valid"][0, 1:].all()
    assert (s["image"] * 255 - torch.from_numpy(rgb).permute(2, 0, 1)).abs().mean() < 3  # JPEG, lossy

    # DenseDepth: CSV list and scanning image_K/depth_K
    dd = tmp_path / "nyu2_test"
    dd.mkdir()
    for k in (0, 10, 2):
        Image.fromarray(rgb).save(dd / f"image_{k}.png")
        Image.fromarray(np.full((48, 64), 1000 + k, np.uint16)).save(dd / f"depth_{k}.png")
    scanned = NyuFolderDataset(dd)
    assert [it[3] for it in scanned.items] == ["image_0", "image_2", "image_10"]  # numeric order
    assert scanned[2]["depth"][0, 0, 0].item() == pytest.approx(1.010)
    csv = tmp_path / "nyu2_test.csv"
    csv.write_text("nyu2_test/image_2.png,nyu2_test/depth_2.png\n")
    assert read_nyu_file_list(csv) == [("nyu2_test/image_2.png", "nyu2_test/depth_2.png", None)]
    assert NyuFolderDataset(tmp_path, csv)[0]["depth"][0, 0, 0].item() == pytest.approx(1.002)

    (dd / "depth_10.png").unlink()
    with pytest.raises(FileNotFoundError, match="depth_10.png"):
        NyuFolderDataset(dd)


def test_kinect_pgm_little_endian_and_disparity_to_metres(tmp_path: Path) -> None:
    raw = np.array([[839, 2047, 1000], [1040, 900, 2047]], dtype="<u2")
    (tmp_path / "d.pgm").write_bytes(b"P5\n# NYU raw\n3 2\n65535\n" + raw.tobytes())
    d = read_kinect_depth_pgm(tmp_path / "d.pgm")
    expected = np.where(raw == 2047, 0.0, 351.3 / (1092.5 - raw.astype(np.float64)))
    np.testing.assert_allclose(d, expected, rtol=1e-6)
    assert d[0, 0] == pytest.approx(1.3858, abs=1e-4)  # 351.3 / 253.5
    with pytest.raises(ImageReadError, match="wrong byteorder"):
        read_kinect_depth_pgm(tmp_path / "d.pgm", byteorder="big")


# -------------------------------------------------------------------------------------------------- KITTI
# A synthetic rig small enough to compute by hand: f = 100, cx = 32, cy = 24, P_rect_02[0, 3] = 6 (a
# baseline term), R_rect_00 = diag(-1, -1, 1) (so a missing rectification would move every pixel), and the
# usual Velodyne -> camera axes (cam x = -velo y, cam y = -velo z, cam z = velo x) with T = (0, 0, -0.27).
_H, _W = 48, 64
_P_RECT_02 = np.array([[100.0, 0, 32, 6], [0, 100, 24, 0], [0, 0, 1, 0]])
_R_RECT_00 = np.diag([-1.0, -1.0, 1.0])
_R_VELO = np.array([[0.0, -1, 0], [0, 0, -1], [1, 0, 0]])
_T_VELO = np.array([0.0, 0.0, -0.27])


def _fmt(a: np.ndarray, spec: str = "%e") -> str:
    return " ".join(spec % x for x in np.ravel(a))


def _write_raw_calib(folder: Path) -> None:
    """calib_cam_to_cam.txt / calib_velo_to_cam.txt in KITTI's exact text layout."""
    folder.mkdir(parents=True, exist_ok=True)
    p00 = np.array([[90.0, 0, 30, 0], [0, 90, 20, 0], [0, 0, 1, 0]])  # must not be used for cam 2
    lines = ["calib_time: 09-Jan-2012 13:57:47", "corner_dist: 9.950000e-02"]
    for cam, p in ((0, p00), (2, _P_RECT_02)):
        lines += [
            f"S_0{cam}: {_fmt([1392, 512])}",
            f"K_0{cam}: {_fmt(np.eye(3))}",
            f"D_0{cam}: {_fmt(np.zeros(5))}",
            f"R_0{cam}: {_fmt(np.eye(3))}",
            f"T_0{cam}: {_fmt(np.zeros(3))}",
            f"S_rect_0{cam}: {_fmt([_W, _H])}",
            f"R_rect_0{cam}: {_fmt(_R_RECT_00 if cam == 0 else np.eye(3))}",
            f"P_rect_0{cam}: {_fmt(p)}",
        ]
    (folder / "calib_cam_to_cam.txt").write_text("\n".join(lines) + "\n")
    (folder / "calib_velo_to_cam.txt").write_text(
        f"calib_time: 15-Mar-2012 11:37:16\nR: {_fmt(_R_VELO)}\nT: {_fmt(_T_VELO)}\n"
        f"delta_f: {_fmt([0, 0])}\ndelta_c: {_fmt([0, 0])}\n"
    )


def _write_object_calib(path: Path) -> None:
    """The object benchmark's calib/XXXXXX.txt layout (P0-P3, R0_rect, Tr_velo_to_cam, Tr_imu_to_velo)."""
    tr = np.hstack([_R_VELO, _T_VELO[:, None]])
    rows = [f"P{i}: {_fmt(_P_RECT_02 if i == 2 else np.eye(3, 4), '%.12e')}" for i in range(4)]
    rows += [f"R0_rect: {_fmt(_R_RECT_00, '%.12e')}", f"Tr_velo_to_cam: {_fmt(tr, '%.12e')}", f"Tr_imu_to_velo: {_fmt(np.eye(3, 4), '%.12e')}"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(rows) + "\n\n")


def _write_bin(path: Path, points_N3: list[tuple[float, float, float]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pts = np.hstack([np.array(points_N3, dtype=np.float32), np.full((len(points_N3), 1), 0.5, np.float32)])
    pts.astype("<f4").tofile(path)


# Velodyne points (x fwd, y left, z up) and where they go, by hand: cam = R @ p + T, rect = diag(-1,-1,1) @ cam,
# (u, v) = ((100 X + 32 Z + 6) / Z, (100 Y + 24 Z) / Z), pixel = (round(u) - 1, round(v) - 1).
_A = (10.27, -1.0, 0.5)  # rect (-1, 0.5, 10): u 22.6, v 29.0 -> col 22, row 28, z 10
_B = (5.27, -0.5, 0.25)  # rect (-0.5, 0.25, 5): u 23.2, v 29.0 -> col 22, row 28, z 5 (nearer: kept)
_C = (-9.73, 0.85, -0.5)  # behind (x < 0): rect (0.85, -0.5, -10) would also land on col 22, row 28 with z -10
_D = (4.27, -1.324, 0.0)  # rect (-1.324, 0, 4): u 0.4 -> col -1: out (KITTI's 1-based rounding)
_E = (4.27, -1.284, 0.11)  # rect (-1.284, 0.11, 4): u 1.4, v 26.75 -> col 0, row 26, z 4
_F = (1.27, 0.0, 0.3)  # rect (0, 0.3, 1): v 54 -> row 53 >= 48: out


def _monodepth2_reference(points_N4: np.ndarray, P_velo2im: np.ndarray, hw: tuple[int, int], vel_depth: bool) -> np.ndarray:
    """monodepth2 kitti_utils.generate_depth_map after loading, line by line (with its Counter loop)."""
    velo = points_N4.astype(np.float64).copy()
    velo[:, 3] = 1.0
    velo = velo[velo[:, 0] >= 0, :]
    pts = np.dot(P_velo2im, velo.T).T
    pts[:, :2] = pts[:, :2] / pts[:, 2][..., None]
    if vel_depth:
        pts[:, 2] = velo[:, 0]
    pts[:, 0] = np.round(pts[:, 0]) - 1
    pts[:, 1] = np.round(pts[:, 1]) - 1
    ok = (pts[:, 0] >= 0) & (pts[:, 1] >= 0) & (pts[:, 0] < hw[1]) & (pts[:, 1] < hw[0])
    pts = pts[ok, :]
    depth = np.zeros(hw)
    depth[pts[:, 1].astype(int), pts[:, 0].astype(int)] = pts[:, 2]
    # monodepth2's sub2ind is row * (W - 1) + col - 1, which also merges pixel (r, W-1) with (r+1, 0); the true
    # linear index is used here, as in project_velodyne (they differ only in the edge columns)
    inds = pts[:, 1] * hw[1] + pts[:, 0]
    for dd in [item for item, count in Counter(inds).items() if count > 1]:
        p = np.where(inds == dd)[0]
        depth[int(pts[p[0], 1]), int(pts[p[0], 0])] = pts[p, 2].min()
    depth[depth < 0] = 0
    return depth


@pytest.mark.parametrize("order", [(_A, _B, _C, _D, _E, _F), (_F, _E, _D, _C, _B, _A)])
def test_velodyne_projection_hand_computed(tmp_path: Path, order) -> None:
    _write_raw_calib(tmp_path / "2011_09_26")
    _write_bin(tmp_path / "scan.bin", list(order))
    P_velo2im, hw = raw_velo_to_image(tmp_path / "2011_09_26", cam=2)
    assert hw == (_H, _W)
    np.testing.assert_allclose(P_velo2im, _P_RECT_02 @ np.diag([-1.0, -1, 1, 1]) @ np.vstack([np.hstack([_R_VELO, _T_VELO[:, None]]), [0, 0, 0, 1]]))

    depth = generate_depth_map(tmp_path / "2011_09_26", tmp_path / "scan.bin")
    assert depth.shape == (_H, _W) and depth.dtype == np.float32
    assert {tuple(map(int, rc)): round(float(depth[tuple(rc)]), 4) for rc in np.argwhere(depth > 0)} == {(28, 22): 5.0, (26, 0): 4.0}
    velx = generate_depth_map(tmp_path / "2011_09_26", tmp_path / "scan.bin", vel_depth=True)
    assert {tuple(map(int, rc)): round(float(velx[tuple(rc)]), 4) for rc in np.argwhere(velx > 0)} == {(28, 22): 5.27, (26, 0): 4.27}

    # without the x >= 0 filter the point behind would win the minimum and zero the pixel
    unfiltered = np.hstack([np.array([_C, _A], np.float64), np.ones((2, 1))]) @ P_velo2im.T
    assert [round(x) - 1 for x in unfiltered[:, 0] / unfiltered[:, 2]] == [22, 22]


def test_velodyne_projection_matches_monodepth2_loop(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    pts = np.hstack([rng.uniform(-2, 12, (4000, 1)), rng.uniform(-4, 4, (4000, 1)), rng.uniform(-1, 1, (4000, 1)), rng.uniform(0, 1, (4000, 1))])
    pts = np.vstack([pts, pts[:500] * [1, 1, 1, 1]])  # exact duplicates too
    _write_raw_calib(tmp_path)
    P, hw = raw_velo_to_image(tmp_path)
    for vel_depth in (False, True):
        ours = project_velodyne(pts, P, hw, vel_depth)
        ref = _monodepth2_reference(pts, P, hw, vel_depth)
        assert (ours > 0).sum() > 100
        np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-6)


def test_object_benchmark_calib_matches_raw(tmp_path: Path) -> None:
    _write_raw_calib(tmp_path / "raw")
    _write_object_calib(tmp_path / "calib" / "000000.txt")
    _write_bin(tmp_path / "velodyne" / "000000.bin", [_A, _B, _C, _D, _E, _F])
    P_obj = object_velo_to_image(tmp_path / "calib" / "000000.txt", cam=2)
    P_raw, hw = raw_velo_to_image(tmp_path / "raw")
    np.testing.assert_allclose(P_obj, P_raw, atol=1e-9)
    d = project_velodyne(read_velodyne_bin(tmp_path / "velodyne" / "000000.bin"), P_obj, hw)
    assert d[28, 22] == pytest.approx(5.0) and d[26, 0] == pytest.approx(4.0) and (d > 0).sum() == 2
    (tmp_path / "bad.bin").write_bytes(b"\0" * 20)
    with pytest.raises(ValueError, match="multiple of 4"):
        read_velodyne_bin(tmp_path / "bad.bin")
    with pytest.raises(KeyError, match="R0_rect"):
        (tmp_path / "c.txt").write_text("P2: " + _fmt(_P_RECT_02) + "\n")
        object_velo_to_image(tmp_path / "c.txt")


def test_calibration_layouts_focal_and_bare_projection(tmp_path: Path) -> None:
    """The three calibration layouts give one projection and the focal of P_rect_02 / P2 (100 px here); a bare
    12- or 16-number file is the whole chain (focal from its RQ decomposition)."""
    _write_raw_calib(tmp_path / "raw")
    _write_object_calib(tmp_path / "calib" / "000000.txt")
    raw = read_velo_calibration(tmp_path / "raw")
    obj = read_velo_calibration(tmp_path / "calib" / "000000.txt")
    assert (raw.focal, raw.hw, obj.focal, obj.hw) == (100.0, (_H, _W), 100.0, None)
    np.testing.assert_allclose(obj.P, raw.P, atol=1e-9)

    (tmp_path / "p12.txt").write_text(_fmt(raw.P, "%.12e") + "\n")
    (tmp_path / "p16.txt").write_text(_fmt(np.vstack([raw.P, [0, 0, 0, 1]]), "%.12e").replace(" ", ", "))
    for name in ("p12.txt", "p16.txt"):
        bare = read_velo_calibration(tmp_path / name)
        np.testing.assert_allclose(bare.P, raw.P, atol=1e-9)
        assert bare.focal == pytest.approx(100.0, rel=1e-9) and bare.hw is None and "bare projection" in bare.source
    # read as a key: value file, a bare projection used to give {} silently
    with pytest.raises(ValueError, match=r"p12.txt: no 'key: numbers' lines.*12 bare values.*read_projection_file"):
        read_calib_file(tmp_path / "p12.txt")
    (tmp_path / "p16bad.txt").write_text(_fmt(np.vstack([raw.P, [0, 0, 1, 1]])))
    with pytest.raises(ValueError, match=r"p16bad.txt: a 4x4 projection must end with the row 0 0 0 1"):
        read_projection_file(tmp_path / "p16bad.txt")
    (tmp_path / "p9.txt").write_text(_fmt(np.eye(3)))
    with pytest.raises(ValueError, match=r"p9.txt: 9 numbers"):
        read_velo_calibration(tmp_path / "p9.txt")


def test_wrong_projection_matrices_are_refused(tmp_path: Path) -> None:
    """A camera matrix or a rigid transform given as the Velodyne -> image projection, or a projection that puts
    no point in the image, is an error naming the file, not an all-zero depth map."""
    (tmp_path / "p2_only.txt").write_text(_fmt(_P_RECT_02))  # the camera's P2 without R0_rect @ Tr_velo_to_cam
    with pytest.raises(ValueError, match=r"p2_only.txt.*does not look along the Velodyne's forward x axis"):
        read_velo_calibration(tmp_path / "p2_only.txt")
    cam_axes = np.diag([-1.0, -1, 1]) @ _R_VELO  # velo -> rectified camera: a rigid transform, no pixels
    (tmp_path / "tr.txt").write_text(_fmt(np.vstack([np.hstack([cam_axes, _T_VELO[:, None]]), [0, 0, 0, 1]])))
    with pytest.raises(ValueError, match=r"tr.txt.*focal length is 1 pixels.*rigid transform"):
        read_velo_calibration(tmp_path / "tr.txt")

    _write_raw_calib(tmp_path / "raw")
    P, hw = raw_velo_to_image(tmp_path / "raw")
    pts = np.array([[*_A, 0.5], [*_B, 0.5]])
    shifted = P + np.array([[0, 0, 0, 5000.0], [0, 0, 0, 0], [0, 0, 0, 0]])  # every point 500+ px to the right
    with pytest.raises(ValueError, match=r"scan.bin: none of the 2 Velodyne points in front of the sensor lands in the 48x64 image"):
        project_velodyne(pts, shifted, hw, source="scan.bin")
    assert (project_velodyne(pts[:0], P, hw) == 0).all()  # an empty scan is empty, not an error


def test_split_lists_both_formats(tmp_path: Path) -> None:
    (tmp_path / "m.txt").write_text("2011_09_26/2011_09_26_drive_0002_sync 0000000069 l\n2011_09_26/2011_09_26_drive_0002_sync 54 r\n")
    a, b = read_split_file(tmp_path / "m.txt")
    assert (a.folder, a.frame, a.side, a.cam, a.date, a.drive) == (
        "2011_09_26/2011_09_26_drive_0002_sync", 69, "l", 2, "2011_09_26", "2011_09_26_drive_0002_sync")
    assert a.image_rel == "2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000069.png"
    assert b.image_rel.endswith("image_03/data/0000000054.png") and b.name.endswith("0000000054 r")
    (tmp_path / "b.txt").write_text(
        "2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000069.png "
        "2011_09_26_drive_0002_sync/proj_depth/groundtruth/image_02/0000000069.png 721.5377\n"
        "2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000075.png None 721.5377"
    )
    c, d = read_split_file(tmp_path / "b.txt")
    assert c.name == a.name and c.focal == 721.5377 and c.gt_rel.startswith("2011_09_26_drive_0002_sync/proj_depth")
    assert d.gt_none and d.gt_rel is None and d.frame == 75
    (tmp_path / "bad.txt").write_text("hello world\n")
    with pytest.raises(ValueError, match=r"bad.txt:1: not a KITTI split line"):
        read_split_file(tmp_path / "bad.txt")


def test_kb_crop_numpy_and_torch() -> None:
    assert kb_crop_offsets(375, 1242) == (23, 13) and kb_crop_offsets(370, 1224) == (18, 4)
    img = np.arange(375 * 1242 * 3).reshape(375, 1242, 3)
    c = kb_crop(img)
    assert c.shape == (352, 1216, 3) and c[0, 0, 0] == img[23, 13, 0] and c[-1, -1, -1] == img[374, 1228, 2]
    t = torch.rand(2, 1, 370, 1224)
    assert torch.equal(kb_crop(t), t[..., 18:370, 4:1220])
    full = kb_uncrop(kb_crop(t), (370, 1224))
    assert full.shape == t.shape and torch.equal(full[..., 18:, 4:1220], t[..., 18:, 4:1220]) and full[..., :18, :].abs().sum() == 0
    assert kb_uncrop(kb_crop(img[..., 0]), (375, 1242)).shape == (375, 1242)
    with pytest.raises(ValueError, match="at least 352x1216"):
        kb_crop(np.zeros((300, 1242)))


def _kitti_tree(root: Path, frames: tuple[int, ...] = (1, 2, 3)) -> tuple[str, dict[int, np.ndarray]]:
    """Raw layout with synthetic calib; annotated depth for frame 1 (BTS layout) and 2 (monodepth2 layout);
    Velodyne scans for frames 1 and 2; frame 3 has neither."""
    folder = "2011_09_26/2011_09_26_drive_0002_sync"
    _write_raw_calib(root / "2011_09_26")
    rng = np.random.default_rng(0)
    gts = {}
    for k in frames:
        img = root / folder / "image_02" / "data" / f"{k:010d}.png"
        img.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (_H, _W, 3), dtype=np.uint8)).save(img)
    for k, rel in ((1, "2011_09_26_drive_0002_sync"), (2, folder)):
        gt = rng.integers(0, 80 * 256, (_H, _W)).astype(np.uint16)
        gt[: _H // 2] = 0  # no GT in the upper half, like KITTI
        p = root / rel / "proj_depth" / "groundtruth" / "image_02" / f"{k:010d}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(gt).save(p)
        gts[k] = gt
        _write_bin(root / folder / "velodyne_points" / "data" / f"{k:010d}.bin", [_A, _B, _E])
    lines = "".join(f"{folder} {k:010d} l\n" for k in frames)
    (root / "split.txt").write_text(lines)
    return folder, gts


def test_kitti_dataset_annotated_with_missing_gt_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder, gts = _kitti_tree(tmp_path)
    with caplog.at_level(logging.WARNING):
        ds = KittiDepthDataset(tmp_path, tmp_path / "split.txt")
    assert len(ds) == 2 and ds.num_listed == 3
    assert ds.missing_gt == [f"{folder} 0000000003 l"]
    assert "1 of 3 frames have no annotated ground truth" in caplog.text and "2 remain" in caplog.text
    s = ds[0]
    assert s["image"].shape == (3, _H, _W) and 0 <= s["image"].min() and s["image"].max() <= 1
    np.testing.assert_allclose(s["depth"][0].numpy(), gts[1] / 256.0)
    assert torch.equal(s["valid"][0], torch.from_numpy(gts[1] > 0)) and not s["valid"][0, : _H // 2].any()
    assert s["focal"] == 100.0 and s["name"] == f"{folder} 0000000001 l"  # focal from P_rect_02
    np.testing.assert_allclose(ds[1]["depth"][0].numpy(), gts[2] / 256.0)  # found in monodepth2's layout

    kept = KittiDepthDataset(tmp_path, tmp_path / "split.txt", missing_gt="keep")
    assert len(kept) == 3 and not kept[2]["valid"].any() and kept[2]["depth"].abs().sum() == 0
    with pytest.raises(FileNotFoundError, match="1 of 3 frames have no annotated"):
        KittiDepthDataset(tmp_path, tmp_path / "split.txt", missing_gt="error")

    # BTS list: its "None" is honoured even if a file exists; its focal wins over the calib
    (tmp_path / "bts.txt").write_text(
        f"{folder}/image_02/data/0000000001.png 2011_09_26_drive_0002_sync/proj_depth/groundtruth/image_02/0000000001.png 721.5377\n"
        f"{folder}/image_02/data/0000000002.png None 721.5377\n"
    )
    bts = KittiDepthDataset(tmp_path, tmp_path / "bts.txt")
    assert len(bts) == 1 and bts.missing_gt == [f"{folder} 0000000002 l"] and bts[0]["focal"] == 721.5377

    (tmp_path / "split_bad.txt").write_text(f"{folder} 0000000009 l\n")
    with pytest.raises(FileNotFoundError, match="1 of 1 KITTI images not found"):
        KittiDepthDataset(tmp_path, tmp_path / "split_bad.txt")


def test_kitti_dataset_velodyne_gt(tmp_path: Path) -> None:
    _kitti_tree(tmp_path)
    ds = KittiDepthDataset(tmp_path, tmp_path / "split.txt", gt="velodyne", vel_depth=False)
    assert len(ds) == 2 and len(ds.missing_gt) == 1
    d = ds[0]["depth"][0]
    assert d[28, 22].item() == pytest.approx(5.0) and d[26, 0].item() == pytest.approx(4.0) and ds[0]["valid"].sum() == 2
    assert KittiDepthDataset(tmp_path, tmp_path / "split.txt", gt="velodyne")[0]["depth"][0, 28, 22].item() == pytest.approx(5.27)


def _flat_kitti_annotated(root: Path) -> dict[str, np.ndarray]:
    """rgb/ + depth/ pairs (Metric3D's kitti_demo layout): frames a and b with depth, c without, an orphan depth."""
    rng = np.random.default_rng(5)
    (root / "rgb").mkdir(parents=True)
    (root / "depth").mkdir()
    gts = {}
    for stem in ("a", "b", "c"):
        Image.fromarray(rng.integers(0, 256, (_H, _W, 3), dtype=np.uint8)).save(root / "rgb" / f"{stem}.png")
    for stem in ("a", "b", "orphan"):
        gts[stem] = rng.integers(0, 80 * 256, (_H, _W)).astype(np.uint16)
        Image.fromarray(gts[stem]).save(root / "depth" / f"{stem}.png")
    return gts


def test_kitti_flat_folder_annotated(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    gts = _flat_kitti_annotated(tmp_path)
    with caplog.at_level(logging.WARNING):
        ds = KittiFolderDataset(tmp_path)
    assert len(ds) == 2 and ds.num_listed == 3 and ds.missing_gt == ["c"] and ds.cam == 2
    assert "1 of 3 images have no annotated ground truth" in caplog.text and "1 ground-truth file(s) have no image" in caplog.text
    s = ds[1]
    assert s["name"] == "b" and math.isnan(s["focal"])  # no calibration: focal unknown, not made up
    np.testing.assert_allclose(s["depth"][0].numpy(), gts["b"] / 256.0)
    assert torch.equal(s["valid"][0], torch.from_numpy(gts["b"] > 0))
    assert "metres = v / 256" in ds.encoding
    assert KittiFolderDataset(tmp_path, focal=721.5377)[0]["focal"] == 721.5377
    _write_raw_calib(tmp_path)  # raw-data calibration next to the frames: its P_rect_02 focal
    assert KittiFolderDataset(tmp_path)[0]["focal"] == 100.0
    assert len(KittiFolderDataset(tmp_path, missing_gt="keep")) == 3
    with pytest.raises(FileNotFoundError, match="1 of 3 images have no annotated"):
        KittiFolderDataset(tmp_path, missing_gt="error")
    with pytest.raises(FileNotFoundError, match=r"no velodyne ground-truth folder; expected velodyne or velodyne_points"):
        KittiFolderDataset(tmp_path, gt="velodyne")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty: no image folder; expected one of rgb, image"):
        KittiFolderDataset(tmp_path / "empty")


def test_kitti_flat_folder_velodyne_each_calibration_layout(tmp_path: Path) -> None:
    """image_2/ + velodyne/ with the object benchmark's calib/, the raw-data files, or a bare projection: the
    hand-computed points land where they must (camera z: 5 m at row 28 col 22, 4 m at row 26 col 0)."""
    def folder(name: str) -> Path:
        root = tmp_path / name
        (root / "image_2").mkdir(parents=True)
        Image.fromarray(np.zeros((_H, _W, 3), np.uint8)).save(root / "image_2" / "000000.png")
        _write_bin(root / "velodyne" / "000000.bin", [_A, _B, _C, _D, _E, _F])
        return root

    obj = folder("object")
    _write_object_calib(obj / "calib" / "000000.txt")
    raw = folder("raw")
    _write_raw_calib(raw)
    bare = folder("bare")
    (tmp_path / "P.txt").write_text(_fmt(raw_velo_to_image(raw)[0], "%.12e"))
    for ds in (KittiFolderDataset(obj, gt="velodyne"), KittiFolderDataset(raw, gt="velodyne"),
               KittiFolderDataset(bare, gt="velodyne", calib=tmp_path / "P.txt")):
        s = ds[0]
        d = s["depth"][0]
        assert {tuple(map(int, rc)): round(d[tuple(rc)].item(), 4) for rc in torch.nonzero(d)} == {(28, 22): 5.0, (26, 0): 4.0}
        assert s["focal"] == pytest.approx(100.0) and s["name"] == "000000"
    assert KittiFolderDataset(obj, gt="velodyne", vel_depth=True)[0]["depth"][0, 28, 22].item() == pytest.approx(5.27)
    assert "projected with" in KittiFolderDataset(obj, gt="velodyne").encoding

    with pytest.raises(FileNotFoundError, match=r"000000.bin: no calibration to project it with"):
        KittiFolderDataset(bare, gt="velodyne")
    (tmp_path / "P2.txt").write_text(_fmt(_P_RECT_02))
    with pytest.raises(ValueError, match=r"P2.txt \(bare projection\).*forward x axis"):
        KittiFolderDataset(bare, gt="velodyne", calib=tmp_path / "P2.txt")
    Image.fromarray(np.zeros((_H + 2, _W, 3), np.uint8)).save(raw / "image_2" / "000000.png")
    with pytest.raises(ValueError, match=r"000000.png is 50x64 but .*calib_cam_to_cam.txt.* is for 48x64 images"):
        KittiFolderDataset(raw, gt="velodyne")[0]


# ---------------------------------------------------------------------------------------------- Middlebury


def test_middlebury_motorcycle_metric_depth() -> None:
    k = motorcycle_intrinsics()
    assert k["f"] == pytest.approx(994.978, abs=1e-3) and k["doffs"] == pytest.approx(31.086, abs=1e-3)  # skimage's docstring
    assert MOTORCYCLE_CALIB["cx1"] - MOTORCYCLE_CALIB["cx0"] == pytest.approx(MOTORCYCLE_CALIB["doffs"])
    s = load_middlebury_motorcycle()
    assert s["image"].shape == (3, 500, 741) and s["depth"].shape == (1, 500, 741) and s["right"].shape == (3, 500, 741)
    disp = s["disparity"].numpy()
    # hand-computed pixel: d = 48.999874 -> 193.001 mm * 994.97775 px / (48.999874 + 31.08575) px = 2397.8 mm
    assert disp[250, 370] == pytest.approx(48.999874, abs=1e-5)
    assert s["depth"][0, 250, 370].item() == pytest.approx(193.001 * 994.97775 / (48.999874 + 31.08575) / 1000, rel=1e-5)
    assert s["depth"][0, 250, 370].item() == pytest.approx(2.3978, abs=1e-3)
    # no disparity (inf) -> invalid; valid depths span the motorcycle (~2.1 m) to the back wall (~5 m)
    assert torch.equal(s["valid"][0], torch.from_numpy(np.isfinite(disp)))
    v = s["depth"][s["valid"]]
    assert 0.9 < s["valid"].float().mean() < 0.95
    assert 2.0 < v.min() < 2.3 and 4.8 < v.max() < 5.1 and 2.5 < v.median() < 3.0
    # full-resolution calibration with full-resolution disparity gives the same depth
    full = disparity_to_depth(disp[250:251, 370:371] * 4, MOTORCYCLE_CALIB["f"], MOTORCYCLE_CALIB["baseline_mm"], MOTORCYCLE_CALIB["doffs"])
    assert full[0, 0] == pytest.approx(s["depth"][0, 250, 370].item(), rel=1e-6)
    assert disparity_to_depth(np.array([[np.nan, np.inf, -40.0]]), 10.0, 100.0, 31.0).tolist() == [[0.0, 0.0, 0.0]]


# --------------------------------------------------------------------------------------- real shared data


@pytest.mark.shared_data
def test_real_kitti_split_lists(shared_data: Path) -> None:
    kitti = shared_data / "kitti"
    mono = read_split_file(kitti / "eigen_test_files.txt")
    bts = read_split_file(kitti / "eigen_test_files_with_gt.txt")
    bench = read_split_file(kitti / "eigen_benchmark_test_files.txt")
    assert len(mono) == len(bts) == 697 and len(bench) == 652
    assert [f.name for f in mono] == [f.name for f in bts]
    assert sum(f.gt_none for f in bts) == 45
    assert {f.name for f in bench} == {f.name for f in bts if not f.gt_none}
    assert {f.focal for f in bts if f.date == "2011_09_26"} == {721.5377}


@pytest.mark.shared_data
def test_real_kitti_annotated_depth_pngs(shared_data: Path, tmp_path: Path) -> None:
    for name in ("0000000005", "0000000050"):
        d = read_depth_png(shared_data / "kitti/annotated/depth" / f"{name}.png", "kitti")
        assert d.shape == (375, 1242)
        v = d[d > 0]
        assert 0.7 < (d == 0).mean() < 0.9  # mostly invalid
        assert not (d[:100] > 0).any()  # nothing above the LiDAR's field of view
        assert 1.0 < v.min() and v.max() < 90.0 and 5.0 < np.median(v) < 40.0

    # the real frames through KittiDepthDataset, in a raw-data layout built from links (drive name made up)
    folder = "2011_09_26/2011_09_26_drive_0001_sync"
    shutil.copytree(shared_data / "kitti/calib_2011_09_26", tmp_path / "2011_09_26")
    for name in ("0000000005", "0000000050"):
        for src, dst in (("rgb", f"{folder}/image_02/data"), ("depth", "2011_09_26_drive_0001_sync/proj_depth/groundtruth/image_02")):
            (tmp_path / dst).mkdir(parents=True, exist_ok=True)
            (tmp_path / dst / f"{name}.png").symlink_to(shared_data / "kitti/annotated" / src / f"{name}.png")
    (tmp_path / "split.txt").write_text(f"{folder} 5 l\n{folder} 50 l\n")
    ds = KittiDepthDataset(tmp_path, tmp_path / "split.txt", kb_crop=True)
    s = ds[1]
    assert s["image"].shape == (3, 352, 1216) and s["depth"].shape == (1, 352, 1216) and s["focal"] == pytest.approx(721.5377)
    full = read_depth_png(shared_data / "kitti/annotated/depth/0000000050.png", "kitti")
    assert np.array_equal(s["depth"][0].numpy(), full[23:, 13:1229])


@pytest.mark.shared_data
def test_real_kitti_raw_calibration(shared_data: Path) -> None:
    c2c = read_calib_file(shared_data / "kitti/calib_2011_09_26/calib_cam_to_cam.txt")
    assert "calib_time" not in c2c and c2c["P_rect_02"].reshape(3, 4)[0, [0, 2, 3]].tolist() == [721.5377, 609.5593, 44.85728]
    P, hw = raw_velo_to_image(shared_data / "kitti/calib_2011_09_26", cam=2)
    assert hw == (375, 1242)
    uvz = P @ np.array([10.0, 0.0, 0.0, 1.0])  # 10 m straight ahead of the Velodyne
    u, v, z = uvz[0] / uvz[2], uvz[1] / uvz[2], uvz[2]
    assert 600 < u < 630 and 160 < v < 190 and z == pytest.approx(9.73, abs=0.02)  # the camera sits 0.27 m ahead


@pytest.mark.shared_data
def test_real_kitti_object_velodyne_projects(shared_data: Path) -> None:
    obj = shared_data / "kitti/object_velodyne"
    image = read_rgb(obj / "image_2/000000.png")
    assert image.shape == (370, 1224, 3)
    pts = read_velodyne_bin(obj / "velodyne/000000.bin")
    assert pts.shape == (115384, 4)
    d = project_velodyne(pts, object_velo_to_image(obj / "calib/000000.txt", cam=2), image.shape[:2])
    v = d[d > 0]
    assert 15_000 < v.size < 25_000 and 3.5 < v.min() < 5 and 60 < v.max() < 80  # manifest: ~20,000, 4.2-72.7 m
    assert not (d[:100] > 0).any()  # the LiDAR sees nothing far above the horizon


@pytest.mark.shared_data
def test_real_kitti_flat_folders(shared_data: Path, tmp_path: Path) -> None:
    """The real annotated pair folder and the real object-benchmark frame load as they are; the real scan with
    the real raw-data calibration (2011_09_26) takes that calibration's focal."""
    kitti = shared_data / "kitti"
    ann = KittiFolderDataset(kitti / "annotated")
    assert [s["name"] for s in ann] == ["0000000005", "0000000050"] and not ann.missing_gt
    assert np.array_equal(ann[1]["depth"][0].numpy(), read_depth_png(kitti / "annotated/depth/0000000050.png", "kitti"))

    obj = KittiFolderDataset(kitti / "object_velodyne", gt="velodyne")
    s = obj[0]
    v = s["depth"][s["valid"]]
    assert s["focal"] == 707.0493 and s["image"].shape == (3, 370, 1224)
    assert 15_000 < v.numel() < 25_000 and 3.5 < v.min() < 5 and 60 < v.max() < 80  # manifest: ~20,000, 4.2-72.7 m

    (tmp_path / "image_2").mkdir()
    Image.fromarray(np.zeros((375, 1242, 3), np.uint8)).save(tmp_path / "image_2" / "000000.png")
    (tmp_path / "velodyne").mkdir()
    (tmp_path / "velodyne" / "000000.bin").symlink_to(kitti / "object_velodyne/velodyne/000000.bin")
    for f in ("calib_cam_to_cam.txt", "calib_velo_to_cam.txt"):
        (tmp_path / f).symlink_to(kitti / "calib_2011_09_26" / f)
    raw = KittiFolderDataset(tmp_path, gt="velodyne")[0]
    assert raw["focal"] == 721.5377 and 15_000 < int(raw["valid"].sum()) < 25_000


@pytest.mark.shared_data
def test_real_kitti_calibrations_focal_and_bare_export(shared_data: Path, tmp_path: Path) -> None:
    """Focal lengths from the real raw and object calibrations; the object calibration exported as a bare 3x4
    projection projects the real scan to the same depth map."""
    kitti = shared_data / "kitti"
    raw = read_velo_calibration(kitti / "calib_2011_09_26")
    assert raw.focal == 721.5377 and raw.hw == (375, 1242)
    obj = read_velo_calibration(kitti / "object_velodyne/calib/000000.txt")
    assert obj.focal == 707.0493 and obj.hw is None
    (tmp_path / "P_velo_to_img.txt").write_text(_fmt(obj.P, "%.17g"))
    bare = read_velo_calibration(tmp_path / "P_velo_to_img.txt")
    assert bare.focal == pytest.approx(707.0493, rel=1e-6)
    pts = read_velodyne_bin(kitti / "object_velodyne/velodyne/000000.bin")
    assert np.array_equal(project_velodyne(pts, bare.P, (370, 1224)), project_velodyne(pts, obj.P, (370, 1224)))
    # the object's P2 alone, as a bare file: refused by name instead of projecting nothing
    (tmp_path / "P2.txt").write_text(" ".join(map(str, read_calib_file(kitti / "object_velodyne/calib/000000.txt")["P2"])))
    with pytest.raises(ValueError, match=r"P2.txt.*forward x axis"):
        read_velo_calibration(tmp_path / "P2.txt")


@pytest.mark.shared_data
def test_real_nyu_samples(shared_data: Path) -> None:
    nyu = shared_data / "nyu"
    dense = NyuFolderDataset(nyu / "dense_test")
    assert len(dense) == 7
    for s in (dense[0], dense[5]):
        assert s["image"].shape == (3, 480, 640) and s["valid"].all()
        assert 0.5 < s["depth"].min() and s["depth"].max() <= NYU_MAX_DEPTH
    assert dense[5]["depth"].min().item() == pytest.approx(0.894) and dense[5]["depth"].max().item() == pytest.approx(9.961)

    holes = NyuFolderDataset(nyu / "sync_raw_holes")
    assert [it[3] for it in holes.items] == ["rgb_00000", "rgb_00050"]
    for s in holes:
        assert 0.15 < 1 - s["valid"].float().mean() < 0.35  # raw depth, ~25% holes
        v = s["depth"][s["valid"]]
        assert 0.5 < v.min() and v.max() < NYU_MAX_DEPTH
        r0, r1, c0, c1 = NYU_EIGEN_CROP
        assert s["depth"][0, r0:r1, c0:c1].shape == (426, 560)

    k = read_kinect_depth_pgm(nyu / "raw_kinect/NYU_depth.pgm")
    assert k.shape == (480, 640) and 0.05 < (k == 0).mean() < 0.1
    assert k[k > 0].min() == pytest.approx(1.386, abs=1e-3) and k.max() == pytest.approx(6.691, abs=1e-3)
    assert read_rgb(nyu / "raw_kinect/NYU_color.ppm").shape == (480, 640, 3)


@pytest.mark.shared_data
def test_real_nyu_pngs_read_as_kitti_are_refused(shared_data: Path) -> None:
    """Every real NYU millimetre PNG read as mm passes the range check; read as KITTI's v / 256 the loader names
    the file and the millimetre reading that fits (depth_0: 0.894 m walls at 7.0 m otherwise)."""
    for p in sorted((shared_data / "nyu").glob("*/*depth_*.png")):
        read_depth_png(p, "mm", known_range=("NYU Depth v2", NYU_MAX_DEPTH))
    wrong = NyuFolderDataset(shared_data / "nyu/dense_test", depth_encoding="kitti")
    with pytest.raises(ImageReadError, match=r"depth_0.png: read as 'kitti' \(metres = v / 256\) its depths span "
                                             r"7.02..14.12 m.*as 'mm' \(metres = v / 1000\) they would span 1.80..3.62 m"):
        wrong[0]
    for name in ("0000000005", "0000000050"):  # KITTI's own PNGs pass KITTI's range
        read_depth_png(shared_data / f"kitti/annotated/depth/{name}.png", "kitti", known_range=("KITTI", 120.0))


@pytest.mark.shared_data
def test_real_nyu_official_split(shared_data: Path) -> None:
    sp = read_nyu_splits(shared_data / "nyu/splits/splits.mat")
    assert len(sp["train"]) == 795 and len(sp["test"]) == 654
    assert not set(sp["train"]) & set(sp["test"]) and sorted({*sp["train"], *sp["test"]}) == list(range(1449))
    lst = read_nyu_file_list(shared_data / "nyu/splits/nyudepthv2_test_files_with_gt.txt")
    assert len(lst) == 654 and lst[0] == ("bathroom/rgb_00045.jpg", "bathroom/sync_depth_00045.png", 518.8579)
    # BTS names frames by their 0-based index in the labeled .mat: its test list is exactly testNdxs - 1
    assert sorted(int(re.search(r"rgb_(\d+)", rgb).group(1)) for rgb, _, _ in lst) == sorted(sp["test"].tolist())
