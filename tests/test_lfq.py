"""Lookup-free quantization: index <-> code bijection, idempotence, straight-through gradient, entropy loss."""

from __future__ import annotations

import math

import pytest
import torch

from scalear.domains.g3pt.lfq import LookupFreeQuantizer

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize("normalize", [False, True])
def test_index_code_round_trip_covers_all_codes(normalize):
    q = LookupFreeQuantizer(5, normalize=normalize)
    idx = torch.arange(32)
    codes = q.indices_to_codes(idx)
    assert torch.equal(q.codes_to_indices(codes), idx)
    assert len({tuple(c.tolist()) for c in codes}) == 32  # a bijection onto distinct corners
    s = 1 / math.sqrt(5) if normalize else 1.0
    assert torch.allclose(codes.abs(), torch.full_like(codes, s))
    if normalize:
        assert torch.allclose(codes.norm(dim=-1), torch.ones(32))
    assert torch.equal(q.embedding(idx), codes)
    # bit i of the index is channel i, least significant first
    assert q.indices_to_codes(torch.tensor(1))[0] > 0 and (q.indices_to_codes(torch.tensor(1))[1:] < 0).all()


def test_quantize_is_idempotent_and_indices_follow_signs():
    q = LookupFreeQuantizer(6)
    z = torch.randn(4, 7, 6)
    out = q(z)
    again = q(out.codes.detach())
    assert torch.equal(again.codes, out.codes.detach()) and torch.equal(again.indices, out.indices)
    assert torch.equal(torch.sign(out.codes), torch.sign(z))
    assert out.indices.shape == (4, 7) and int(out.indices.max()) < 64
    assert float(again.commit_loss) == 0.0


def test_straight_through_gradient_is_identity():
    q = LookupFreeQuantizer(4)
    z = torch.randn(3, 4, requires_grad=True)
    g = torch.randn(3, 4)
    (q(z).codes * g).sum().backward()
    assert torch.equal(z.grad, g)


def test_entropy_loss_penalises_collapse_and_rewards_uniform_use():
    d = 4
    q = LookupFreeQuantizer(d, tau=0.01)
    confident = 5.0
    one_code = torch.full((64, d), confident)  # every token firmly on the same code
    per, book = q.entropy_terms(one_code)
    assert per < 1e-3 and book < 1e-3
    assert abs(float(q(one_code).entropy_loss)) < 1e-3  # no reward: codebook entropy 0
    uniform = q.indices_to_codes(torch.arange(16).repeat(4)) * confident  # every code used equally, confidently
    per_u, book_u = q.entropy_terms(uniform)
    assert per_u < 1e-3 and abs(float(book_u) - d * math.log(2)) < 1e-3
    assert abs(float(q(uniform).entropy_loss) + d * math.log(2)) < 1e-3  # the minimum, -d log 2
    # undecided tokens (z = 0) pay the maximal per-sample entropy
    per0, book0 = q.entropy_terms(torch.zeros(8, d))
    assert abs(float(per0) - d * math.log(2)) < 1e-4 and abs(float(book0) - d * math.log(2)) < 1e-4


def test_factorised_codebook_entropy_matches_exact_on_independent_bits():
    z = torch.randn(512, 6)
    exact = LookupFreeQuantizer(6, exact_entropy_bits=12).entropy_terms(z)[1]
    bound = LookupFreeQuantizer(6, exact_entropy_bits=2).entropy_terms(z)[1]
    assert bound >= exact - 1e-5  # the factorised value is an upper bound
    assert abs(float(bound - exact)) < 0.05  # tight when bits are independent


def test_entropy_loss_gradient_spreads_codes():
    """Minimising the entropy loss from a collapsed start moves tokens onto more distinct codes."""
    q = LookupFreeQuantizer(3, tau=0.5)
    z = (torch.full((32, 3), 0.5) + 0.3 * torch.randn(32, 3)).requires_grad_(True)
    before = q.codes_to_indices(z.detach()).unique().numel()
    opt = torch.optim.SGD([z], lr=0.5)
    for _ in range(100):
        opt.zero_grad()
        q(z).entropy_loss.backward()
        opt.step()
    assert q.codes_to_indices(z.detach()).unique().numel() > max(before, 4)


def test_bad_inputs_raise():
    q = LookupFreeQuantizer(4)
    with pytest.raises(ValueError, match=r"\(\.\.\., 4\)"):
        q(torch.randn(2, 5))
    with pytest.raises(TypeError):
        q.indices_to_codes(torch.zeros(2))
