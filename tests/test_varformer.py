"""Varformer: frozen parts stay frozen, DAE weights are per-image distributions, the prior stack sums to the
tokenizer's f_hat, the no-prior ablation has no prior, a tiny model learns to denoise, export round trip."""

from __future__ import annotations

import pytest
import torch

from scalear.datasets.restoration.data import load_skimage_photo
from scalear.domains.restoration.metrics import psnr
from scalear.domains.restoration.varformer import (FREEZE_GROUPS, VarformerConfig, create_varformer, init_from_var,
                                                   load_prior, varformer_loss)
from scalear.io import from_pretrained, save_pretrained
from scalear.var_checkpoints import CheckpointMismatchError
from scalear.vqvae import create_vqvae


def _photo_batch(n: int = 4, size: int = 32, seed: int = 0) -> torch.Tensor:
    im = torch.from_numpy(load_skimage_photo("astronaut")).permute(2, 0, 1).float() / 255
    im = torch.nn.functional.interpolate(im[None], (128, 128), mode="area")[0]
    g = torch.Generator().manual_seed(seed)
    tops = torch.randint(0, 128 - size, (n, 2), generator=g)
    return torch.stack([im[:, t : t + size, s : s + size] for t, s in tops.tolist()])


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_varformer("tiny")


def test_frozen_parameters_get_no_gradient_and_do_not_change(model):
    model.train()
    frozen = {id(p) for p in model.frozen_parameters()}
    assert frozen and all(not p.requires_grad for p in model.frozen_parameters())
    assert not model.prior.tokenizer.training and not model.prior.transformer.blocks.training
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    x = _photo_batch(2)
    loss, _, _ = varformer_loss(model, (x + 0.1 * torch.randn_like(x)).clamp(0, 1), x)
    loss.backward()
    opt.step()
    for n, p in model.named_parameters():
        if id(p) in frozen:
            assert p.grad is None, n
            assert torch.equal(p, before[n]), n
    changed = [n for n, p in model.named_parameters() if id(p) not in frozen and not torch.equal(p, before[n])]
    assert any(n.startswith("prior.enhance") for n in changed)  # feature loss
    assert any(n.startswith("prior.transformer.head") for n in changed)  # token loss
    assert any(n.startswith("prior.inject") for n in changed)  # token loss through the injection
    assert any(n.startswith(("dae", "aft", "enc")) for n in changed)  # L1
    opt.zero_grad()


def test_freeze_groups_are_configurable():
    m = create_varformer("tiny", freeze=[])
    assert m.frozen_parameters() == [] and all(p.requires_grad for p in m.parameters())
    m = create_varformer("tiny", freeze=list(FREEZE_GROUPS))
    tr = m.prior.transformer
    assert not tr.word_embed.weight.requires_grad and not tr.head.weight.requires_grad
    assert m.prior.inject[0].proj.weight.requires_grad and m.prior.enhance[0].body[0].weight.requires_grad
    with pytest.raises(ValueError, match="freeze groups"):
        VarformerConfig(freeze=("decoder",))


def test_scale_weights_are_distributions_that_respond_to_the_input(model):
    model.eval()
    x = _photo_batch(2)
    x = torch.cat([x[:1], x[:1] * 0.2, torch.rand_like(x[:1])])  # a photo, the same dark, noise
    with torch.no_grad():
        out = model(x)
    K = model.prior.num_scales
    assert len(out.scale_weights) == len(model.dae)
    for w in out.scale_weights:
        assert w.shape == (3, K) and bool((w >= 0).all())
        torch.testing.assert_close(w.sum(1), torch.ones(3))
        assert float((w[0] - w[1]).abs().max()) > 1e-4 and float((w[0] - w[2]).abs().max()) > 1e-4


def test_prior_stack_sums_to_the_tokenizers_fhat(model):
    model.eval()
    with torch.no_grad():
        prior = model.prior(_photo_batch(2))
    q = model.prior.tokenizer.quantize
    assert prior.maps.shape[1] == q.schedule.num_scales == len(prior.indices)
    torch.testing.assert_close(prior.maps.sum(1), q.decode(prior.indices), atol=1e-5, rtol=1e-5)
    assert prior.logits.shape[1:] == (q.schedule.total_tokens, q.vocab_size)
    # the maps are the greedy tokens' contributions: coarse scales are smooth, fine ones are not
    tv = (prior.maps.diff(dim=-1).abs().mean((0, 2, 3, 4)))
    assert float(tv[0]) < float(tv[-1])


def test_no_prior_ablation_has_no_prior_parameters_or_path():
    torch.manual_seed(0)
    with_prior, without = create_varformer("tiny"), create_varformer("tiny", use_prior=False)
    names = [n for n, _ in without.named_parameters()]
    assert not any(n.startswith(("prior.", "dae.", "aft.")) for n in names)
    assert without.frozen_parameters() == [] and without.prior is None
    unet = {n for n, _ in with_prior.named_parameters() if not n.startswith(("prior.", "dae.", "aft."))}
    assert unet == set(names)  # the same U-net
    x = _photo_batch(2)
    loss, logs, out = varformer_loss(without, x, x)
    assert out.prior is None and out.scale_weights == [] and set(logs) == {"l1"}


def test_restore_any_size_in_range(model):
    model.eval()
    deeper = create_varformer("tiny", widths=[8, 16, 24, 32]).eval()  # 4 levels, widths differing per level
    for m in (model, deeper):
        for H, W in [(32, 32), (7, 9), (45, 61)]:
            y = m.restore(torch.rand(1, 3, H, W))
            assert y.shape == (1, 3, H, W) and float(y.min()) >= 0 and float(y.max()) <= 1


def test_tiny_varformer_learns_to_denoise_a_fixed_batch():
    torch.manual_seed(0)
    m = create_varformer("tiny").train()
    clean = _photo_batch(4)
    noisy = (clean + 25 / 255 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=2e-3)
    losses, first = [], None
    for step in range(60):
        loss, logs, out = varformer_loss(m, noisy, clean)
        if first is None:
            first = float(psnr(out.image.detach().clamp(0, 1), clean).mean())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    m.eval()
    after = float(psnr(m.restore(noisy), clean).mean())
    noisy_psnr = float(psnr(noisy, clean).mean())
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5
    assert after > first + 1.0 and after > noisy_psnr + 1.0, (first, noisy_psnr, after)


def test_export_round_trip_is_identical(model, tmp_path):
    model.eval()
    save_pretrained(model, tmp_path / "varformer")
    again = from_pretrained(tmp_path / "varformer").eval()
    assert again.cfg.to_dict() == model.cfg.to_dict()
    x = torch.rand(2, 3, 36, 40)
    assert torch.equal(again.restore(x), model.restore(x))
    assert all(not p.requires_grad for p in again.frozen_parameters())


def test_init_from_var_state_dicts(tmp_path):
    src, m = create_varformer("tiny"), create_varformer("tiny")
    torch.save(src.prior.transformer.state_dict(), tmp_path / "var.pth")
    init_from_var(m, var_path=tmp_path / "var.pth")
    assert torch.equal(m.prior.transformer.blocks[0].attn.mat_qkv.weight, src.prior.transformer.blocks[0].attn.mat_qkv.weight)
    with pytest.raises(CheckpointMismatchError, match="does not fit"):
        init_from_var(create_varformer("tiny", transformer={"depth": 2}), var_path=tmp_path / "var.pth")


def test_load_prior_from_an_exported_tokenizer(tmp_path):
    tok = create_vqvae("tiny")
    save_pretrained(tok, tmp_path / "tok")
    m = load_prior(create_varformer("tiny"), tokenizer=tmp_path / "tok")
    assert torch.equal(m.prior.tokenizer.quantize.embedding.weight, tok.quantize.embedding.weight)
    save_pretrained(create_vqvae("small"), tmp_path / "small")
    with pytest.raises(ValueError, match="does not fit"):
        load_prior(m, tokenizer=tmp_path / "small")
    with pytest.raises(ValueError, match="no prior"):
        load_prior(create_varformer("tiny", use_prior=False), tokenizer=tmp_path / "tok")
