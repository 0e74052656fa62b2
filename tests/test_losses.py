"""Properties of the tokenizer-training losses (scalear.losses)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from scalear.losses import (
    LPIPS,
    VGG16_FEATURE_CFG,
    NLayerDiscriminator,
    adaptive_gan_weight,
    hinge_d_loss,
    hinge_g_loss,
)

LPIPS_CHANNELS = (64, 128, 256, 512, 512)


pytestmark = pytest.mark.usefixtures("single_thread")


def random_vgg16_features(seed: int = 0) -> dict[str, torch.Tensor]:
    """torchvision-format ``features.{i}.weight/bias`` of VGG16 with He-normal random weights, plus the
    classifier keys a full torchvision checkpoint also carries (LPIPS must ignore them)."""
    g = torch.Generator().manual_seed(seed)
    sd, i, cin = {}, 0, 3
    for v in VGG16_FEATURE_CFG:
        if v == "M":
            i += 1
            continue
        sd[f"features.{i}.weight"] = torch.randn(v, cin, 3, 3, generator=g) * (2 / (9 * cin)) ** 0.5
        sd[f"features.{i}.bias"] = torch.randn(v, generator=g) * 0.01
        i, cin = i + 2, v
    sd["classifier.0.weight"] = torch.zeros(4, 7)
    return sd


def random_lpips_heads(seed: int = 1) -> dict[str, torch.Tensor]:
    """PerceptualSimilarity's ``vgg.pth`` layout: non-negative 1x1 heads ``lin{k}.model.1.weight``."""
    g = torch.Generator().manual_seed(seed)
    return {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1, generator=g) for k, c in enumerate(LPIPS_CHANNELS)}


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("lpips")
    vgg, heads = random_vgg16_features(), random_lpips_heads()
    paths = {"vgg": d / "vgg16.pth", "heads": d / "vgg.pth", "combined": d / "lpips_vgg.safetensors"}
    torch.save(vgg, paths["vgg"])
    torch.save(heads, paths["heads"])
    save_file({**vgg, **heads}, str(paths["combined"]))
    return paths


@pytest.fixture(scope="module")
def lpips(weight_files: dict[str, Path]) -> LPIPS:
    return LPIPS(weight_files["combined"])


def images(seed: int, n: int = 2, size: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


# ------------------------------------------------------------------------------ LPIPS
def test_lpips_is_zero_on_identical_images(lpips: LPIPS) -> None:
    x = images(0)
    assert torch.all(lpips(x, x) == 0)


def test_lpips_grows_with_noise_and_is_symmetric(lpips: LPIPS) -> None:
    x, n = images(0), torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    d = [lpips(x, (x + s * n).clamp(-1, 1)) for s in (0.05, 0.2, 0.8)]
    assert torch.all(d[0] > 0)
    assert torch.all(d[0] < d[1]) and torch.all(d[1] < d[2]), d
    y = images(1)
    torch.testing.assert_close(lpips(x, y), lpips(y, x))


def test_lpips_two_files_equal_one_combined_file(weight_files: dict[str, Path], lpips: LPIPS) -> None:
    split = LPIPS(weight_files["vgg"], weight_files["heads"])
    x, y = images(0), images(1)
    torch.testing.assert_close(split(x, y), lpips(x, y))
    torch.testing.assert_close(split.features[0].weight, random_vgg16_features()["features.0.weight"])
    torch.testing.assert_close(split.lins[4].weight, random_lpips_heads()["lin4.model.1.weight"])


def test_lpips_accepts_perceptualsimilarity_full_model_keys(tmp_path: Path, lpips: LPIPS) -> None:
    slices = {1: range(0, 4), 2: range(4, 9), 3: range(9, 16), 4: range(16, 23), 5: range(23, 30)}
    which = {i: s for s, r in slices.items() for i in r}
    sd = {}
    for k, v in random_vgg16_features().items():
        if k.startswith("features."):
            i = int(k.split(".")[1])
            sd[f"net.slice{which[i]}.{k.split('.', 1)[1]}"] = v
    sd.update({f"lins.{k[3]}.model.1.weight": v for k, v in random_lpips_heads().items()})
    torch.save(sd, tmp_path / "full.pth")
    x, y = images(0), images(1)
    torch.testing.assert_close(LPIPS(tmp_path / "full.pth")(x, y), lpips(x, y))


def test_lpips_names_the_file_when_keys_are_missing(weight_files: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"vgg16\.pth.*missing.*lins\.0\.weight"):
        LPIPS(weight_files["vgg"])  # heads missing
    partial = random_vgg16_features()
    del partial["features.28.weight"]
    torch.save({**partial, **random_lpips_heads()}, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match=r"partial\.pth.*features\.28\.weight"):
        LPIPS(tmp_path / "partial.pth")
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        LPIPS(tmp_path / "nope.pth")
    with pytest.raises(TypeError):
        LPIPS()  # type: ignore[call-arg]  # weights are required: no silent random init


def test_lpips_is_frozen_but_passes_gradients_to_inputs(lpips: LPIPS) -> None:
    lpips.train()
    assert not lpips.training
    assert not any(p.requires_grad for p in lpips.parameters())
    x = images(0).requires_grad_(True)
    lpips(x, images(1)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_lpips_gray_inputs_equal_repeated_rgb(lpips: LPIPS) -> None:
    x, y = images(0)[:, :1], images(1)[:, :1]
    torch.testing.assert_close(lpips(x, y), lpips(x.repeat(1, 3, 1, 1), y.repeat(1, 3, 1, 1)))
    with pytest.raises(ValueError, match="differ in shape"):
        lpips(x, images(1))


# ------------------------------------------------------------------------------ GAN
@pytest.mark.parametrize("dims", [2, 3])
def test_patchgan_gives_one_logit_per_patch_and_learns(dims: int) -> None:
    torch.manual_seed(0)
    d = NLayerDiscriminator(1, ndf=8, n_layers=2, dims=dims)
    size = (16,) * dims if dims == 3 else (32, 32)
    real = torch.rand(4, 1, *size) * 0.2 + 0.8  # bright
    fake = torch.rand(4, 1, *size) * 0.2 - 1.0  # dark
    out = d(real)
    assert out.shape[:2] == (4, 1) and out.ndim == 2 + dims and out[0, 0].numel() > 1
    opt = torch.optim.Adam(d.parameters(), lr=1e-3)
    losses = []
    for _ in range(15):
        loss = hinge_d_loss(d(real), d(fake))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert d(real).mean() > d(fake).mean()


def test_hinge_losses_values() -> None:
    # perfectly separated beyond the margin -> zero discriminator loss
    assert hinge_d_loss(torch.full((3,), 2.0), torch.full((3,), -2.0)) == 0
    # undecided discriminator -> loss 1
    assert hinge_d_loss(torch.zeros(3), torch.zeros(3)) == 1
    assert hinge_g_loss(torch.tensor([1.0, 3.0])) == -2


def test_adaptive_weight_balances_gradient_norms() -> None:
    torch.manual_seed(0)
    last = nn.Conv2d(4, 3, 3, padding=1)
    h = torch.randn(2, 4, 8, 8)
    out = last(h)
    rec = out.square().mean()
    gen = -out.mean()
    w = adaptive_gan_weight(rec, gen, last.weight)
    g_rec = torch.autograd.grad(rec, last.weight, retain_graph=True)[0]
    g_gen = torch.autograd.grad(gen, last.weight, retain_graph=True)[0]
    torch.testing.assert_close(w, g_rec.norm() / (g_gen.norm() + 1e-4))
    assert not w.requires_grad
    # scaling the GAN loss by c scales the weight by ~1/c (the weighted GAN gradient keeps its norm)
    w10 = adaptive_gan_weight(rec, 10 * gen, last.weight)
    torch.testing.assert_close(w10 * 10, w, rtol=1e-3, atol=0)
    assert adaptive_gan_weight(rec, 1e-12 * gen, last.weight, max_weight=5.0) == 5.0
    (rec + w * gen).backward()  # graphs were retained for the caller
