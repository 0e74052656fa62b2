"""Properties of the tokenizer autoencoder (scalear.vqvae)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from scalear.schedules import ScaleSchedule
from scalear.vqvae import VQVAE, VQVAE_PRESETS, VQVAEConfig, create_vqvae

# Small 2D/3D variants of the tiny presets, fast on two CPU cores.
TINY_2D = dict(ch=16, patch_nums=(1, 2, 4))  # 16x16 images, f4
TINY_3D = dict(ch=8, patch_nums=(1, 2, 4))  # 16^3 volumes, f4


pytestmark = pytest.mark.usefixtures("single_thread")


def smooth_batch(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """Low-frequency random signals in (-1, 1): learnable targets for overfitting."""
    g = torch.Generator().manual_seed(seed)
    B, C, *S = shape
    coarse = torch.randn(B, C, *[4] * len(S), generator=g)
    mode = "bicubic" if len(S) == 2 else "trilinear"
    return F.interpolate(coarse, size=tuple(S), mode=mode, align_corners=False).tanh()


def overfit(model: VQVAE, x: torch.Tensor, steps: int, lr: float = 2e-3) -> tuple[float, float]:
    """Train on one batch; return (reconstruction MSE at step 0, MSE of the eval-mode token round trip)."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    first = None
    for _ in range(steps):
        rec, q = model(x)
        mse = F.mse_loss(rec, x)
        first = mse.item() if first is None else first
        opt.zero_grad()
        (mse + q.loss).backward()
        opt.step()
    model.eval()
    final = F.mse_loss(model.indices_to_img(model.img_to_indices(x)), x).item()
    return first, final


def test_tiny_2d_overfits_a_few_images() -> None:
    torch.manual_seed(0)
    model = create_vqvae("tiny", **TINY_2D)
    x = smooth_batch((4, 3, 16, 16))
    first, final = overfit(model, x, steps=60)
    assert final < 0.2 * first, (first, final)
    # the codebook is in use at the finest scale
    assert model.quantize.usage_percent()[-1] > 5
    # coarse to fine: every added scale brings the quantized latent closer to the encoder's latent
    f = model.encode_latent(x).detach()
    errs = [F.mse_loss(f_hat, f).item() for f_hat in model.img_to_fhats(x)]
    assert all(b < a for a, b in zip(errs, errs[1:])), errs
    recs = model.img_to_scale_recs(x)
    assert len(recs) == model.schedule.num_scales
    assert all(r.min() >= -1 and r.max() <= 1 for r in recs)
    assert F.mse_loss(recs[-1], x) < F.mse_loss(recs[0], x)


def test_tiny_3d_overfits_a_few_volumes() -> None:
    torch.manual_seed(0)
    model = create_vqvae("tiny-3d", **TINY_3D)
    x = smooth_batch((2, 1, 16, 16, 16), seed=1)
    first, final = overfit(model, x, steps=30)
    assert final < 0.3 * first, (first, final)


@pytest.mark.parametrize("dims", [2, 3])
def test_token_round_trip_matches_training_reconstruction(dims: int) -> None:
    torch.manual_seed(0)
    model = create_vqvae("tiny" if dims == 2 else "tiny-3d", **(TINY_2D if dims == 2 else TINY_3D)).eval()
    x = smooth_batch((2, model.config.in_channels, *model.input_shape))
    with torch.no_grad():
        rec, q = model(x)
        idx = model.img_to_indices(x)
        from_idx = model.indices_to_img(idx)
        fhats = model.img_to_fhats(x)
    assert [i.shape for i in idx] == [(2, n) for n in model.schedule.tokens_per_scale]
    assert all(torch.equal(a, b) for a, b in zip(idx, q.indices))
    torch.testing.assert_close(from_idx, rec.clamp(-1, 1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.fhat_to_img(fhats[-1]), from_idx, atol=1e-5, rtol=1e-5)
    # decoding only the first k scales equals the k-th cumulative latent
    torch.testing.assert_close(model.quantize.decode(idx[:2]), fhats[1], atol=1e-5, rtol=1e-5)


def test_gradients_reach_encoder_through_straight_through_estimator() -> None:
    model = create_vqvae("tiny", **TINY_2D)
    x = smooth_batch((2, 3, 16, 16))
    rec, q = model(x)
    F.mse_loss(rec, x).backward()
    assert model.encoder.conv_in.weight.grad is not None
    assert model.encoder.conv_in.weight.grad.abs().sum() > 0


def test_bad_inputs_raise_clear_errors() -> None:
    model = create_vqvae("var-f16", ch=32, z_channels=32, vocab_size=64)  # same layout as VAR, narrow
    with pytest.raises(ValueError, match=r"250x250 px.*multiples of 16.*16x16 needs 256x256"):
        model.encode_latent(torch.zeros(1, 3, 250, 250))
    with pytest.raises(ValueError, match=r"1 channels; this tokenizer takes 3"):
        model.encode_latent(torch.zeros(1, 1, 256, 256))
    with pytest.raises(ValueError, match=r"\(B, 3, 256, 256\)"):
        model.encode_latent(torch.zeros(3, 256, 256))
    vol = create_vqvae("tiny-3d", **TINY_3D)
    with pytest.raises(ValueError, match=r"volume is 15x16x16 voxels.*4x4x4 needs 16x16x16"):
        vol.img_to_indices(torch.zeros(1, 1, 15, 16, 16))


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="not divisible by norm_groups"):
        VQVAEConfig(ch=20)
    with pytest.raises(ValueError, match="dims must be 2"):
        VQVAEConfig(dims=4)
    with pytest.raises(ValueError, match="'3d' schedule"):
        VQVAEConfig(dims=3, schedule=ScaleSchedule.square((1, 2)).to_dict())
    with pytest.raises(ValueError, match="unknown VQVAEConfig keys"):
        VQVAEConfig.from_dict({"chanels": 3})
    with pytest.raises(KeyError, match="available"):
        create_vqvae("huge")


@pytest.mark.parametrize("name", sorted(VQVAE_PRESETS))
def test_config_round_trip_builds_identical_model(name: str) -> None:
    with torch.device("meta"):
        model = create_vqvae(name)
        d = json.loads(json.dumps(model.config.to_dict()))
        again = VQVAE(VQVAEConfig.from_dict(d))
    assert again.config == model.config
    a, b = model.state_dict(), again.state_dict()
    assert list(a) == list(b)
    assert all(a[k].shape == b[k].shape for k in a)


def test_non_square_schedule() -> None:
    sched = ScaleSchedule.grid_2d((2, 4), (1, 2, 4))
    model = create_vqvae("tiny", ch=16, schedule=sched).eval()
    assert model.input_shape == (8, 16)
    x = smooth_batch((1, 3, 8, 16))
    idx = model.img_to_indices(x)
    assert [i.shape[1] for i in idx] == [1, 2, 8]
    assert model.indices_to_img(idx).shape == x.shape


def test_var_f16_preset_matches_released_tokenizer() -> None:
    with torch.device("meta"):
        model = create_vqvae("var-f16")
    cfg = model.config
    assert (cfg.ch, cfg.ch_mult, cfg.z_channels, cfg.vocab_size) == (160, (1, 1, 2, 2, 4), 32, 4096)
    assert model.input_shape == (256, 256)
    assert model.schedule.total_tokens == 680
    assert 100e6 < model.num_params() < 120e6  # VAR's VQVAE: ~109M parameters
