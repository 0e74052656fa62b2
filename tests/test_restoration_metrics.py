"""PSNR / SSIM against hand-computed values and scikit-image, the BT.601 Y channel, and the evaluator."""

import json
import math

import numpy as np
import pytest
import skimage.data
import torch
from skimage.color import rgb2ycbcr
from skimage.metrics import structural_similarity

from scalear.domains.restoration.metrics import (METRIC_KEYS, RestorationEvaluator, format_table, psnr,
                                                 restoration_metrics, rgb_to_y, ssim)

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def pair() -> tuple[torch.Tensor, torch.Tensor]:
    """A real photo crop and a noisy copy, (1, 3, 80, 96) float64."""
    x = torch.from_numpy(skimage.data.coffee()[100:180, 200:296]).permute(2, 0, 1)[None].double() / 255
    g = torch.Generator().manual_seed(0)
    return x, (x + 0.08 * torch.randn(x.shape, generator=g, dtype=torch.float64)).clamp(0, 1)


def sk_ssim(a: torch.Tensor, b: torch.Tensor, channel_axis: int | None = 2) -> float:
    return structural_similarity(a.numpy(), b.numpy(), gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                 data_range=1.0, channel_axis=channel_axis)


def test_psnr_of_a_constant_offset():
    x = torch.full((3, 3, 20, 20), 0.4)
    offsets = torch.tensor([0.1, 0.01, 0.05]).view(3, 1, 1, 1)
    got = psnr(x + offsets, x)
    assert got.shape == (3,) and got.dtype == torch.float64
    assert torch.allclose(got, -20 * torch.log10(offsets.flatten().double()), atol=1e-6)  # 20, 40, 26.02 dB
    assert math.isinf(psnr(x, x)[0].item())


def test_y_channel_is_matlab_rgb2ycbcr():
    white, black = torch.ones(1, 3, 2, 2), torch.zeros(1, 3, 2, 2)
    assert torch.allclose(rgb_to_y(white) * 255, torch.tensor(235.0)) and torch.allclose(rgb_to_y(black) * 255, torch.tensor(16.0))
    x = torch.rand(1, 3, 8, 8, dtype=torch.float64)
    ref = rgb2ycbcr(x[0].permute(1, 2, 0).numpy())[..., 0]  # MATLAB's formula, Y in [16, 235]
    assert np.allclose(rgb_to_y(x)[0, 0].numpy() * 255, ref)


def test_psnr_y_of_a_grey_offset():
    """A grey offset d moves Y by d * (65.481 + 128.553 + 24.966) / 255 = d * 219 / 255."""
    x = torch.full((1, 3, 16, 16), 0.5, dtype=torch.float64)
    got = psnr(x + 0.1, x, y_channel=True).item()
    assert got == pytest.approx(-20 * math.log10(0.1 * 219 / 255), abs=1e-6)


def test_ssim_identical_is_one_and_matches_skimage(pair):
    x, y = pair
    assert ssim(x, x).item() == pytest.approx(1.0, abs=1e-12)
    ours = ssim(y, x).item()
    assert 0.2 < ours < 0.95
    assert ours == pytest.approx(sk_ssim(y[0].permute(1, 2, 0), x[0].permute(1, 2, 0)), abs=1e-6)
    ours_y = ssim(y, x, y_channel=True).item()
    assert ours_y == pytest.approx(sk_ssim(rgb_to_y(y)[0, 0], rgb_to_y(x)[0, 0], None), abs=1e-6)
    b = 4
    cropped = sk_ssim(y[0, :, b:-b, b:-b].permute(1, 2, 0), x[0, :, b:-b, b:-b].permute(1, 2, 0))
    assert ssim(y, x, crop_border=b).item() == pytest.approx(cropped, abs=1e-6)


def test_ssim_falls_with_noise(pair):
    x, _ = pair
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(x.shape, generator=g, dtype=torch.float64)
    values = [ssim((x + s * noise).clamp(0, 1), x).item() for s in (0.01, 0.05, 0.1, 0.2)]
    assert all(a > b for a, b in zip(values, values[1:])), values


def test_crop_border_quantize_and_shape_checks(pair):
    x, y = pair
    z = x.clone()
    z[..., :2, :] = 1 - z[..., :2, :]  # damage only the top two rows
    assert math.isinf(psnr(z, x, crop_border=2).item()) and psnr(z, x).item() < 30
    q = (x * 255).round() / 255
    assert psnr(q, x, quantize=True).item() == math.inf
    assert psnr(x[0], y[0]).shape == (1,)  # (3, H, W) accepted
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(x, y[..., :-1])
    with pytest.raises(ValueError, match="RGB"):
        psnr(x[:, :1], y[:, :1])
    with pytest.raises(ValueError, match="crop_border 40"):
        psnr(x, y, crop_border=40)
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(x[..., :8, :8], y[..., :8, :8])


def test_restoration_metrics_keys(pair):
    x, y = pair
    m = restoration_metrics(y, x, crop_border=4)
    assert tuple(m) == METRIC_KEYS
    assert m["psnr"].item() == pytest.approx(psnr(y, x, crop_border=4).item())
    assert m["psnr_y"] > m["psnr"]  # averaging channels into Y reduces independent noise


def test_evaluator_groups_by_degradation_and_writes_json(tmp_path, pair, capsys):
    x, _ = pair
    batch = x.repeat(3, 1, 1, 1)
    ev = RestorationEvaluator(crop_border=2)
    ev.update(batch + torch.tensor([0.1, 0.01, 0.1]).view(3, 1, 1, 1), batch, ["noise", "rain", "noise"],
              names=["a", "b", "c"])
    ev.update(batch[:1] + 0.001, batch[:1], "haze")
    res = ev.compute()
    assert list(res) == ["noise", "rain", "haze", "average"]
    assert res["noise"]["psnr"] == pytest.approx(20.0, abs=1e-6) and res["noise"]["count"] == 2
    assert res["rain"]["psnr"] == pytest.approx(40.0, abs=1e-6) and res["haze"]["psnr"] == pytest.approx(60.0, abs=1e-6)
    assert res["average"]["psnr"] == pytest.approx(40.0, abs=1e-6) and res["average"]["count"] == 4  # mean of means
    table = ev.format_table()
    print(table)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["degradation", "PSNR", "SSIM", "PSNR-Y", "SSIM-Y", "n"]
    assert lines[2].split()[:2] == ["noise", "20.00"] and lines[5].split()[0] == "average"
    out = ev.to_json(tmp_path / "eval" / "metrics.json", per_image=True)
    doc = json.loads(out.read_text())
    assert doc["metrics"]["rain"]["psnr"] == pytest.approx(40.0, abs=1e-6)
    assert doc["conventions"]["crop_border"] == 2 and len(doc["per_image"]) == 4 and doc["per_image"][0]["name"] == "a"
    assert [p.name for p in out.parent.iterdir()] == ["metrics.json"]  # no temporary file left behind
    assert "inf" in format_table({"same": {"psnr": math.inf, "ssim": 1.0, "psnr_y": math.inf, "ssim_y": 1.0, "count": 1}})


def test_evaluator_errors(pair):
    x, y = pair
    ev = RestorationEvaluator()
    with pytest.raises(ValueError, match="no images"):
        ev.compute()
    with pytest.raises(ValueError, match="2 degradation labels"):
        ev.update(y, x, ["a", "b"])
    with pytest.raises(ValueError, match="crop_border"):
        RestorationEvaluator(crop_border=-1)


def test_evaluator_reports_images_made_worse_than_their_input(tmp_path):
    """With the degraded inputs given, each image's gain over its input and a "worse" flag (hand-computed
    PSNRs: a constant error e gives -20 log10 e dB)."""
    clean = torch.full((3, 3, 16, 16), 0.5)
    degraded = clean + torch.tensor([0.1, 0.01, 0.0]).view(3, 1, 1, 1)  # inputs at 20 dB, 40 dB, identical
    restored = clean + torch.tensor([0.05, 0.05, 0.1]).view(3, 1, 1, 1)  # 26.02 dB each, 20 dB
    ev = RestorationEvaluator()
    ev.update(restored, clean, ["noise", "rain", "none"], ["a", "b", "c"], degraded_B3HW=degraded)
    a, b, c = ev.records
    assert a["input_psnr"] == pytest.approx(20.0, abs=1e-4) and a["gain"] == pytest.approx(20 * math.log10(2), abs=1e-4)
    assert not a["worse"] and b["worse"] and b["gain"] == pytest.approx(-20 * math.log10(5), abs=1e-4)
    assert c["worse"] and c["input_psnr"] == math.inf and c["gain"] == -math.inf  # a clean photo made worse
    assert [r["name"] for r in ev.worse_than_input()] == ["b", "c"]
    res = ev.compute()
    assert res["rain"]["worse"] == 1 and res["noise"]["worse"] == 0 and res["average"]["worse"] == 2
    table = ev.format_table()
    assert "gain" in table.splitlines()[0] and "worse" in table.splitlines()[0]
    assert "-13.98" in table and "+6.02" in table and "-inf" in table
    # an unchanged identical pair is no change, not a loss; without inputs the table has no such columns
    ev2 = RestorationEvaluator()
    ev2.update(clean[:1], clean[:1], "none", degraded_B3HW=clean[:1])
    assert ev2.records[0]["gain"] == 0.0 and not ev2.records[0]["worse"]
    ev3 = RestorationEvaluator()
    ev3.update(restored, clean, "x")
    assert "worse" not in ev3.compute()["x"] and "gain" not in ev3.format_table() and ev3.worse_than_input() == []
    doc = json.loads(ev.to_json(tmp_path / "m.json", per_image=True).read_text())
    assert [r["worse"] for r in doc["per_image"]] == [False, True, True] and "worse" in doc["conventions"]


def _evaluate_on_rank(rank: int, world: int, store: str, pred, target, labels, out: str) -> None:
    """One DDP process scoring its own half of the validation images, then gathering."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        ev = RestorationEvaluator()
        half = slice(rank * len(pred) // world, (rank + 1) * len(pred) // world)
        ev.update(pred[half], target[half], labels[half])
        ev.gather()
        torch.save(ev.compute(), f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_validation_means_under_ddp_cover_every_process(tmp_path):
    """Two gloo processes, each scoring half of the images: after gather() both compute the means of the whole
    set, equal to one process scoring everything (the validation logs of VarformerModule under DDP)."""
    import torch.multiprocessing as mp

    g = torch.Generator().manual_seed(0)
    target = torch.rand(6, 3, 16, 16, generator=g)
    pred = (target + 0.05 * torch.randn(6, 3, 16, 16, generator=g)).clamp(0, 1)
    labels = ["noise", "rain", "noise", "haze", "rain", "noise"]
    one = RestorationEvaluator()
    one.update(pred, target, labels)
    want = one.compute()
    out = str(tmp_path / "metrics")
    mp.spawn(_evaluate_on_rank, args=(2, str(tmp_path / "store"), pred, target, labels, out), nprocs=2, join=True)
    for rank in range(2):
        got = torch.load(f"{out}.{rank}", weights_only=True)
        assert got.keys() == want.keys()
        for label in want:
            assert got[label]["count"] == want[label]["count"]
            assert got[label]["psnr"] == pytest.approx(want[label]["psnr"], rel=1e-6), label
