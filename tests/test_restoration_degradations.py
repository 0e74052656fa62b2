"""Synthetic degradations: each does what its model says (measured), is seeded, and refuses bad parameters."""

import math

import pytest
import skimage.data
import torch

from scalear.datasets.restoration import (ALL_IN_ONE, DEGRADATIONS, EVAL_SUITE, Compose, DefocusBlur, Downsample,
                                          GaussianBlur, GaussianNoise, Haze, JPEGCompression, LowLight, MotionBlur,
                                          PoissonNoise, RainStreaks, RandomSubset, build_degradation, eval_suite)
from scalear.datasets.restoration.degradations import disk_kernel

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def photo() -> torch.Tensor:
    """Two 96x96 crops of a real photograph, (2, 3, 96, 96) in [0, 1]."""
    x = torch.from_numpy(skimage.data.astronaut()).permute(2, 0, 1).float() / 255
    return torch.stack([x[:, 40:136, 180:276], x[:, 300:396, 60:156]])


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return -10 * math.log10(((a - b) ** 2).mean().item())


def high_freq_energy(x: torch.Tensor) -> float:
    """Energy of the discrete Laplacian (interior pixels)."""
    lap = 4 * x[..., 1:-1, 1:-1] - x[..., :-2, 1:-1] - x[..., 2:, 1:-1] - x[..., 1:-1, :-2] - x[..., 1:-1, 2:]
    return lap.pow(2).mean().item()


def test_gaussian_noise_std_is_sigma_over_255():
    x = torch.full((2, 3, 128, 128), 0.5)
    for sigma in (5.0, 25.0, 50.0):
        n = GaussianNoise(sigma)(x, gen()) - x
        assert n.std().item() * 255 == pytest.approx(sigma, rel=0.02)
        assert abs(n.mean().item()) < 1e-3


def test_gaussian_noise_range_is_sampled_per_image():
    x = torch.full((16, 3, 32, 32), 0.5)
    stds = ((GaussianNoise((0, 50))(x, gen()) - x).flatten(1).std(1) * 255).tolist()
    assert min(stds) >= 0 and max(stds) <= 51 and max(stds) - min(stds) > 10


def test_poisson_noise_variance_is_intensity_over_peak():
    x = torch.full((2, 3, 128, 128), 0.4)
    y = PoissonNoise(peak=200)(x, gen())
    assert y.mean().item() == pytest.approx(0.4, abs=2e-3)
    assert y.var().item() == pytest.approx(0.4 / 200, rel=0.05)
    # noisier at fewer photons
    assert (PoissonNoise(peak=20)(x, gen()) - x).std() > 2 * (y - x).std()


def test_jpeg_quality_100_is_nearly_identity_and_lower_quality_is_worse(photo):
    real = [psnr(JPEGCompression(q)(photo, gen()), photo) for q in (100, 90, 70, 50, 30, 10)]
    assert real[0] > 38
    assert all(a > b for a, b in zip(real, real[1:])), real
    soft = [psnr(JPEGCompression(q, differentiable=True)(photo, gen()), photo) for q in (100, 50, 10)]
    assert soft[0] > 38 and soft[0] > soft[1] > soft[2], soft


def test_jpeg_real_codec_quantises_to_8_bits(photo):
    y = JPEGCompression(60)(photo, gen())
    assert torch.allclose(y * 255, (y * 255).round(), atol=1e-4)


@pytest.mark.parametrize("make", [lambda s: GaussianBlur(s), lambda s: DefocusBlur(s), lambda s: MotionBlur(4 * s + 3, 30)])
def test_blur_removes_high_frequencies_and_keeps_the_mean(photo, make):
    energies = [high_freq_energy(photo)]
    for strength in (1.0, 2.0, 4.0):
        y = make(strength)(photo, gen())
        assert y.mean().item() == pytest.approx(photo.mean().item(), abs=3e-3)
        energies.append(high_freq_energy(y))
    assert all(a > b for a, b in zip(energies, energies[1:])), energies
    assert energies[-1] < 0.2 * energies[0]


def test_disk_kernel_is_normalised_and_round():
    k = disk_kernel(3.0)
    assert k.shape == (7, 7) and k.sum().item() == pytest.approx(1.0)
    assert torch.allclose(k, k.T) and torch.allclose(k, k.flip(0))
    assert k[3, 3] == k.max() and k[0, 0] == 0  # corners lie outside the disk


def test_motion_blur_smears_along_its_direction(photo):
    def grad_energy(x):
        return (x.diff(dim=-1) ** 2).mean().item(), (x.diff(dim=-2) ** 2).mean().item()

    gx0, gy0 = grad_energy(photo)
    gx, gy = grad_energy(MotionBlur(length=15, angle=0)(photo, gen()))  # horizontal motion
    assert gx / gx0 < 0.5 * (gy / gy0)


def test_haze_follows_the_scattering_model(photo):
    assert torch.equal(Haze(beta=0.0)(photo, gen()), photo)
    errors = [(Haze(beta=b, airlight=0.9)(photo, gen(1)) - photo).abs().mean().item() for b in (0.5, 1.0, 2.0, 4.0)]
    assert all(a < b for a, b in zip(errors, errors[1:])), errors
    black = torch.zeros(1, 3, 16, 16)
    y = Haze(beta=1.3, airlight=1.0, depth="constant")(black, gen())
    assert torch.allclose(y, torch.full_like(y, 1 - math.exp(-1.3)), atol=1e-6)
    top, bottom = Haze(beta=2.0, airlight=1.0, depth="vertical")(black, gen())[0, 0, [0, -1]]
    assert top.mean() > 0.8 and bottom.abs().max() < 1e-6  # far at the top, near at the bottom


def test_low_light_is_the_gamma_law(photo):
    y = LowLight(gamma=2.2, scale=0.5, sigma=0.0)(photo, gen())
    assert torch.allclose(y, 0.5 * photo.pow(2.2), atol=1e-6)
    assert y.mean() < 0.5 * photo.mean()
    const = LowLight(gamma=2.0, scale=0.25, sigma=0.0)(torch.full((1, 3, 8, 8), 0.8), gen())
    assert torch.allclose(const, torch.full_like(const, 0.25 * 0.64))
    noisy = LowLight(gamma=2.0, scale=0.5, sigma=10.0)(torch.full((1, 3, 64, 64), 0.8), gen())
    assert (noisy - 0.32).std().item() * 255 == pytest.approx(10.0, rel=0.05)


def test_rain_only_brightens_and_streaks_follow_the_angle():
    x = torch.full((1, 3, 128, 128), 0.3)
    assert torch.equal(RainStreaks(density=0.0)(x, gen()), x)
    rain = RainStreaks(density=0.01, length=25, angle=0, intensity=0.8)
    S = rain(x, gen()) - x
    assert S.min() >= 0 and S.max() > 0.3
    gx, gy = (S.diff(dim=-1) ** 2).mean(), (S.diff(dim=-2) ** 2).mean()
    assert gy < 0.3 * gx  # vertical streaks vary across columns, hardly along them
    light = (RainStreaks(density=0.002, length=25, angle=0, intensity=0.8)(x, gen()) - x).mean()
    assert light < S.mean()


def test_rain_eval_setting_is_rain100l_like(photo):
    """Rain100L's rainy inputs score about 26 dB against their clean images."""
    assert 22 < psnr(eval_suite(["rain"])["rain"](photo, gen()), photo) < 32


def test_downsample_loses_detail_with_the_factor(photo):
    x2, x4 = (psnr(Downsample(f)(photo, gen()), photo) for f in (2, 4))
    assert x2 > x4 + 1
    small = Downsample(4, upsample=False)(photo, gen())
    assert small.shape == (2, 3, 24, 24)
    assert small.mean().item() == pytest.approx(photo.mean().item(), abs=0.01)


@pytest.mark.parametrize("name", ALL_IN_ONE)
def test_every_degradation_is_seeded_clamped_and_shape_preserving(photo, name):
    op = build_degradation(name)
    y1, y2 = op(photo, gen(3)), op(photo, gen(3))
    assert torch.equal(y1, y2)
    assert y1.shape == photo.shape and y1.dtype == photo.dtype
    assert y1.min() >= 0 and y1.max() <= 1
    assert not torch.equal(y1, photo)
    assert not torch.equal(op(photo, gen(4)), y1)  # parameters and noise are drawn from the generator


def test_eval_suite_is_deterministic_and_labelled(photo):
    suite = eval_suite()
    assert list(suite) == list(EVAL_SUITE)
    for label, op in suite.items():
        assert op.label == label
        assert torch.equal(op(photo, gen(0)), op(photo, gen(0)))


def test_registry_and_spec_strings():
    assert set(ALL_IN_ONE) <= set(DEGRADATIONS)
    op = build_degradation("jpeg:quality=10..40")
    assert isinstance(op, JPEGCompression) and op.quality == (10.0, 40.0) and op.label == "jpeg:quality=10..40"
    op = build_degradation({"name": "haze", "beta": 1.0, "depth": "vertical"})
    assert isinstance(op, Haze) and op.beta == (1.0, 1.0) and op.depth == "vertical" and op.label == "haze"
    assert build_degradation("gaussian_noise", label="n").label == "n"
    comp = build_degradation(["gaussian_blur:sigma=1", "gaussian_noise:sigma=10"])
    assert isinstance(comp, Compose) and comp.label == "gaussian_blur:sigma=1+gaussian_noise:sigma=10"


def test_compose_applies_in_order():
    x = torch.full((1, 3, 32, 32), 0.5)
    y = Compose([LowLight(2.0, 0.5, 0.0), Haze(1.0, 1.0, "constant")])(x, gen())
    t = math.exp(-1.0)
    assert torch.allclose(y, torch.full_like(y, 0.5 * 0.25 * t + (1 - t)), atol=1e-6)


def test_random_subset_labels_say_what_was_applied():
    x = torch.full((32, 3, 16, 16), 0.5)
    mix = RandomSubset(["low_light:sigma=0", "haze:beta=1,airlight=1,depth=constant"])
    y, labels = mix.apply(x, gen())
    assert set(labels) == {"low_light:sigma=0", "haze:beta=1,airlight=1,depth=constant"}
    for yi, label in zip(y, labels):
        assert (yi.mean() < 0.5) == label.startswith("low_light")
    y2, labels2 = RandomSubset(["low_light:sigma=0", "gaussian_noise:sigma=5"], num=2).apply(x[:2], gen())
    assert labels2 == ["low_light:sigma=0+gaussian_noise:sigma=5"] * 2
    assert torch.equal(mix.apply(x, gen())[0], y)


@pytest.mark.parametrize("make, match", [
    (lambda: GaussianNoise(-1), "sigma must lie within"),
    (lambda: GaussianNoise((50, 10)), "low <= high"),
    (lambda: GaussianNoise("a"), "number or a"),
    (lambda: JPEGCompression(0), "quality"),
    (lambda: JPEGCompression(50, subsampling=5), "subsampling"),
    (lambda: Haze(depth="foo"), "depth must be"),
    (lambda: Downsample((2, 4), upsample=False), "single factor"),
    (lambda: MotionBlur(length=1), "length"),
    (lambda: RandomSubset(["haze"], num=2), "num"),
    (lambda: RandomSubset(["haze", "rain"], weights=[1, -1]), "weights"),
    (lambda: build_degradation("nope"), "unknown degradation 'nope'"),
    (lambda: build_degradation("gaussian_noise:sigma"), "key=value"),
    (lambda: build_degradation("gaussian_noise:size=3"), "size"),
])
def test_invalid_parameters_raise_clear_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_invalid_images_are_refused():
    op = GaussianNoise(10)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        op(torch.rand(1, 1, 8, 8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        op(torch.rand(1, 3, 8, 8) * 2)
    with pytest.raises(ValueError, match="float"):
        op(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
