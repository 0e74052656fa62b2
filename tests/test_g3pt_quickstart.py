"""The G3PT part of `scalear quickstart`: wired end to end (fast mode: a few training steps per stage), and, in
full, meeting the bars it was measured to meet."""

import json

import pytest
import trimesh
from PIL import Image

from scalear.datasets.pointclouds.io import load_point_cloud
from scalear.domains.g3pt.quickstart import METRIC_POINTS, PER_CLASS, run
from scalear.quickstart import quickstart_entry_points


def test_g3pt_quickstart_is_an_entry_point():
    assert "g3pt" in quickstart_entry_points()


def test_g3pt_quickstart_fast(tmp_path, single_thread):
    md = run(tmp_path, fast=True)
    root = tmp_path / "g3pt"
    m = json.loads((root / "metrics.json").read_text())
    assert m["fast"] is True and list(m["reconstruction_by_level"]) == ["1", "2", "3", "4"]
    for row in m["reconstruction_by_level"].values():
        assert row["objects"] == 16 and 0 <= row["iou"] <= 1  # 4 held-out objects per class
    gen = m["generated"]
    assert gen["written"] + len(gen["empty"]) == 4 * PER_CLASS[1] and gen["valid"] == gen["written"]
    for p in (root / "generated").glob("*.obj"):
        assert len(trimesh.load(p, force="mesh").faces) > 0
        assert p.with_suffix(".png").is_file()
        assert load_point_cloud(p.with_name(f"{p.stem}_points.ply")).shape == (METRIC_POINTS, 3)
    g = m["generation"]
    assert {"cov_cd", "mmd_cd", "1nna_cd", "cov_emd", "mmd_emd", "1nna_emd"} <= set(g["all"])
    for name in ("export/tokenizer", "export/generator"):
        assert (root / name / "model.safetensors").is_file(), name
    for pic in ("reconstruction_by_level.png", "generated_points_per_class.png", "generated_previews.png"):
        assert f"g3pt/{pic}" in md
        with Image.open(root / pic) as im:
            assert im.mode == "RGB" and im.width > 128
    assert "| 1..4 |" in md and "| chair |" in md and "EMD" in md
