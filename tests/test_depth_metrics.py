"""Depth metrics against hand-computed values (BTS eval_with_pngs.py / monodepth2 compute_errors protocol)."""

import json
import math

import pytest
import torch

from scalear.domains.depth.metrics import (
    KITTI_EVAL,
    NYU_EVAL,
    DepthEvalConfig,
    DepthEvaluator,
    compute_depth_metrics,
    depth_metrics_batch,
    crop_mask,
    format_table,
)

# 2x2 case: (gt, pred) pixel pairs (2, 1), (4, 4), (5, 6), (10, 8)
GT = torch.tensor([[2.0, 4.0], [5.0, 10.0]])
PRED = torch.tensor([[1.0, 4.0], [6.0, 8.0]])


def test_hand_computed_2x2():
    m = compute_depth_metrics(PRED, GT, max_depth=80.0)
    # |gt - pred| / gt = 1/2, 0, 1/5, 2/10
    assert m["abs_rel"] == pytest.approx((0.5 + 0.0 + 0.2 + 0.2) / 4)  # 0.225
    # (gt - pred)^2 / gt = 1/2, 0, 1/5, 4/10
    assert m["sq_rel"] == pytest.approx((0.5 + 0.0 + 0.2 + 0.4) / 4)  # 0.275
    # (gt - pred)^2 = 1, 0, 1, 4
    assert m["rmse"] == pytest.approx(math.sqrt((1 + 0 + 1 + 4) / 4))
    # ln gt - ln pred = ln 2, 0, ln(5/6), ln(10/8)
    assert m["rmse_log"] == pytest.approx(math.sqrt((math.log(2) ** 2 + 0 + math.log(5 / 6) ** 2 + math.log(1.25) ** 2) / 4))
    # |log10 pred - log10 gt| = log10 2, 0, log10 1.2, log10 1.25
    assert m["log10"] == pytest.approx((math.log10(2) + 0 + math.log10(1.2) + math.log10(1.25)) / 4)
    # thresh = max(gt/pred, pred/gt) = 2, 1, 1.2, 1.25 (exactly): strict "<" so 1.25 fails d1
    assert m["d1"] == pytest.approx(2 / 4)  # 1, 1.2
    assert m["d2"] == pytest.approx(3 / 4)  # 1, 1.2, 1.25 < 1.5625
    assert m["d3"] == pytest.approx(3 / 4)  # 2 >= 1.953125
    # e = ln pred - ln gt = -ln 2, 0, ln 1.2, -ln 1.25
    e = [-math.log(2), 0.0, math.log(1.2), -math.log(1.25)]
    mean_e2 = (e[0] ** 2 + e[1] ** 2 + e[2] ** 2 + e[3] ** 2) / 4
    mean_e = (e[0] + e[1] + e[2] + e[3]) / 4
    assert m["silog"] == pytest.approx(100 * math.sqrt(mean_e2 - mean_e**2))
    assert m["silog_dav2"] == pytest.approx(math.sqrt(mean_e2 - 0.5 * mean_e**2))
    assert m["count"] == 4


def test_silog_conventions_on_a_uniform_scale():
    # pred = 2 gt: e = ln 2 everywhere, so BTS's SILog is 0 (scale invariant), Depth Anything's is ln2 / sqrt 2
    m = compute_depth_metrics(2 * GT, GT, max_depth=80.0)
    assert m["silog"] == pytest.approx(0.0, abs=1e-6)
    assert m["silog_dav2"] == pytest.approx(math.log(2) / math.sqrt(2))
    assert m["abs_rel"] == pytest.approx(1.0) and m["d1"] == 0.0 and m["d3"] == 0.0  # 2 > 1.953125


def test_perfect_prediction():
    gt = torch.rand(6, 7, dtype=torch.float64) * 9 + 0.5
    m = compute_depth_metrics(gt.clone(), gt, max_depth=10.0)
    for k in ("abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog", "silog_dav2"):
        assert m[k] == 0.0, k
    assert m["d1"] == m["d2"] == m["d3"] == 1.0


def test_per_image_then_average_not_pooled():
    # image A: gt (1, invalid 0), pred (2, 5) -> one valid pixel, abs_rel = |1-2|/1 = 1
    # image B: gt (1, 1), pred (1, 1)         -> two valid pixels, abs_rel = 0
    gt = torch.tensor([[[1.0, 0.0]], [[1.0, 1.0]]])
    pred = torch.tensor([[[2.0, 5.0]], [[1.0, 1.0]]])
    ev = DepthEvaluator(max_depth=10.0)
    ev.update(pred, gt)
    out = ev.compute()
    assert out["count"] == 2
    assert out["abs_rel"] == pytest.approx((1.0 + 0.0) / 2)  # mean of per-image values
    assert out["abs_rel"] != pytest.approx((1.0 + 0.0 + 0.0) / 3)  # the pooled value over the 3 pixels
    assert ev.per_image()["pixels"].tolist() == [1, 2]


def test_clamping_and_gt_range():
    # pred: 0 -> 1e-3, 100 -> 80, inf -> 80, nan -> 1e-3 (BTS); gt 1, 50, 50, 1
    gt = torch.tensor([[1.0, 50.0, 50.0, 1.0]])
    pred = torch.tensor([[0.0, 100.0, float("inf"), float("nan")]])
    m = compute_depth_metrics(pred, gt, max_depth=80.0)
    assert m["abs_rel"] == pytest.approx((0.999 / 1 + 30 / 50 + 30 / 50 + 0.999 / 1) / 4)
    assert m["rmse"] == pytest.approx(math.sqrt((0.999**2 + 30**2 + 30**2 + 0.999**2) / 4))
    # valid gt is strictly inside (min, max): 1e-3 and 80 are excluded, as are 0 and 100
    gt = torch.tensor([[1e-3, 80.0, 0.0, 100.0, 2.0]])
    m = compute_depth_metrics(torch.full_like(gt, 3.0), gt, max_depth=80.0)
    assert m["count"] == 1 and m["abs_rel"] == pytest.approx(0.5)
    # the caller's mask further restricts
    m = compute_depth_metrics(PRED, GT, torch.tensor([[True, True], [False, False]]), max_depth=80.0)
    assert m["count"] == 2 and m["abs_rel"] == pytest.approx((0.5 + 0.0) / 2)
    with pytest.raises(ValueError, match="no valid pixel"):
        compute_depth_metrics(PRED, torch.zeros(2, 2), max_depth=80.0)


def test_kitti_crops_select_the_right_pixels():
    h, w = 375, 1242  # KITTI's most common GT size
    garg = crop_mask("garg", h, w)
    # int(0.40810811*375)=153, int(0.99189189*375)=371, int(0.03594771*1242)=44, int(0.96405229*1242)=1197
    expected = torch.zeros(h, w, dtype=torch.bool)
    expected[153:371, 44:1197] = True
    assert torch.equal(garg, expected)
    eigen = crop_mask("eigen_kitti", h, w)
    # int(0.3324324*375)=124, int(0.91351351*375)=342, cols as Garg's: 44, 1197
    expected = torch.zeros(h, w, dtype=torch.bool)
    expected[124:342, 44:1197] = True
    assert torch.equal(eigen, expected)
    # through the metrics: pred is wrong only outside the crop -> zero error with the crop, not without
    gt = torch.full((h, w), 10.0)
    pred = torch.where(garg, gt, gt * 2)
    assert compute_depth_metrics(pred, gt, max_depth=80.0, crop="garg")["abs_rel"] == 0.0
    assert compute_depth_metrics(pred, gt, max_depth=80.0, crop="garg")["count"] == (371 - 153) * (1197 - 44)
    # without a crop every pixel counts: |10 - 20| / 10 = 1 on the share of pixels outside the crop
    outside = 1 - (371 - 153) * (1197 - 44) / (h * w)
    assert compute_depth_metrics(pred, gt, max_depth=80.0)["abs_rel"] == pytest.approx(outside)


def test_nyu_eigen_crop():
    m = crop_mask("eigen_nyu", 480, 640)
    assert m.sum() == (471 - 45) * (601 - 41)
    assert m[45, 41] and m[470, 600] and not m[44, 41] and not m[45, 40] and not m[471, 600] and not m[470, 601]
    with pytest.raises(ValueError, match="480x640"):
        crop_mask("eigen_nyu", 240, 320)
    ev = DepthEvaluator("nyu")
    with pytest.raises(ValueError, match="480x640"):
        ev.update(torch.ones(1, 240, 320), torch.ones(1, 240, 320))


def test_median_scaling():
    gt = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    off = compute_depth_metrics(3 * gt, gt, max_depth=80.0)
    assert off["abs_rel"] == pytest.approx(2.0)
    on = compute_depth_metrics(3 * gt, gt, max_depth=80.0, median_scaling=True)
    assert on["abs_rel"] == pytest.approx(0.0, abs=1e-12) and on["rmse"] == pytest.approx(0.0, abs=1e-12)
    assert on["d1"] == 1.0
    # even count: numpy's median (mean of the middle two): median(gt) = 3.5, median(pred 1,1,1,9,9,9) = 5 -> x0.7
    pred = torch.tensor([[1.0, 1.0, 1.0], [9.0, 9.0, 9.0]])
    m = compute_depth_metrics(pred, gt, max_depth=80.0, median_scaling=True)
    scaled = [0.7, 0.7, 0.7, 6.3, 6.3, 6.3]
    assert m["abs_rel"] == pytest.approx(sum(abs(g - p) / g for g, p in zip([1, 2, 3, 4, 5, 6], scaled)) / 6)


def test_median_of_ratios_is_depthart_aligner():
    """DepthART's AlignerSIL1: the prediction times median(gt / pred) (torch.median: the lower middle value)."""
    gt = torch.tensor([[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]])
    pred = torch.tensor([[[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]])  # ratios 1..5, the last pixel (pred 0) left out
    cfg = DepthEvalConfig(max_depth=80.0, median_scaling=True, median_of_ratios=True)
    out, n = depth_metrics_batch(pred, gt, cfg)
    scaled = [3.0, 3.0, 3.0, 3.0, 3.0, 1e-3]  # x3, then clamped to min_depth
    assert int(n[0]) == 6
    assert out["abs_rel"][0].item() == pytest.approx(sum(abs(g - p) / g for g, p in zip(range(1, 7), scaled)) / 6)
    even = torch.tensor([[[1.0, 1.0], [1.0, 1.0]]])  # ratios 1, 2, 3, 4: the lower middle value 2
    out, _ = depth_metrics_batch(even, torch.tensor([[[1.0, 2.0], [3.0, 4.0]]]), cfg)
    assert out["abs_rel"][0].item() == pytest.approx((1 + 0 + 1 / 3 + 2 / 4) / 4)


def test_evaluator_presets_shapes_table_and_json(tmp_path):
    assert KITTI_EVAL.max_depth == 80.0 and KITTI_EVAL.min_depth == 1e-3 and KITTI_EVAL.crop == "garg"
    assert NYU_EVAL.max_depth == 10.0 and NYU_EVAL.crop == "eigen_nyu"
    assert DepthEvaluator("kitti_eigen").config.crop == "eigen_kitti"
    assert DepthEvaluator("kitti", crop="none").config == DepthEvalConfig(max_depth=80.0)
    with pytest.raises(ValueError, match="unknown evaluation preset"):
        DepthEvaluator("cityscapes")
    ev = DepthEvaluator(max_depth=80.0)
    gt = torch.stack([GT, GT, torch.zeros(2, 2)])[:, None]  # (3, 1, 2, 2); the last image has no valid pixel
    ev.update(torch.stack([PRED, GT, GT])[:, None], gt, names=["a", "b", "c"])
    out = ev.compute()
    assert out["count"] == 2 and ev.skipped == ["c"]
    assert out["abs_rel"] == pytest.approx((0.225 + 0.0) / 2)
    assert out["d1"] == pytest.approx((0.5 + 1.0) / 2)
    with pytest.raises(ValueError, match="resize the prediction"):
        ev.update(torch.ones(1, 4, 4), torch.ones(1, 2, 2))
    table = format_table(out).splitlines()
    assert table[0].split() == ["AbsRel", "SqRel", "RMSE", "RMSElog", "log10", "SILog", "d1", "d2", "d3"]
    assert float(table[1].split()[0]) == pytest.approx(0.112, abs=1e-3)
    assert "100*sqrt" in table[2]
    path = ev.to_json(tmp_path / "eval" / "metrics.json", per_image=True)
    doc = json.loads(path.read_text())
    assert doc["metrics"]["count"] == 2 and doc["config"]["max_depth"] == 80.0
    assert [r["name"] for r in doc["per_image"]] == ["a", "b"] and doc["skipped"] == ["c"]
    assert doc["per_image"][0]["abs_rel"] == pytest.approx(0.225)
    assert not list((tmp_path / "eval").glob("*.tmp"))
