"""Sampling without the KV cache (recomputing every coarser scale at each scale) draws exactly the samples of
the cached sampler: same seed, same model, same indices, logits equal to float rounding."""

import pytest
import torch

from scalear import MultiScaleVQ, ScaleSchedule
from scalear.sampling import sample
from scalear.transformer import NextScaleTransformer

from conftest import small_transformer, transformer_conditions, var_top_k_top_p_filter

SCHED = ScaleSchedule.square((1, 2, 3, 4))
V = 32
VARIANTS = {
    "class": dict(num_classes=10),
    "prefix": dict(prefix_dim=12, max_prefix_len=9),
    "prefix_class": dict(prefix_dim=12, max_prefix_len=9, num_classes=10),
    "prefix_sees_start": dict(prefix_dim=12, max_prefix_len=9, num_classes=10, prefix_sees_start=True),
    "cross_attn": dict(num_classes=10, context_dim=12),
    "vector_shared_adaln": dict(cond_dim=6, shared_adaln=True),
}


def build(variant: str, schedule: ScaleSchedule = SCHED) -> tuple[NextScaleTransformer, MultiScaleVQ]:
    return small_transformer(schedule, V, peaked=True, **VARIANTS[variant]), MultiScaleVQ(V, 4, schedule).eval()


def conditions(variant: str, B: int) -> dict:
    return transformer_conditions(VARIANTS[variant], B)


def sample_both(model, q, B: int, **kw):
    run = lambda use_cache: sample(model, q, B, **kw, return_logits=True, use_cache=use_cache,
                                   generator=torch.Generator().manual_seed(7))
    return run(True), run(False)


@pytest.mark.parametrize("variant", VARIANTS)
def test_uncached_sampling_draws_the_same_tokens(variant):
    model, q = build(variant)
    cached, uncached = sample_both(model, q, 3, **conditions(variant, 3), guidance=1.5, top_k=12, top_p=0.9)
    for k, (a, b) in enumerate(zip(cached.indices, uncached.indices)):
        assert torch.equal(a, b), f"scale {k}: uncached sampling drew other tokens"
    for a, b in zip(cached.logits, uncached.logits):
        torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(uncached.f_hat, cached.f_hat)
    assert not any(block.attn.caching for block in model.blocks)  # both paths leave the cache off


@pytest.mark.parametrize(
    "schedule", [ScaleSchedule.triplane((1, 2, 4)), ScaleSchedule.seq_1d((2, 4, 8))], ids=["triplane", "1d"]
)
def test_uncached_sampling_on_other_layouts_with_averaged_embeddings(schedule):
    model, q = build("class", schedule)
    cached, uncached = sample_both(model, q, 2, label_B=torch.tensor([1, 4]), guidance=2.0, top_k=8, embed_samples=3)
    assert all(torch.equal(a, b) for a, b in zip(cached.indices, uncached.indices))
    for a, b in zip(cached.logits, uncached.logits):
        torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)


def test_forward_upto_matches_the_teacher_forced_pass_and_checks_lengths():
    model, q = build("prefix_class")
    B, kw = 2, conditions("prefix_class", 2)
    idx = [torch.randint(0, V, (B, n)) for n in SCHED.tokens_per_scale]
    drop = torch.zeros(B, dtype=torch.bool)
    full = model(q.teacher_forcing_input(idx), **kw, drop_B=drop)
    out = sample(model, q, B, **kw, forced_indices=idx, return_logits=True, use_cache=False)
    torch.testing.assert_close(torch.cat(out.logits, 1), full, atol=1e-4, rtol=1e-4)
    cond = model.condition(B, kw["label_B"], drop_B=drop)
    with pytest.raises(ValueError, match="length in"):
        model.forward_upto(torch.randn(B, 3, model.C), cond, None, kw["prefix_BPD"])


@pytest.mark.parametrize("top_k, top_p", [(0, 0.0), (5, 0.0), (0, 0.9), (900, 0.96), (7, 0.5)])
def test_fast_filter_masks_exactly_the_reference_tokens(top_k, top_p):
    """The unsorted top-k + in-place filtering masks the same tokens as the sorted reference, ties included."""
    from scalear.sampling import sample_tokens, top_k_top_p_filter

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 17, 1024, generator=g).round(decimals=1)  # many ties at the k-th value
    want = var_top_k_top_p_filter(logits, top_k, top_p)
    assert torch.equal(top_k_top_p_filter(logits, top_k, top_p), want)
    copy = logits.clone()
    assert torch.equal(top_k_top_p_filter(copy, top_k, top_p, inplace=True), want) and torch.equal(copy, want)
    a = sample_tokens(logits, top_k, top_p, generator=torch.Generator().manual_seed(1))
    probs = want.softmax(-1).view(-1, 1024)
    b = torch.multinomial(probs, 1, replacement=True, generator=torch.Generator().manual_seed(1)).view(3, 17, 1)
    assert torch.equal(a, b)
