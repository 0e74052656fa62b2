"""G3PT's Cross-scale Querying Transformer on the cross-scale quantizer: cached sampling vs teacher forcing,
conditions, training signal, export."""

from __future__ import annotations

import pytest
import torch

from scalear.domains.g3pt.generator import G3PTGenerator, create_generator
from scalear.domains.g3pt.tokenizer import create_tokenizer
from scalear.io import from_pretrained, save_pretrained

pytestmark = pytest.mark.usefixtures("single_thread")

SMALL_TOK = dict(patch_nums=(1, 4, 16), width=32, heads=2, code_bits=6, num_freqs=3)
SMALL_GEN = dict(transformer=dict(depth=2, width=64, num_heads=2))


@pytest.fixture(scope="module")
def tok():
    torch.manual_seed(0)
    return create_tokenizer("tiny", **SMALL_TOK).eval()


def test_cached_greedy_sampling_equals_teacher_forced_argmax(tok):
    gen = create_generator("tiny", tokenizer=tok, num_classes=3, **SMALL_GEN).eval()
    labels = torch.tensor([0, 1, 2, 1])
    out = gen.sample(tok, labels, guidance=0.0, temperature=0.0, return_logits=True)
    assert [tuple(i.shape) for i in out.indices] == [(4, 1), (4, 4), (4, 16)]
    logits = gen(tok.quantize.teacher_forcing_input(out.indices), labels, drop_B=torch.zeros(4, dtype=torch.bool))
    assert torch.equal(logits.argmax(-1), torch.cat(out.indices, 1))
    assert torch.allclose(logits, torch.cat(out.logits, 1), atol=1e-4)
    uncached = gen.sample(tok, labels, guidance=0.0, temperature=0.0, use_cache=False)
    assert all(torch.equal(a, b) for a, b in zip(out.indices, uncached.indices))


def test_guided_sampling_is_seeded_and_depends_on_the_label(tok):
    gen = create_generator("tiny", tokenizer=tok, num_classes=3, **SMALL_GEN).eval()
    with torch.no_grad():  # make the label matter at init: a large class embedding
        gen.transformer.class_emb.weight.mul_(50)
    a = gen.generate(tok, torch.tensor([0, 0]), seed=1, guidance=3.0)
    b = gen.generate(tok, torch.tensor([0, 0]), seed=1, guidance=3.0)
    c = gen.generate(tok, torch.tensor([2, 2]), seed=1, guidance=3.0)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))
    assert all(0 <= int(i.min()) and int(i.max()) < tok.quantize.vocab_size for i in a)


def test_image_conditioned_generator_samples_and_trains(tok):
    gen = create_generator("tiny", tokenizer=tok, condition="image", image_size=16, encoder_channels=(8, 16), **SMALL_GEN)
    images = torch.rand(2, 4, 16, 16)  # depth + normal renders
    pts = torch.rand(2, 64, 3) - 0.5
    loss, logs = gen.loss(tok, pts, images=images)
    loss.backward()
    assert gen.image_encoder.body[0].weight.grad.abs().sum() > 0
    gen.eval()
    idx = gen.generate(tok, images=images, seed=0)
    assert [tuple(i.shape) for i in idx] == [(2, 1), (2, 4), (2, 16)]


def test_generator_fits_fixed_tokens(tok):
    """A few steps of next-scale cross-entropy on fixed shapes lower the loss a lot (the model can learn)."""
    gen = create_generator("tiny", tokenizer=tok, num_classes=2, cond_drop_rate=0.0, **SMALL_GEN)
    pts, labels = torch.rand(4, 64, 3) - 0.5, torch.tensor([0, 1, 0, 1])
    opt = torch.optim.AdamW(gen.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss, logs = gen.loss(tok, pts, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(logs["ce"])
    assert losses[-1] < 0.5 * losses[0], losses[::5]


def test_save_load_and_mismatch(tok, tmp_path):
    gen = create_generator("tiny", tokenizer=tok, num_classes=3, **SMALL_GEN).eval()
    save_pretrained(gen, tmp_path / "gen")
    back = from_pretrained(tmp_path / "gen").eval()
    assert isinstance(back, G3PTGenerator) and back.cfg == gen.cfg
    a = gen.generate(tok, torch.tensor([1]), seed=0)
    assert all(torch.equal(x, y) for x, y in zip(a, back.generate(tok, torch.tensor([1]), seed=0)))
    other = create_tokenizer("tiny", **{**SMALL_TOK, "code_bits": 5})
    with pytest.raises(ValueError, match="does not match"):
        gen.generate(other, torch.tensor([0]))
    with pytest.raises(ValueError, match="labels must be in"):
        gen.generate(tok, torch.tensor([5]))
