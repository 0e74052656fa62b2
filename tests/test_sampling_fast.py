"""The inference fast paths (issue 19) change nothing but speed: oneDNN linear layers, the static KV cache, the
AdaLN modulation kept over a sampling run, the tokenizer decoder's channels-last / low-resolution upsampling
path, and CUDA graphs of the sampling steps (CUDA only). Each is compared with the plain path it replaces: the
same tokens (greedy and seeded), logits and images equal to float rounding. The tests taking ``device`` also run on CUDA where there is one (CI has none: run this file
on a lent GPU)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import scalear.cuda_graphs as cuda_graphs
import scalear.transformer as transformer
from scalear import MultiScaleVQ, ScaleSchedule
from scalear.sampling import sample
from scalear.transformer import NextScaleTransformer, linear
from scalear.vqvae import Upsample2x, _nearest2x_conv3x3, create_vqvae

from conftest import small_transformer, transformer_conditions, var_top_k_top_p_filter

pytestmark = pytest.mark.usefixtures("single_thread")

SCHED = ScaleSchedule.square((1, 2, 3, 4, 6))
V = 512
VARIANTS = {
    "class": dict(num_classes=10),
    "shared_adaln": dict(num_classes=10, shared_adaln=True),
    "prefix_cross_attn": dict(num_classes=10, prefix_dim=12, max_prefix_len=9, context_dim=12),
}


def build(variant: str, device: str = "cpu") -> tuple[NextScaleTransformer, MultiScaleVQ]:
    """Wide enough (256) that oneDNN's and BLAS's matmuls round differently."""
    torch.manual_seed(0)
    model = small_transformer(SCHED, V, latent_dim=8, width=256, peaked=True, **VARIANTS[variant])
    return model.to(device), MultiScaleVQ(V, 8, SCHED).eval().to(device)


def conditions(variant: str, B: int, device: str = "cpu") -> dict:
    kw = transformer_conditions(VARIANTS[variant], B, torch.Generator().manual_seed(1))
    return {k: v.to(device) for k, v in kw.items()}


def plain(monkeypatch, model, q, B, **kw):
    """The reference path: no KV cache (so no static cache and no kept modulation) and BLAS linear layers."""
    with monkeypatch.context() as m:
        m.setattr(transformer, "_ONEDNN_LINEAR", False)
        return sample(model, q, B, use_cache=False, return_logits=True, **kw)


@pytest.mark.slow
def test_torch_compile_runs_the_decoder_on_the_cpu():
    """``torch.compile`` (inductor) of a scalear decoder works on the CPU and gives the eager image: the oneDNN
    linear of its attention steps aside while compiling (inductor could not lower it)."""
    vae = create_vqvae("tiny").eval()
    side = vae.config.patch_nums[-1]
    f_hat = torch.randn(2, vae.config.z_channels, side, side, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(vae.fhat_to_img)(f_hat), vae.fhat_to_img(f_hat), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("recipe", [dict(temperature=0.0), dict(top_k=50, top_p=0.9), dict(top_k=0, top_p=0.0)],
                         ids=["greedy", "top_k_top_p", "plain_seeded"])
def test_fast_sampling_draws_the_plain_tokens(monkeypatch, variant, recipe, device):
    model, q = build(variant, device)
    B, kw = 3, dict(conditions(variant, 3, device), guidance=1.5, **recipe)
    fast = sample(model, q, B, return_logits=True, generator=torch.Generator(device).manual_seed(5), **kw)
    ref = plain(monkeypatch, model, q, B, generator=torch.Generator(device).manual_seed(5), **kw)
    for k, (a, b) in enumerate(zip(fast.indices, ref.indices)):
        assert torch.equal(a, b), f"scale {k}: the fast path drew other tokens"
    for a, b in zip(fast.logits, ref.logits):
        torch.testing.assert_close(a, b, atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(fast.f_hat, ref.f_hat)
    assert not any(block.attn.caching or block._ada_memo for block in model.blocks)  # nothing is left behind
    assert model._ada_memo is None


def test_onednn_linear_equals_f_linear():
    g = torch.Generator().manual_seed(0)
    x, b = torch.randn(2, 37, 256, generator=g), torch.randn(384, generator=g)
    w = torch.randn(384, 256, generator=g) / 16  # unit-variance outputs
    with torch.no_grad():
        torch.testing.assert_close(linear(x, w, b), F.linear(x, w, b), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(linear(x, w), F.linear(x, w), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(linear(x, w, b, gelu=True), F.gelu(F.linear(x, w, b), approximate="tanh"),
                                   atol=1e-5, rtol=1e-5)
        xt = x.transpose(0, 1)  # not contiguous
        torch.testing.assert_close(linear(xt, w, b), F.linear(xt, w, b), atol=1e-5, rtol=1e-5)
    # with autograd on, it is F.linear itself (and differentiable)
    wg = w.clone().requires_grad_()
    y = linear(x, wg, b, gelu=True)
    assert torch.equal(y, F.gelu(F.linear(x, wg, b), approximate="tanh"))
    y.sum().backward()
    assert wg.grad is not None


@pytest.mark.parametrize("variant", VARIANTS)
def test_static_kv_cache_equals_growing_cache_and_full_forward(variant, device):
    """Teacher-forced through the cache: the static buffers give exactly the logits of buffers regrown (and
    copied) at every scale, and those of the full teacher-forced forward up to float rounding."""
    model, q = build(variant, device)
    B, kw = 2, conditions(variant, 2, device)
    idx = [torch.randint(0, V, (B, n), generator=torch.Generator().manual_seed(k)).to(device) for k, n in
           enumerate(SCHED.tokens_per_scale)]
    static = sample(model, q, B, **kw, forced_indices=idx, return_logits=True)
    full = model(q.teacher_forcing_input(idx), **kw, drop_B=torch.zeros(B, dtype=torch.bool, device=device))
    torch.testing.assert_close(torch.cat(static.logits, 1), full, atol=2e-4, rtol=1e-4)

    kv_caching = model.kv_caching

    def tiny_capacity(enable: bool) -> None:  # room for one position: every call regrows and copies
        kv_caching(enable)
        for block in model.blocks:
            block.attn.cache_capacity = 1 if enable else 0

    model.kv_caching = tiny_capacity
    try:
        regrown = sample(model, q, B, **kw, forced_indices=idx, return_logits=True)
    finally:
        del model.kv_caching
    for a, b in zip(static.logits, regrown.logits):
        assert torch.equal(a, b)


def test_static_kv_cache_allocates_once_and_views_the_filled_part():
    model, q = build("class")
    B = 2
    model.kv_caching(True)
    with torch.no_grad():  # under autograd the cache concatenates (no in-place writes)
        try:
            cond = model.condition(B, torch.tensor([1, 2]))
            attn = model.blocks[0].attn
            model.forward_scale(model.embed_scale(0, cond), cond, None)
            buf = attn._k_buf
            assert buf.shape[2] == SCHED.total_tokens and attn.cached_k.shape[2] == 1
            x1 = model.embed_scale(1, cond, torch.randn(B, 4, 8))
            model.forward_scale(x1, cond, None)
            assert attn._k_buf is buf and attn.cached_k.shape[2] == 5
            assert attn.cached_k.data_ptr() == buf.data_ptr()  # a view, not a copy
            # the modulation of the same condition is computed once per run
            mods = model.blocks[0]._ada_memo[1]
            model.forward_scale(model.embed_scale(2, cond, torch.randn(B, 9, 8)), cond, None)
            assert model.blocks[0]._ada_memo[1] is mods
        finally:
            model.kv_caching(False)
    assert attn._k_buf is None and attn.cached_k is None and model.blocks[0]._ada_memo is None


@pytest.mark.parametrize("shape, bias", [((2, 8, 5, 7), True), ((1, 16, 4, 4), False)])
def test_low_resolution_upsample_conv_equals_nearest_then_conv(shape, bias):
    g = torch.Generator().manual_seed(0)
    conv = torch.nn.Conv2d(shape[1], shape[1], 3, padding=1, bias=bias)
    x = torch.randn(*shape, generator=g)
    with torch.no_grad():
        want = conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        torch.testing.assert_close(_nearest2x_conv3x3(x, conv), want, atol=1e-5, rtol=1e-5)
        xc = x.contiguous(memory_format=torch.channels_last)
        got = _nearest2x_conv3x3(xc, conv)
        assert got.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(Upsample2x(shape[1]).eval()(x).shape, want.shape)


@pytest.mark.parametrize("dims", [2, 3])
def test_fast_decoder_equals_the_training_path(dims, device):
    """Without autograd the decoder runs channels-last with the low-resolution upsampling convs; with autograd on
    it is the plain path. Same image up to float rounding, contiguous, for 2D and 3D tokenizers."""
    torch.manual_seed(0)
    m = create_vqvae("tiny" if dims == 2 else "tiny-3d").eval()
    with torch.no_grad():
        for n, p in m.named_parameters():  # unit-variance activations through every layer
            if p.ndim > 1:
                p.copy_(torch.randn_like(p) / p[0].numel() ** 0.5)
    m = m.to(device)
    f = torch.randn(2, m.config.z_channels, *m.schedule.latent_shape).to(device)
    with torch.no_grad():
        fast = m.fhat_to_img(f)
    with torch.enable_grad():
        ref = m.fhat_to_img(f).detach()
    assert fast.is_contiguous() and fast.shape == ref.shape
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("top_k, top_p", [(900, 0.96), (50, 0.9), (3, 0.5), (1, 0.9), (1023, 0.99)])
def test_top_k_then_top_p_without_a_full_sort_masks_the_plain_tokens(top_k, top_p):
    from scalear.sampling import _top_k_then_top_p_, sample_tokens

    g = torch.Generator().manual_seed(top_k)
    logits = torch.randn(3, 40, 1024, generator=g) * 3  # continuous: no tie at the k-th value
    want = var_top_k_top_p_filter(logits, top_k, top_p)
    got = logits.clone()
    assert _top_k_then_top_p_(got, top_k, top_p)  # the fast path was taken
    assert torch.equal(got, want)
    a = sample_tokens(logits, top_k, top_p, generator=torch.Generator().manual_seed(2))
    b = torch.multinomial(want.softmax(-1).view(-1, 1024), 1, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a.view(-1, 1), b)
    # a tie at the k-th value: declined, logits untouched (the plain path keeps every tied token)
    tied = logits.clone()
    kth = tied[0, 0].topk(top_k + 1).indices
    tied[0, 0, kth[-1]] = tied[0, 0, kth[-2]]
    before = tied.clone()
    assert not _top_k_then_top_p_(tied, top_k, top_p) and torch.equal(tied, before)


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device (run this file on a GPU)")


def test_cuda_graphs_are_refused_where_they_cannot_run():
    model, q = build("class")
    with pytest.raises(ValueError, match="CUDA device; this one is on cpu"):
        sample(model, q, 2, label_B=torch.tensor([1, 2]), cuda_graphs=True)
    with pytest.raises(ValueError, match="needs use_cache=True"):
        sample(model, q, 2, label_B=torch.tensor([1, 2]), cuda_graphs=True, use_cache=False)
    assert not any(block.attn.caching for block in model.blocks)


@needs_cuda
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("recipe", [dict(temperature=0.0), dict(top_k=50, top_p=0.9)], ids=["greedy", "top_k_top_p"])
def test_cuda_graphs_draw_the_eager_tokens(variant, recipe, device):
    """Replayed graphs give the eager sampler's logits and tokens, also for a second run with other conditions (the
    same graphs, new inputs) and after a change of batch size (a new capture)."""
    if device != "cuda":
        pytest.skip("CUDA only")
    model, q = build(variant, device)
    captures = []
    try:
        for B, seed in ((3, 1), (3, 2), (2, 3)):  # the second run replays the first one's graphs
            cond = conditions(variant, B, device)
            cond = {k: (v + seed) % 10 if k == "label_B" else v * seed for k, v in cond.items()}  # other values
            kw = dict(cond, guidance=1.5, return_logits=True, **recipe)
            eager = sample(model, q, B, generator=torch.Generator(device).manual_seed(seed), **kw)
            graphed = sample(model, q, B, generator=torch.Generator(device).manual_seed(seed), cuda_graphs=True, **kw)
            for k, (a, b) in enumerate(zip(eager.indices, graphed.indices)):
                assert torch.equal(a, b), f"batch {B}, seed {seed}, scale {k}: the graphs drew other tokens"
            for a, b in zip(eager.logits, graphed.logits):
                torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(graphed.f_hat, eager.f_hat)
            captures.append(cuda_graphs._CAPTURED[model])
        assert captures[1] is captures[0] and captures[2] is not captures[0]
        assert not any(block.attn.caching or block._ada_memo for block in model.blocks)
    finally:
        cuda_graphs.release(model)
    assert model not in cuda_graphs._CAPTURED


@needs_cuda
def test_cuda_graphs_under_bf16_autocast_and_without_guidance():
    """bf16 autocast (the graphs cast the weights themselves: autocast's cache is off inside a capture) and an
    unguided run, whose returned logits are copies of the graphs' output buffers."""
    model, q = build("class", "cuda")
    label = torch.tensor([1, 4], device="cuda")
    try:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            eager = sample(model, q, 2, label_B=label, guidance=1.5, temperature=0.0)
            graphed = sample(model, q, 2, label_B=label, guidance=1.5, temperature=0.0, cuda_graphs=True)
        assert all(torch.equal(a, b) for a, b in zip(eager.indices, graphed.indices))
        first = sample(model, q, 2, label_B=label, temperature=0.0, return_logits=True, cuda_graphs=True)
        again = sample(model, q, 2, label_B=label.flip(0), temperature=0.0, return_logits=True, cuda_graphs=True)
        eager = sample(model, q, 2, label_B=label, temperature=0.0, return_logits=True)
        for a, b in zip(first.logits, eager.logits):  # not overwritten by the second run's replays
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        assert not all(torch.equal(a, b) for a, b in zip(first.logits, again.logits))
        model.train()
        with pytest.raises(ValueError, match="model.eval"):
            sample(model, q, 2, label_B=label, cuda_graphs=True)
    finally:
        cuda_graphs.release(model)
