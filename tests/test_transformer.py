"""Properties of the next-scale transformer (VAR Sec. 3.3): exact block-causality and a KV cache that
reproduces the teacher-forced forward pass, for every way of conditioning."""

import pytest
import torch

from scalear import MultiScaleVQ, ScaleSchedule
from scalear.sampling import guidance_weight, sample, sample_tokens, top_k_top_p_filter
from scalear.transformer import TRANSFORMER_PRESETS, NextScaleTransformer, TransformerConfig, create_transformer

from conftest import small_transformer, transformer_conditions

SCHED = ScaleSchedule.square((1, 2, 3, 4))
VARIANTS = {
    "class": dict(num_classes=10),
    "vector": dict(cond_dim=6),
    "uncond": dict(),
    "shared_adaln": dict(num_classes=10, shared_adaln=True),
    "no_l2_norm": dict(num_classes=10, attn_l2_norm=False),
    "cross_attn": dict(num_classes=10, context_dim=12),
    "prefix": dict(prefix_dim=12, max_prefix_len=9),
    "prefix_sees_start": dict(prefix_dim=12, max_prefix_len=9, num_classes=10, prefix_sees_start=True),
}


def build(variant: str, schedule: ScaleSchedule = SCHED, V: int = 32) -> NextScaleTransformer:
    return small_transformer(schedule, V, **VARIANTS[variant])


def conditions(variant: str, B: int) -> dict:
    return transformer_conditions(VARIANTS[variant], B)


@pytest.mark.parametrize("variant", VARIANTS)
def test_block_causal_exactly(variant):
    """Changing scale k's input changes no logit of scales < k, and changes logits of scale >= k."""
    model, s = build(variant), SCHED
    kw = conditions(variant, 2)
    n0 = s.tokens_per_scale[0]
    x = torch.randn(2, s.total_tokens - n0, 4)
    base = model(x, **kw)
    for k in range(1, s.num_scales):
        x2 = x.clone()
        x2[:, s.scale_slice(k).start - n0 : s.scale_slice(k).stop - n0] += 1.0  # perturb scale k's inputs
        out = model(x2, **kw)
        before = s.offsets[k]
        assert torch.equal(out[:, :before], base[:, :before]), f"scale {k} leaked into coarser scales"
        assert not torch.allclose(out[:, s.scale_slice(k)], base[:, s.scale_slice(k)])


def test_prefix_sees_only_itself_and_targets_see_prefix():
    model = build("prefix")
    mask = model.attn_mask(9, torch.device("cpu"))
    P = 9
    assert mask[:P, :P].all() and not mask[:P, P:].any()  # prefix: only itself
    assert mask[P:, :P].all()  # targets see the whole prefix
    lvl = SCHED.level_ids()
    torch.testing.assert_close(mask[P:, P:], lvl[None, :] <= lvl[:, None])
    # changing the prefix changes the first scale's logits
    kw = conditions("prefix", 2)
    x = torch.randn(2, SCHED.total_tokens - 1, 4)
    a = model(x, **kw)
    kw["prefix_BPD"] = kw["prefix_BPD"] + 1
    assert not torch.allclose(a[:, :1], model(x, **kw)[:, :1])


def test_prefix_sees_start_adds_exactly_the_first_scale_to_the_prefix_rows():
    """DepthART's released inference: the prefix also attends to the start tokens and nothing finer; scale tokens
    see what they saw before (the cached path against this mask: test_kv_cache_equals_full_forward)."""
    model, P = build("prefix_sees_start"), 9
    mask = model.attn_mask(P, torch.device("cpu"))
    plain = build("prefix").attn_mask(P, torch.device("cpu"))
    n0 = SCHED.tokens_per_scale[0]
    assert mask[:P, : P + n0].all() and not mask[:P, P + n0 :].any()
    assert torch.equal(mask[P:], plain[P:])
    kw = conditions("prefix_sees_start", 2)
    with pytest.raises(ValueError, match="forward_first_scale"):
        model.prefill_prefix(kw["prefix_BPD"], model.condition(2, kw["label_B"]), None)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize(
    "schedule",
    [SCHED, ScaleSchedule.triplane((1, 2, 4)), ScaleSchedule.seq_1d((2, 4, 8)), ScaleSchedule.volume_3d((1, 2))],
    ids=["2d", "triplane", "1d", "3d"],
)
def test_kv_cache_equals_full_forward(variant, schedule):
    """Scale-by-scale cached inference on given tokens gives the logits of one teacher-forced pass."""
    model = build(variant, schedule)
    q = MultiScaleVQ(32, 4, schedule).eval()
    B = 3
    kw = conditions(variant, B)
    idx = [torch.randint(0, 32, (B, n)) for n in schedule.tokens_per_scale]
    full = model(q.teacher_forcing_input(idx), **kw, drop_B=torch.zeros(B, dtype=torch.bool))
    out = sample(model, q, B, **kw, forced_indices=idx, return_logits=True)
    torch.testing.assert_close(torch.cat(out.logits, 1), full, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out.f_hat, q.decode(idx))


def test_cfg_combines_cond_and_null_with_linear_ramp():
    model, q, B = build("class"), MultiScaleVQ(32, 4, SCHED).eval(), 2
    labels = torch.tensor([3, 7])
    idx = [torch.randint(0, 32, (B, n)) for n in SCHED.tokens_per_scale]
    tf = q.teacher_forcing_input(idx)
    cond = model(tf, label_B=labels, drop_B=torch.zeros(B, dtype=torch.bool))
    null = model(tf, label_B=labels, drop_B=torch.ones(B, dtype=torch.bool))
    out = sample(model, q, B, label_B=labels, guidance=2.0, forced_indices=idx, return_logits=True)
    for k in range(SCHED.num_scales):
        t = guidance_weight(2.0, k, SCHED.num_scales)
        sl = SCHED.scale_slice(k)
        torch.testing.assert_close(out.logits[k], (1 + t) * cond[:, sl] - t * null[:, sl], atol=1e-4, rtol=1e-4)
    assert guidance_weight(1.5, 0, 10) == 0 and guidance_weight(1.5, 9, 10) == 1.5


def test_top_k_top_p_keep_the_right_tokens():
    logits = torch.log(torch.tensor([[[0.05, 0.1, 0.15, 0.3, 0.4]]]))
    keep = lambda **kw: (~top_k_top_p_filter(logits, **kw).isinf()).nonzero()[:, -1].tolist()
    assert keep(top_k=2) == [3, 4]
    assert keep(top_p=0.65) == [3, 4]  # 0.4 + 0.3 >= 0.65
    assert keep(top_p=0.35) == [4]
    assert keep(top_k=3, top_p=0.99) == [2, 3, 4]
    assert keep(top_p=0.01) == [4]  # the most likely token always survives


def test_seeded_sampling_is_reproducible_and_respects_filters():
    model, q = build("class"), MultiScaleVQ(32, 4, SCHED).eval()
    labels = torch.arange(4)
    run = lambda seed: sample(model, q, 4, label_B=labels, guidance=1.5, top_k=5, top_p=0.9,
                              generator=torch.Generator().manual_seed(seed))
    a, b, c = run(0), run(0), run(1)
    assert all(torch.equal(x, y) for x, y in zip(a.indices, b.indices))
    assert not all(torch.equal(x, y) for x, y in zip(a.indices, c.indices))
    logits = torch.randn(2, 50, 32)
    draws = sample_tokens(logits, top_k=3, num_samples=8, generator=torch.Generator().manual_seed(0))
    allowed = logits.topk(3, dim=-1).indices
    assert (draws.unsqueeze(-1) == allowed.unsqueeze(2)).any(-1).all()
    torch.testing.assert_close(sample_tokens(logits, temperature=0), logits.argmax(-1, keepdim=True))


def test_var_presets_follow_the_depth_rule():
    for d in (16, 20, 24, 30):
        cfg = TRANSFORMER_PRESETS[f"var-d{d}"]
        assert (cfg.width, cfg.num_heads, cfg.num_classes) == (64 * d, d, 1000)
        assert cfg.drop_path_rate == pytest.approx(0.1 * d / 24)
    with torch.device("meta"):
        n = create_transformer("var-d16").num_params()
    assert 300e6 < n < 320e6  # VAR-d16: 310M
    small = create_transformer("tiny", depth=3, vocab_size=16, latent_dim=4, schedule=SCHED)
    assert small.cfg.width == 192 and small.cfg.num_heads == 3


def test_config_round_trip_and_errors():
    cfg = TransformerConfig(vocab_size=32, latent_dim=4, schedule=SCHED, depth=2, num_classes=10)
    assert TransformerConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown transformer config keys"):
        TransformerConfig.from_dict({**cfg.to_dict(), "dept": 3})
    model = NextScaleTransformer(cfg)
    with pytest.raises(ValueError, match="pass label_B"):
        model(torch.randn(1, SCHED.total_tokens - 1, 4))
    with pytest.raises(ValueError, match="expected 29 input tokens"):
        model(torch.randn(1, 5, 4), label_B=torch.tensor([0]))


def test_shared_adaln_offsets_get_vars_init():
    """VAR's init_weights scales ``ada_gss``: gammas (chunks 0, 1) by init_adaln_gamma, the rest by init_adaln."""
    torch.manual_seed(0)
    cfg = TransformerConfig(vocab_size=32, latent_dim=4, schedule=SCHED, depth=2, width=256, num_heads=4,
                            num_classes=10, shared_adaln=True, init_adaln=0.5, init_adaln_gamma=1e-3)
    gss = NextScaleTransformer(cfg).blocks[0].ada_gss  # randn / sqrt(C) before scaling
    assert gss[:, :, :2].std().item() == pytest.approx(1e-3 / 16, rel=0.1)
    assert gss[:, :, 2:].std().item() == pytest.approx(0.5 / 16, rel=0.1)
