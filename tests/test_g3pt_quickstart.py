"""The G3PT part of `scalear quickstart`: wired end to end (fast mode: a few training steps per stage), and, in
full, meeting the bars it was measured to meet."""

import json

import pytest

from scalear.datasets.pointclouds.io import load_point_cloud
from scalear.domains.g3pt.quickstart import METRIC_POINTS, PER_CLASS, run
from conftest import check_3d_quickstart_fast_outputs


def test_g3pt_quickstart_fast(tmp_path, single_thread):
    md = run(tmp_path, fast=True)
    root = tmp_path / "g3pt"
    m = check_3d_quickstart_fast_outputs(root, md, 4 * PER_CLASS[1], (
        "reconstruction_by_level.png", "generated_points_per_class.png", "generated_previews.png"))
    assert list(m["reconstruction_by_level"]) == ["1", "2", "3", "4"]
    for row in m["reconstruction_by_level"].values():
        assert row["objects"] == 16 and 0 <= row["iou"] <= 1  # 4 held-out objects per class
    for p in (root / "generated").glob("*.obj"):
        assert load_point_cloud(p.with_name(f"{p.stem}_points.ply")).shape == (METRIC_POINTS, 3)
    g = m["generation"]
    assert {"cov_cd", "mmd_cd", "1nna_cd", "cov_emd", "mmd_emd", "1nna_emd"} <= set(g["all"])
    assert "| 1..4 |" in md and "| chair |" in md and "EMD" in md


def check_full_bars(m: dict) -> None:
    rec = m["reconstruction_by_level"]
    K = len(rec)
    bce = [rec[str(k)]["bce"] for k in range(1, K + 1)]
    iou = [rec[str(k)]["iou"] for k in range(1, K + 1)]
    cd = [rec[str(k)]["chamfer_l2"] for k in range(1, K + 1)]
    print("\nheld-out BCE by levels:", [round(b, 4) for b in bce], "IoU:", [round(i, 3) for i in iou],
          "Chamfer-L2:", [round(c, 4) for c in cd])
    assert iou[-1] > 0.45 and rec[str(K)]["empty"] == 0  # measured 0.49
    # occupancy improves as levels of detail are added (measured BCE 0.324 -> 0.307, IoU 0.483 -> 0.495) and no
    # level makes it worse beyond float noise; the closed meshes' Chamfer-L2 no longer falls by level (0.0058 ->
    # 0.0055; README, G3PT), so it is only held to not growing
    assert bce[-1] < bce[0] - 0.01 and iou[-1] > iou[0] + 0.005 and cd[-1] <= 1.02 * cd[0]
    assert all(b1 <= b0 + 0.003 for b0, b1 in zip(bce, bce[1:])), bce
    gen = m["generated"]
    assert gen["valid"] == gen["watertight"] == gen["written"] >= 0.75 * 4 * PER_CLASS[0]
    g = m["generation"]
    assert g["by_class_cd"]["own_class_closest"] >= 0.75 and g["by_class_emd"]["own_class_closest"] >= 0.75
    assert g["all"]["cov_cd"] >= 0.4 and g["all"]["1nna_cd"] < 1.0  # measured 0.56 and 0.80


@pytest.mark.slow
def test_g3pt_quickstart_full_meets_the_bars(tmp_path, single_thread):
    """The full G3PT part (STEPS: ~9 min on one CPU thread). Measured (seed 0): held-out BCE from levels 1..4
    0.324, 0.308, 0.307, 0.307, IoU 0.48, 0.50, 0.49, 0.49, Chamfer-L2 0.0058, 0.0059, 0.0053, 0.0055; 24 of 24
    generated shapes valid closed meshes; every class's samples closest (MMD, Chamfer and EMD) to the held-out
    objects of their own class; COV 0.56 and 1-NNA 0.80 (Chamfer) against all held-out objects."""
    run(tmp_path)
    check_full_bars(json.loads((tmp_path / "g3pt" / "metrics.json").read_text()))
