"""DAR (domains/depth/dar.py, bins.py, training.py): causality of the resolution autoregression, the MTBin
interval tree, learning on procedural scenes, coarse-to-fine error decrease, and export round trip."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from scalear.domains.depth.bins import DepthBins
from scalear.domains.depth.dar import DARConfig, DARModel, create_dar, letterbox, valid_area_pool
from scalear.domains.depth.metrics import DepthEvalConfig, depth_metrics_batch
from scalear.io import from_pretrained, save_pretrained


def _tiny(**kw) -> DARModel:
    """A tiny DAR with a random (not zero-initialised) logits layer, so every input reaches the depth."""
    model = create_dar("tiny", **kw).eval()
    torch.nn.init.normal_(model.inject.logits[-1].weight, std=0.5)
    return model


# ------------------------------------------------------------------ (1) patch-wise causal mask
def test_transformer_block_causal_with_image_prefix():
    """Changing the input tokens of scale k changes no transformer output of scales < k (full masked forward),
    and the scale-by-scale cached path DAR runs gives the same outputs."""
    model = _tiny()
    tr, sched = model.transformer, model.cfg.schedule
    image = torch.rand(2, 3, 32, 32)
    _, prefix, cond = model.encode(image)
    x = torch.randn(2, sched.total_tokens - sched.tokens_per_scale[0], model.cfg.hidden_dim)
    with torch.no_grad():
        base = tr(x, cond_BD=cond, prefix_BPD=prefix)
        for k in range(1, sched.num_scales):
            x2 = x.clone()
            sl = sched.scale_slice(k)
            x2[:, sl.start - sched.tokens_per_scale[0] : sl.stop - sched.tokens_per_scale[0]] += 3.0 * torch.randn(
                2, sl.stop - sl.start, model.cfg.hidden_dim)
            out = tr(x2, cond_BD=cond, prefix_BPD=prefix)
            assert torch.equal(out[:, : sl.start], base[:, : sl.start]), f"scale {k} leaked into coarser scales"
            assert not torch.allclose(out[:, sl], base[:, sl])
        # the KV-cached path equals the masked forward
        cond_BC = tr.condition(2, cond_BD=cond)
        tr.kv_caching(True)
        tr.prefill_prefix(prefix, cond_BC, None)
        outs = [tr.forward_scale(tr.embed_scale(0, cond_BC), cond_BC, None)]
        n0 = sched.tokens_per_scale[0]
        for k in range(1, sched.num_scales):
            sl = sched.scale_slice(k)
            outs.append(tr.forward_scale(tr.embed_scale(k, cond_BC, x[:, sl.start - n0 : sl.stop - n0]), cond_BC, None))
        tr.kv_caching(False)
    torch.testing.assert_close(torch.cat(outs, 1), base, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_depth_outputs_causal_over_scales(k: int):
    """Perturbing the embedded input of scale k (hook on word_embed) in DAR's own forward leaves the depth of
    every coarser scale bit-identical and changes scale k."""
    model = _tiny()
    image = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        base = model(image)
        calls = {"n": 0}

        def hook(_mod, _inp, out):
            calls["n"] += 1  # word_embed runs once per scale 1..K-1
            noise = 5.0 * torch.randn(out.shape, generator=torch.Generator().manual_seed(k))
            return out + noise if calls["n"] == k else out  # (a constant shift would be removed by the LayerNorms)

        handle = model.transformer.word_embed.register_forward_hook(hook)
        try:
            pert = model(image)
        finally:
            handle.remove()
    for j in range(k):
        assert torch.equal(pert[j], base[j]), f"scale {j} changed when scale {k}'s input changed"
    assert not torch.allclose(pert[k], base[k])


# ------------------------------------------------------------------ (2) MTBin
def test_bins_expectation_hand_checked_linear():
    bins = DepthBins(min_depth=1.0, max_depth=5.0, num_bins=4, log_space=False, shrink=2.0)
    lo = bins.initial_interval(1, (1, 1))
    c = bins.centers(lo, 0)
    assert c[0, :, 0, 0].tolist() == [1.5, 2.5, 3.5, 4.5]
    logits = torch.log(torch.tensor([0.1, 0.2, 0.3, 0.4])).view(1, 4, 1, 1)
    t = bins.expectation(logits, c)
    assert t.item() == pytest.approx(0.1 * 1.5 + 0.2 * 2.5 + 0.3 * 3.5 + 0.4 * 4.5)  # 3.5
    # step 1: width 2 centred on 3.5 -> [2.5, 4.5], centres 2.75, 3.25, 3.75, 4.25
    lo1 = bins.refine_interval(lo, t, 1)
    assert bins.centers(lo1, 1)[0, :, 0, 0].tolist() == pytest.approx([2.75, 3.25, 3.75, 4.25])
    # near the edge the interval is shifted inside the parent: prediction 4.9 -> [3, 5]
    lo_edge = bins.refine_interval(lo, torch.full((1, 1, 1, 1), 4.9), 1)
    assert lo_edge.item() == pytest.approx(3.0)


@pytest.mark.parametrize("log_space", [False, True])
def test_bins_nest_and_shrink(log_space: bool):
    """Candidates of step k lie inside step k-1's interval, widths shrink by `shrink`, and the prediction is the
    softmax expectation of the candidates (in bin space; exp of it in log space)."""
    bins = DepthBins(min_depth=0.1, max_depth=10.0, num_bins=8, log_space=log_space, shrink=3.0)
    g = torch.Generator().manual_seed(0)
    lo = bins.initial_interval(4, (5, 5))
    for k in range(5):
        if k:
            lo_new = bins.refine_interval(lo, t, k)
            c_new = bins.centers(lo_new, k)
            assert (c_new >= lo - 1e-6).all() and (c_new <= lo + bins.width(k - 1) + 1e-6).all()
            assert bins.width(k) == pytest.approx(bins.width(k - 1) / 3.0)
            lo = lo_new
        c = bins.centers(lo, k)
        assert (c >= bins.t_min - 1e-6).all() and (c <= bins.t_max + 1e-6).all()
        logits = torch.randn(4, 8, 5, 5, generator=g) * 3
        t = bins.expectation(logits, c)
        torch.testing.assert_close(t, (logits.softmax(1) * c).sum(1, keepdim=True))
        assert (t >= lo).all() and (t <= lo + bins.width(k)).all()
    depth = bins.to_depth(t)
    if log_space:
        torch.testing.assert_close(depth, torch.exp((logits.softmax(1) * c).sum(1, keepdim=True)))
        assert bins.t_min == pytest.approx(math.log(0.1))
    assert (depth >= 0.1 - 1e-5).all() and (depth <= 10.0 + 1e-4).all()


def test_valid_area_pool_ignores_invalid():
    depth = torch.tensor([[[[2.0, 0.0], [4.0, 6.0]]]])
    valid = depth > 0
    d, ok = valid_area_pool(depth, valid, (1, 1))
    assert d.item() == pytest.approx(4.0) and ok.all()


# ------------------------------------------------------------------ (3)+(4) learning on procedural scenes
@pytest.fixture(scope="module")
def trained(single_thread):
    pytest.importorskip("open3d")
    import lightning as L

    from scalear.datasets.procedural_rgbd import ProceduralDepthDataModule
    from scalear.domains.depth.training import DARModule

    torch.manual_seed(0)
    dm = ProceduralDepthDataModule(image_size=(32, 32), train_size=192, val_size=8, test_size=48, batch_size=16)
    dm.setup("fit")
    dm.setup("test")
    module = DARModule(export_dir=None)
    trainer = L.Trainer(max_steps=150, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, accelerator="cpu")
    trainer.fit(module, dm.train_dataloader())
    model = module.model.eval()
    cfg = DepthEvalConfig(max_depth=10.0, min_depth=0.1)
    train_depths = torch.cat([b["depth"][b["valid"]] for b in dm.train_dataloader()])
    candidates = torch.cat([train_depths.median().view(1), torch.logspace(math.log10(0.5), math.log10(9.0), 40)])
    per_scale, const = {}, {c: [] for c in range(len(candidates))}
    for batch in dm.test_dataloader():
        with torch.no_grad():
            depths = model(batch["image"])
        for k, d in enumerate(depths):
            up = F.interpolate(d, size=batch["depth"].shape[-2:], mode="bilinear", align_corners=False)
            m, n = depth_metrics_batch(up, batch["depth"], cfg, batch["valid"])
            per_scale.setdefault(k, []).append(m["abs_rel"][n > 0])
        for i, c in enumerate(candidates):
            m, n = depth_metrics_batch(torch.full_like(batch["depth"], c.item()), batch["depth"], cfg, batch["valid"])
            const[i].append(m["abs_rel"][n > 0])
    abs_rel = [torch.cat(v).mean().item() for _, v in sorted(per_scale.items())]
    best_const = min(torch.cat(v).mean().item() for v in const.values())  # grid search incl. the train median
    return {"abs_rel": abs_rel, "const": best_const, "model": model}


def test_dar_beats_best_constant(trained):
    print(f"\nDAR AbsRel {trained['abs_rel'][-1]:.3f} vs best constant {trained['const']:.3f}")
    assert trained["abs_rel"][-1] < 0.6 * trained["const"]


def test_error_falls_as_scales_are_added(trained):
    a = trained["abs_rel"]
    print("\nper-scale AbsRel", [round(x, 3) for x in a])
    assert a[-1] < 0.5 * a[0]
    assert all(a[k + 1] < a[k] for k in range(len(a) - 1)), a


# ------------------------------------------------------------------ aspect ratio
def _disk(H: int, W: int, radius: float) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(H) + 0.5 - H / 2, torch.arange(W) + 0.5 - W / 2, indexing="ij")
    return ((yy**2 + xx**2) <= radius**2).float().expand(1, 3, H, W).clone()


def _extent(image_B3HW: torch.Tensor) -> tuple[int, int]:
    """(rows, cols) spanned by the pixels brighter than 1/2."""
    m = image_B3HW[0, 0] > 0.5
    return int(m.any(1).sum()), int(m.any(0).sum())


def test_letterbox_keeps_a_disk_round():
    image = _disk(40, 80, 12.0)  # 24 px across
    square, box = letterbox(image, 32)
    assert square.shape == (1, 3, 32, 32) and box == (8, 0, 16, 32)  # 40x80 -> 16x32, 8 rows above and below
    rows, cols = _extent(square)
    assert abs(rows - cols) <= 1 and 8 <= cols <= 11  # 24 px x 0.4 = 9.6 px across, both ways
    torch.testing.assert_close(square[..., 8:24, :], F.interpolate(image, (16, 32), mode="bilinear", antialias=True))
    assert torch.equal(square[..., :8, :], square[..., 8:9, :].expand(-1, -1, 8, -1))  # edge rows repeated
    stretched = F.interpolate(image, (32, 32), mode="bilinear", antialias=True)
    rows, cols = _extent(stretched)
    assert rows > 1.7 * cols  # what stretching did: a disk seen as an ellipse twice as tall as wide
    assert letterbox(torch.rand(1, 3, 375, 1242), 32)[1] == (11, 0, 10, 32)


def test_predict_depth_sees_the_input_undistorted_and_maps_its_box_back(monkeypatch):
    model = _tiny()
    image = _disk(40, 80, 12.0)
    seen = []  # what the encoder gets
    real_encode = model.encode
    monkeypatch.setattr(model, "encode", lambda x: seen.append(x) or real_encode(x))
    depth = model.predict_depth(image)
    assert depth.shape == (1, 1, 40, 80) and torch.isfinite(depth).all()
    assert 0.1 <= depth.min() and depth.max() <= 10.0  # within the bins
    torch.testing.assert_close(seen[-1], letterbox(image, 32)[0])  # the model saw the round disk
    model.predict_depth(image, keep_aspect=False)
    rows, cols = _extent(seen[-1])
    assert rows > 1.7 * cols  # the old default: a squashed disk
    square = torch.rand(1, 3, 24, 24)
    assert torch.equal(model.predict_depth(square), model.predict_depth(square, keep_aspect=False))

    # the box is cut out of the prediction: a model whose token row k predicts 1 + k metres (8x8 tokens)
    rows_18 = (1.0 + torch.arange(8.0)).view(1, 1, 8, 1).expand(1, 1, 8, 8)
    monkeypatch.setattr(model, "forward", lambda x: [rows_18])
    out = model.predict_depth(image)
    # 8x8 -> 32x32 bilinear: square row r reads token row (r + 0.5) / 4 - 0.5; the box is rows 8..23, so the
    # top row reads 1 + 1.625 and the bottom one 1 + 5.375 (stretching would give the full 1..8)
    torch.testing.assert_close(out[0, 0, 0], torch.full((80,), 2.625))
    torch.testing.assert_close(out[0, 0, -1], torch.full((80,), 6.375))
    stretched = model.predict_depth(image, keep_aspect=False)
    assert stretched[0, 0, 0, 0].item() == pytest.approx(1.0) and stretched[0, 0, -1, 0].item() == pytest.approx(8.0)


# ------------------------------------------------------------------ (5) export
def test_save_pretrained_round_trip(tmp_path):
    model = _tiny(num_bins=8, log_space=False)
    folder = save_pretrained(model, tmp_path / "dar")
    loaded = from_pretrained(folder).eval()
    assert isinstance(loaded, DARModel) and loaded.cfg == model.cfg
    image = torch.rand(1, 3, 40, 24)
    torch.testing.assert_close(loaded.predict_depth(image), model.predict_depth(image))
    assert model.predict_depth(image).shape == (1, 1, 40, 24)
    assert DARConfig.from_dict(model.cfg.to_dict()) == model.cfg
    with pytest.raises(ValueError, match="unknown DAR config keys"):
        DARConfig.from_dict({"bogus": 1})


def test_exported_dar_loads_in_a_fresh_process(tmp_path):
    """`from_pretrained` finds the "dar" kind through the `scalear.model_kinds` entry point, without the
    caller importing the depth domain."""
    import subprocess
    import sys

    from scalear.domains.depth.dar import create_dar
    from scalear.io import save_pretrained

    save_pretrained(create_dar("tiny"), tmp_path / "dar")
    code = f"from scalear.io import from_pretrained; print(type(from_pretrained({str(tmp_path / 'dar')!r})).__name__)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "DARModel", r.stderr[-2000:]
