"""Properties of the multi-scale residual quantizer (VAR Sec. 3.2) on every layout."""

import pytest
import torch

from scalear import MultiScaleVQ, ScaleSchedule
from scalear.quant import PhiStack, resize

SCHEDULES = {
    "1d": ScaleSchedule.seq_1d((1, 2, 4, 8, 16)),
    "2d": ScaleSchedule.square((1, 2, 3, 4, 6, 8)),
    "3d": ScaleSchedule.volume_3d((1, 2, 3, 4)),
    "triplane": ScaleSchedule.triplane((1, 2, 4, 8)),
}


def multiscale_fields(s: ScaleSchedule, batch: int, dim: int) -> torch.Tensor:
    """Latents with content at every scale: noise of each scale's size, upsampled, with decaying energy."""
    f = 0
    for k in range(s.num_scales):
        f = f + resize(torch.randn(batch, dim, *s.token_shape(k)) * 0.7**k, s.final_shape, s.kind, up=True)
    return f


def fit(q: MultiScaleVQ, steps: int = 150) -> MultiScaleVQ:
    opt = torch.optim.Adam(q.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = q(multiscale_fields(q.schedule, 16, q.dim)).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return q.eval()


@pytest.fixture(scope="module")
def trained() -> dict[str, MultiScaleVQ]:
    torch.manual_seed(0)
    return {k: fit(MultiScaleVQ(128, 4, s, restart_every=20)) for k, s in SCHEDULES.items()}


@pytest.mark.parametrize("kind", SCHEDULES)
@pytest.mark.parametrize("cosine", [False, True])
def test_codebook_lookup_round_trip(kind, cosine):
    """indices -> code vectors -> indices is the identity at every scale (distinct codes)."""
    s = SCHEDULES[kind]
    q = MultiScaleVQ(64, 4, s, use_cosine=cosine)
    for k in range(s.num_scales):
        idx = torch.randint(0, 64, (3, s.tokens_per_scale[k]))
        vectors = q.embedding(idx).reshape(-1, 4)
        assert torch.equal(q.lookup(vectors).view_as(idx), idx)


@pytest.mark.parametrize("kind", SCHEDULES)
def test_encode_decode_consistent_with_forward(kind, trained):
    """encode -> decode gives exactly the f_hat of the training forward and of the cumulative encoder."""
    q = trained[kind]
    f = multiscale_fields(q.schedule, 4, 4)
    idx = q.encode(f)
    assert [tuple(i.shape) for i in idx] == [(4, n) for n in q.schedule.tokens_per_scale]
    f_hat = q.decode(idx)
    out = q(f)
    torch.testing.assert_close(f_hat, out.f_hat, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(f_hat, q.encode_fhats(f)[-1])
    assert all(torch.equal(a, b) for a, b in zip(idx, out.indices))


@pytest.mark.parametrize("kind", SCHEDULES)
def test_error_falls_monotonically_with_scales(kind, trained):
    q = trained[kind]
    f = multiscale_fields(q.schedule, 8, 4)
    errors = [(fh - f).pow(2).mean().item() for fh in q.encode_fhats(f)]
    assert all(b < a for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.1 * errors[0]
    # decoding only the first k scales equals the cumulative f_hat after scale k
    idx = q.encode(f)
    torch.testing.assert_close(q.decode(idx, upto=2), q.encode_fhats(f)[1])


@pytest.mark.parametrize("kind", SCHEDULES)
def test_teacher_forcing_matches_sampling_steps(kind, trained):
    """The training inputs equal what the incremental sampling step produces from the same tokens."""
    q = trained[kind]
    f = multiscale_fields(q.schedule, 2, 4)
    idx = q.encode(f)
    tf = q.teacher_forcing_input(idx)
    assert tf.shape == (2, q.schedule.total_tokens - q.schedule.tokens_per_scale[0], 4)
    f_hat, chunks = q.empty_fhat(2), []
    for k in range(q.schedule.num_scales):
        f_hat, nxt = q.next_input(k, f_hat, q.embed(idx[k], k))
        if nxt is not None:
            chunks.append(nxt)
    torch.testing.assert_close(torch.cat(chunks, 1), tf)
    torch.testing.assert_close(f_hat, q.decode(idx))


def test_straight_through_gradient():
    q = MultiScaleVQ(32, 4, SCHEDULES["2d"])
    f = torch.randn(2, 4, 8, 8, requires_grad=True)
    g = torch.randn_like(f)
    (q(f).f_hat * g).sum().backward()
    torch.testing.assert_close(f.grad, g)


def test_vq_loss_pulls_codebook_and_phi():
    q = MultiScaleVQ(32, 4, SCHEDULES["2d"])
    q(torch.randn(2, 4, 8, 8)).loss.backward()
    assert q.embedding.weight.grad.abs().sum() > 0
    assert all(p.conv.weight.grad is not None for p in q.quant_resi.qresi_ls)


def test_dead_codes_are_restarted():
    """A codebook with most codes far from the data gets them re-seeded from the residuals."""
    s = SCHEDULES["2d"]
    q = MultiScaleVQ(64, 4, s, restart_every=5)
    with torch.no_grad():
        q.embedding.weight[1:] = 100.0  # only code 0 is near the data
    f = multiscale_fields(s, 8, 4)
    q.train()
    q(f)
    assert sum(u > 0 for u in q.usage_percent()) and max(q.usage_percent()) < 5
    for _ in range(5):
        q(f)
    assert (q.embedding.weight.abs() < 50).all(), "dead codes should have been re-seeded near the data"
    q(f)
    assert len(torch.cat(q.encode(f), 1).unique()) > 10


def _restart_on_rank(rank: int, world: int, store: str, f: torch.Tensor, out: str) -> None:
    """One DDP process: its contiguous half of the global batch through a quantizer due for a restart."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        torch.manual_seed(100 + rank)  # the global RNG differs per process: restarts must not depend on it
        q = _restart_ready_quantizer()
        q(f.chunk(world)[rank])
        if rank == 0:
            torch.save(q.embedding.weight.detach().clone(), out)
    finally:
        dist.destroy_process_group()


def _restart_ready_quantizer() -> MultiScaleVQ:
    torch.manual_seed(0)
    q = MultiScaleVQ(64, 4, SCHEDULES["2d"], restart_every=1)
    with torch.no_grad():
        q.embedding.weight[1:] = 100.0  # dead codes; the next training call restarts them
    return q.train()


def test_restarts_under_ddp_equal_one_process(tmp_path):
    """Two gloo processes, each with half of the global batch, restart dead codes exactly as one process with the
    whole batch: replacements come from the gathered batch with a generator seeded by the call count."""
    import torch.multiprocessing as mp

    f = multiscale_fields(SCHEDULES["2d"], 8, 4)
    one = _restart_ready_quantizer()
    torch.manual_seed(7)
    one(f)
    assert (one.embedding.weight[1:].abs() < 50).all()  # the restart happened
    out = tmp_path / "codes.pt"
    mp.spawn(_restart_on_rank, args=(2, str(tmp_path / "store"), f, str(out)), nprocs=2, join=True)
    torch.testing.assert_close(torch.load(out, weights_only=True), one.embedding.weight.detach(), rtol=0, atol=1e-6)


def test_var_partially_shared_phi_index():
    """VAR's 4 partially shared convs over 10 scales: nearest tick to k/9."""
    assert PhiStack(4, "2d", 10, share=4).scale_to_phi == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]
    assert PhiStack(4, "2d", 10, share=0).scale_to_phi == list(range(10))
    assert PhiStack(4, "2d", 10, share=1).scale_to_phi == [0] * 10


def test_bad_latent_shape_is_a_clear_error():
    q = MultiScaleVQ(32, 4, SCHEDULES["2d"])
    with pytest.raises(ValueError, match=r"expects \(B, 4, 8, 8\)"):
        q(torch.randn(2, 4, 16, 16))
