"""The SAR3D part of `scalear quickstart`: wired end to end (fast mode: a few training steps per stage), and, in
full, meeting the bars it was measured to meet."""

import json

import pytest

from scalear.domains.sar3d.quickstart import PER_CLASS, run
from conftest import check_3d_quickstart_fast_outputs


def test_sar3d_quickstart_fast(tmp_path, single_thread):
    md = run(tmp_path, fast=True)
    m = check_3d_quickstart_fast_outputs(tmp_path / "sar3d", md, 4 * PER_CLASS[1],
                                         ("reconstruction_by_scale.png", "generated_per_class.png"))
    assert list(m["reconstruction_by_scale"]) == [str(k) for k in range(1, 7)]
    for row in m["reconstruction_by_scale"].values():
        assert row["objects"] + row["empty"] == 16  # 4 held-out objects per class
    assert "| 1..6 |" in md and "| chair |" in md


def check_full_bars(m: dict) -> None:
    rec = m["reconstruction_by_scale"]
    cd = [rec[str(k)]["chamfer_l1"] for k in range(1, len(rec) + 1)]
    print("\nChamfer-L1 by scales:", [round(c, 4) for c in cd], "generation:", m["generation"]["own_class_closest"])
    assert all(b < a for a, b in zip(cd, cd[1:])), cd  # falls with every scale added
    assert cd[-1] < 0.25 * cd[0]
    assert rec[str(len(rec))]["empty"] == 0
    gen = m["generated"]
    assert gen["valid"] == gen["watertight"] == gen["written"] >= 0.75 * 4 * PER_CLASS[0]
    assert m["generation"]["own_class_closest"] >= 0.75


@pytest.mark.slow
def test_sar3d_quickstart_full_meets_the_bars(tmp_path, single_thread):
    """The full SAR3D part (STEPS: ~6 min on one CPU thread). Measured (seed 0): held-out Chamfer-L1 from 1..6
    scales 0.234, 0.174, 0.079, 0.046, 0.040, 0.034; 24 of 24 generated objects valid meshes; every class's
    samples closest (MMD) to the held-out objects of their own class."""
    run(tmp_path)
    check_full_bars(json.loads((tmp_path / "sar3d" / "metrics.json").read_text()))
