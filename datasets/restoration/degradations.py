"""On-the-fly synthetic degradations for image restoration, built on kornia.

Every degradation is a callable ``op(x_B3HW, generator=None) -> y_B3HW`` on RGB float images in ``[0, 1]``;
the output is clamped to ``[0, 1]``. Parameters are a number (fixed) or a ``(low, high)`` range sampled
uniformly per image; each class documents the allowed range (outside it: ``ValueError``) and uses its
training range as the default. All randomness comes from ``generator`` (a CPU ``torch.Generator``; ``None``
uses torch's global RNG), drawn on the generator's device, so a seed gives the same output on every device.

Conventions follow the benchmarks' synthesis:

- noise sigma is in 8-bit units (``sigma = 25`` means ``25 / 255``), as in BSD68 / Urban100 denoising;
- JPEG is the real codec (Pillow, libjpeg quality 1-100, as LIVE1 / Classic5 deblocking) or kornia's
  differentiable approximation;
- rain is a Rain100L-style streak layer (Yang et al., JORDER, CVPR 2017) screen-blended onto the image;
- haze is the atmospheric scattering model ``I = J t + A (1 - t)``, ``t = exp(-beta d)`` (RESIDE, Li et al. 2019)
  with a depth proxy ``d`` in ``[0, 1]``;
- low light is ``scale * x ** gamma + noise`` (the gamma-and-scale synthesis used for LOL-like data).

Degradations are registered by name (:data:`DEGRADATIONS`, :func:`build_degradation`) and compose with
:class:`Compose` (in sequence) or :class:`RandomSubset` (a random subset per image, for all-in-one training).

Example:
    >>> g = torch.Generator().manual_seed(0)
    >>> op = build_degradation("gaussian_noise:sigma=25")
    >>> y = op(torch.full((1, 3, 64, 64), 0.5), g)
    >>> round((y - 0.5).std().item() * 255)
    25
"""

from __future__ import annotations

import io
import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Literal, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from kornia.enhance import jpeg_codec_differentiable
from kornia.filters import filter2d, gaussian_blur2d, get_motion_kernel2d
from kornia.geometry.transform import resize
from PIL import Image

Range = float | tuple[float, float]

#: name -> class of every registered degradation
DEGRADATIONS: dict[str, type["Degradation"]] = {}


def register_degradation(cls: type["Degradation"]) -> type["Degradation"]:
    """Class decorator: make ``cls`` buildable by its ``name`` through :func:`build_degradation`."""
    if not cls.name or cls.name in DEGRADATIONS:
        raise ValueError(f"degradation name {cls.name!r} is empty or already registered")
    DEGRADATIONS[cls.name] = cls
    return cls


def check_images(x: torch.Tensor, who: str = "degradation") -> None:
    """Raise ``ValueError`` unless ``x`` is a ``(B, 3, H, W)`` floating tensor with values in ``[0, 1]``."""
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 3 or not x.is_floating_point():
        desc = f"{tuple(x.shape)} {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{who}: expected RGB images as a (B, 3, H, W) float tensor in [0, 1], got {desc}")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise ValueError(f"{who}: values must lie in [0, 1], got [{x.min().item():.3g}, {x.max().item():.3g}]")


def _range(owner: str, name: str, value: Range, lo: float, hi: float) -> tuple[float, float]:
    """``value`` (a number or a ``(low, high)`` pair) as a checked range within ``[lo, hi]``."""
    pair = (value, value) if isinstance(value, (int, float)) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in pair):
        raise ValueError(f"{owner}: {name} must be a number or a (low, high) pair, got {value!r}")
    a, b = float(pair[0]), float(pair[1])
    if not lo <= a <= b <= hi:
        raise ValueError(f"{owner}: {name} must lie within [{lo:g}, {hi:g}] with low <= high, got {value!r}")
    return a, b


def _uniform(r: tuple[float, float], n: int, g: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """``n`` draws from ``U(r)`` as float32 on ``device`` (drawn on the generator's device)."""
    u = torch.rand(n, generator=g, device=g.device if g is not None else device)
    return (r[0] + (r[1] - r[0]) * u).to(device)


def _randint(r: tuple[float, float], n: int, g: torch.Generator | None) -> list[int]:
    """``n`` integers uniform in ``[ceil(r[0]), floor(r[1])]``."""
    lo, hi = math.ceil(r[0]), math.floor(r[1])
    return torch.randint(lo, hi + 1, (n,), generator=g, device=g.device if g is not None else "cpu").tolist()


def _randn_like(x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
    return torch.randn(x.shape, generator=g, device=g.device if g is not None else x.device).to(x)


def _border(x: torch.Tensor, k: int) -> str:
    """Reflect padding where the image is large enough for a ``k``-tap kernel, else replicate."""
    return "reflect" if k // 2 < min(x.shape[-2:]) else "replicate"


def _stack_kernels(kernels: list[torch.Tensor], size: int = 0) -> torch.Tensor:
    """Odd square kernels of any sizes, zero-padded to the largest (or ``size``), as ``(B, k, k)``."""
    k = max(size, *(kk.shape[-1] for kk in kernels))
    return torch.stack([F.pad(kk, [(k - kk.shape[-1]) // 2] * 4) for kk in kernels])


def _per_image_filter(x_BCHW: torch.Tensor, kernels: list[torch.Tensor], border: str | None = None) -> torch.Tensor:
    """Correlate image ``b`` with ``kernels[b]``."""
    stack_Bkk = _stack_kernels(kernels).to(x_BCHW)
    return filter2d(x_BCHW, stack_Bkk, border_type=border or _border(x_BCHW, stack_Bkk.shape[-1]))


class Degradation(ABC):
    """A synthetic degradation: ``op(x_B3HW, generator) -> y_B3HW``, clamped to ``[0, 1]``.

    ``label`` names the degradation in batches and evaluation tables (default: the registry ``name``).
    """

    name: ClassVar[str] = ""
    label: str

    def __call__(self, x_B3HW: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        check_images(x_B3HW, self.label)
        if x_B3HW.shape[0] == 0:
            return x_B3HW.clone()
        return self.forward(x_B3HW, generator).clamp(0.0, 1.0)

    @abstractmethod
    def forward(self, x_B3HW: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
        """The degradation itself, on checked input; the result is clamped by ``__call__``."""

    def apply(self, x_B3HW: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, list[str]]:
        """``(degraded images, label of each image)``."""
        return self(x_B3HW, generator), [self.label] * x_B3HW.shape[0]

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if k != "label")
        return f"{type(self).__name__}({params})"


@register_degradation
class NoDegradation(Degradation):
    """The clean image itself (``"none"``): scores what a model does to photos that are not degraded."""

    name = "none"

    def __init__(self) -> None:
        self.label = self.name

    def forward(self, x, g):
        return x.clone()


@register_degradation
class GaussianNoise(Degradation):
    """Additive white Gaussian noise ``x + sigma / 255 * n``, ``n ~ N(0, 1)`` i.i.d. per pixel and channel.

    Args:
        sigma: standard deviation in 8-bit units, within ``[0, 255]``; default ``(0, 50)``, the blind-denoising
            range (DnCNN-B; BSD68 / Urban100 are tested at 15, 25, 50).
    """

    name = "gaussian_noise"

    def __init__(self, sigma: Range = (0.0, 50.0)):
        self.sigma = _range(self.name, "sigma", sigma, 0.0, 255.0)
        self.label = self.name

    def forward(self, x, g):
        s_B111 = _uniform(self.sigma, x.shape[0], g, x.device).view(-1, 1, 1, 1) / 255.0
        return x + s_B111.to(x) * _randn_like(x, g)


@register_degradation
class PoissonNoise(Degradation):
    """Shot noise ``Poisson(peak * x) / peak``: ``peak`` photons at white, so the variance is ``x / peak``.

    Args:
        peak: photon count at intensity 1, within ``[1, 1e5]`` (smaller is noisier); default ``(10, 1000)``.
    """

    name = "poisson_noise"

    def __init__(self, peak: Range = (10.0, 1000.0)):
        self.peak = _range(self.name, "peak", peak, 1.0, 1e5)
        self.label = self.name

    def forward(self, x, g):
        p_B111 = _uniform(self.peak, x.shape[0], g, x.device).view(-1, 1, 1, 1).to(x)
        rate = (x * p_B111).float()
        counts = torch.poisson(rate.to(g.device) if g is not None else rate, generator=g).to(x)
        return counts / p_B111


@register_degradation
class GaussianBlur(Degradation):
    """Isotropic Gaussian blur (``kornia.filters.gaussian_blur2d``, reflect border, kernel ``2 ceil(3 sigma) + 1``).

    Args:
        sigma: standard deviation in pixels, within ``[0.1, 10]``; default ``(0.5, 3.0)``.
    """

    name = "gaussian_blur"

    def __init__(self, sigma: Range = (0.5, 3.0)):
        self.sigma = _range(self.name, "sigma", sigma, 0.1, 10.0)
        self.label = self.name

    def forward(self, x, g):
        s_B = _uniform(self.sigma, x.shape[0], g, x.device)
        k = 2 * math.ceil(3 * float(s_B.max())) + 1
        return gaussian_blur2d(x, (k, k), torch.stack([s_B, s_B], 1).to(x), border_type=_border(x, k))


def disk_kernel(radius: float) -> torch.Tensor:
    """A normalised ``(k, k)`` disk (pillbox) of ``radius`` pixels with anti-aliased rim, ``k = 2 ceil(radius) + 1``."""
    r = math.ceil(radius)
    yy, xx = torch.meshgrid(torch.arange(-r, r + 1.0), torch.arange(-r, r + 1.0), indexing="ij")
    k = (radius + 0.5 - torch.sqrt(yy**2 + xx**2)).clamp(0.0, 1.0)  # pixel coverage, ~linear across the rim
    return k / k.sum()


@register_degradation
class DefocusBlur(Degradation):
    """Defocus (out-of-focus) blur: correlation with a disk of ``radius`` pixels (the thin-lens circle of confusion).

    Args:
        radius: disk radius in pixels, within ``[0.5, 20]``; default ``(1, 4)``.
    """

    name = "defocus_blur"

    def __init__(self, radius: Range = (1.0, 4.0)):
        self.radius = _range(self.name, "radius", radius, 0.5, 20.0)
        self.label = self.name

    def forward(self, x, g):
        radii = _uniform(self.radius, x.shape[0], g, torch.device("cpu")).tolist()
        return _per_image_filter(x, [disk_kernel(r) for r in radii])


@register_degradation
class MotionBlur(Degradation):
    """Linear camera-motion blur (``kornia.filters.get_motion_kernel2d``, uniform along the line).

    Args:
        length: streak length in pixels (rounded up to odd), within ``[3, 63]``; default ``(5, 25)``.
        angle: motion direction in degrees, counter-clockwise from horizontal, within ``[-360, 360]``;
            default ``(0, 180)`` (a uniform line kernel is symmetric, so this covers every direction).
    """

    name = "motion_blur"

    def __init__(self, length: Range = (5.0, 25.0), angle: Range = (0.0, 180.0)):
        self.length = _range(self.name, "length", length, 3.0, 63.0)
        self.angle = _range(self.name, "angle", angle, -360.0, 360.0)
        self.label = self.name

    def forward(self, x, g):
        B = x.shape[0]
        lengths = [n | 1 for n in _randint(self.length, B, g)]
        angles = _uniform(self.angle, B, g, torch.device("cpu"))
        kernels = [get_motion_kernel2d(n, angles[b : b + 1], 0.0, mode="bilinear")[0] for b, n in enumerate(lengths)]
        return _per_image_filter(x, [k / k.sum() for k in kernels])


def jpeg_pil(x_3HW: torch.Tensor, quality: int, subsampling: int = 2) -> torch.Tensor:
    """Round-trip one image through Pillow's libjpeg encoder at ``quality`` (1-100); ``subsampling`` 0 = 4:4:4,
    1 = 4:2:2, 2 = 4:2:0 (the libjpeg default)."""
    u8_HW3 = (x_3HW.detach().float().clamp(0, 1) * 255.0).round().byte().permute(1, 2, 0).cpu().numpy()
    buf = io.BytesIO()
    Image.fromarray(u8_HW3).save(buf, format="JPEG", quality=int(quality), subsampling=subsampling)
    out_HW3 = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    return torch.from_numpy(out_HW3.copy()).permute(2, 0, 1).to(x_3HW) / 255.0


@register_degradation
class JPEGCompression(Degradation):
    """JPEG compression artefacts at a libjpeg ``quality`` factor.

    Args:
        quality: quality factor within ``[1, 100]`` (lower is blockier), rounded to an integer for the real
            codec; default ``(10, 90)``. LIVE1 / Classic5 deblocking is tested at 10, 20, 30, 40.
        differentiable: use ``kornia.enhance.jpeg_codec_differentiable`` (4:2:0, soft rounding) instead of the
            real encoder; the real one also quantises to 8 bits.
        subsampling: chroma subsampling of the real codec: 0 = 4:4:4, 1 = 4:2:2, 2 = 4:2:0 (default).
    """

    name = "jpeg"

    def __init__(self, quality: Range = (10.0, 90.0), differentiable: bool = False, subsampling: int = 2):
        self.quality = _range(self.name, "quality", quality, 1.0, 100.0)
        if subsampling not in (0, 1, 2):
            raise ValueError(f"{self.name}: subsampling must be 0 (4:4:4), 1 (4:2:2) or 2 (4:2:0), got {subsampling!r}")
        self.differentiable, self.subsampling = bool(differentiable), subsampling
        self.label = self.name

    def forward(self, x, g):
        q_B = _uniform(self.quality, x.shape[0], g, x.device)
        if self.differentiable:
            return jpeg_codec_differentiable(x, q_B.to(x))
        return torch.stack([jpeg_pil(x[b], round(float(q)), self.subsampling) for b, q in enumerate(q_B)])


@register_degradation
class RainStreaks(Degradation):
    """Synthetic rain: sparse random drops smeared into streaks by a line kernel, screen-blended onto the image
    (``1 - (1 - x)(1 - S)``, brighter only), after the Rain100L synthesis (Yang et al., CVPR 2017).

    Args:
        density: fraction of pixels that start a streak, within ``[0, 0.2]``; default ``(0.001, 0.01)``
            (at 0.002 with intensity 0.5 the input PSNR is about Rain100L's 26 dB).
        length: streak length in pixels (rounded up to odd), within ``[3, 63]``; default ``(9, 35)``.
        angle: streak tilt in degrees from vertical, within ``[-80, 80]``; default ``(-30, 30)``.
        intensity: streak brightness within ``[0, 1]``; default ``(0.3, 0.8)``.
        width: Gaussian thickening sigma in pixels, within ``[0.1, 3]``; default ``0.6``.
    """

    name = "rain"

    def __init__(self, density: Range = (0.001, 0.01), length: Range = (9.0, 35.0), angle: Range = (-30.0, 30.0),
                 intensity: Range = (0.3, 0.8), width: Range = 0.6):
        self.density = _range(self.name, "density", density, 0.0, 0.2)
        self.length = _range(self.name, "length", length, 3.0, 63.0)
        self.angle = _range(self.name, "angle", angle, -80.0, 80.0)
        self.intensity = _range(self.name, "intensity", intensity, 0.0, 1.0)
        self.width = _range(self.name, "width", width, 0.1, 3.0)
        self.label = self.name

    def streak_layer(self, B: int, H: int, W: int, g: torch.Generator | None, device: torch.device) -> torch.Tensor:
        """The rain layer ``S`` ``(B, 1, H, W)`` in ``[0, 1]``."""
        density = _uniform(self.density, B, g, device).view(-1, 1, 1, 1)
        u = torch.rand((B, 1, H, W), generator=g, device=g.device if g is not None else device).to(device)
        drops = (u < density).float() * (0.5 + 0.5 * u / density.clamp_min(1e-12))  # brightness ~ U(0.5, 1)
        lengths = [n | 1 for n in _randint(self.length, B, g)]
        angles = 90.0 + _uniform(self.angle, B, g, torch.device("cpu"))  # kornia's 0 deg is horizontal
        kernels = [get_motion_kernel2d(n, angles[b : b + 1], 0.0, mode="bilinear")[0] for b, n in enumerate(lengths)]
        kernels = [kk / kk.max() for kk in kernels]  # a drop -> a line of height ~1
        streaks = _per_image_filter(drops, kernels, border="constant")
        width = _uniform(self.width, B, g, torch.device("cpu"))
        k = 2 * math.ceil(3 * float(width.max())) + 1
        sigma_B2 = torch.stack([width, width], 1)
        streaks = gaussian_blur2d(streaks, (k, k), sigma_B2.to(device), border_type="constant")
        # normalise so that a single streak peaks at 1 after thickening
        single_B1kk = _stack_kernels(kernels, size=max(len(kk) for kk in kernels) + k - 1)[:, None]
        peak_B111 = gaussian_blur2d(single_B1kk, (k, k), sigma_B2, border_type="constant").amax((1, 2, 3), keepdim=True)
        intensity = _uniform(self.intensity, B, g, device).view(-1, 1, 1, 1)
        return (streaks / peak_B111.to(device)).clamp(0, 1) * intensity

    def forward(self, x, g):
        S_B1HW = self.streak_layer(x.shape[0], x.shape[2], x.shape[3], g, x.device).to(x)
        return 1.0 - (1.0 - x) * (1.0 - S_B1HW)


def haze(x_B3HW: torch.Tensor, beta: torch.Tensor | float, airlight: torch.Tensor | float,
         depth_B1HW: torch.Tensor) -> torch.Tensor:
    """Atmospheric scattering ``I = J t + A (1 - t)``, ``t = exp(-beta d)`` (Koschmieder; RESIDE's synthesis).

    ``beta`` and ``airlight`` are numbers or ``(B,)`` tensors; ``depth_B1HW`` is the (relative) scene depth.
    """
    beta_B111 = torch.as_tensor(beta, dtype=x_B3HW.dtype, device=x_B3HW.device).reshape(-1, 1, 1, 1)
    A_B111 = torch.as_tensor(airlight, dtype=x_B3HW.dtype, device=x_B3HW.device).reshape(-1, 1, 1, 1)
    t_B1HW = torch.exp(-beta_B111 * depth_B1HW.to(x_B3HW))
    return x_B3HW * t_B1HW + A_B111 * (1.0 - t_B1HW)


@register_degradation
class Haze(Degradation):
    """Homogeneous haze by atmospheric scattering (:func:`haze`) with a depth proxy ``d`` in ``[0, 1]``.

    Args:
        beta: scattering coefficient per unit of ``d``, within ``[0, 10]``; the farthest point keeps
            ``exp(-beta)`` of its radiance; default ``(0.5, 2.5)``.
        airlight: global atmospheric light ``A`` within ``[0, 1]``; default ``(0.7, 1.0)`` (RESIDE ITS's range).
        depth: the proxy: ``"vertical"`` (far at the top row, near at the bottom, as in outdoor photos),
            ``"random"`` (vertical plus a smooth random field) or ``"constant"`` (``d = 1``).
    """

    name = "haze"

    def __init__(self, beta: Range = (0.5, 2.5), airlight: Range = (0.7, 1.0),
                 depth: Literal["vertical", "random", "constant"] = "random"):
        self.beta = _range(self.name, "beta", beta, 0.0, 10.0)
        self.airlight = _range(self.name, "airlight", airlight, 0.0, 1.0)
        if depth not in ("vertical", "random", "constant"):
            raise ValueError(f"{self.name}: depth must be 'vertical', 'random' or 'constant', got {depth!r}")
        self.depth = depth
        self.label = self.name

    def depth_proxy(self, B: int, H: int, W: int, g: torch.Generator | None, device: torch.device) -> torch.Tensor:
        """``(B, 1, H, W)`` relative depth in ``[0, 1]``."""
        if self.depth == "constant":
            return torch.ones(B, 1, H, W, device=device)
        d = torch.linspace(1.0, 0.0, H, device=device).view(1, 1, H, 1).expand(B, 1, H, W)
        if self.depth == "vertical":
            return d
        coarse = torch.rand((B, 1, 4, 4), generator=g, device=g.device if g is not None else device).to(device)
        field = F.interpolate(coarse, size=(H, W), mode="bicubic", align_corners=True).clamp(0, 1)
        return 0.6 * d + 0.4 * field

    def forward(self, x, g):
        B, _, H, W = x.shape
        beta, A = _uniform(self.beta, B, g, x.device), _uniform(self.airlight, B, g, x.device)
        return haze(x, beta, A, self.depth_proxy(B, H, W, g, x.device))


@register_degradation
class LowLight(Degradation):
    """Low light as ``scale * x ** gamma + sigma / 255 * n`` (gamma darkening, exposure scale, sensor noise;
    the LOL-like synthesis of e.g. Lv et al., MBLLEN, BMVC 2018).

    Args:
        gamma: exponent within ``[1, 5]`` (1 = no gamma change); default ``(1.5, 3.0)``.
        scale: exposure factor within ``[0.01, 1]``; default ``(0.2, 0.6)``.
        sigma: Gaussian read noise in 8-bit units, within ``[0, 50]``; default ``(0, 8)``.
    """

    name = "low_light"

    def __init__(self, gamma: Range = (1.5, 3.0), scale: Range = (0.2, 0.6), sigma: Range = (0.0, 8.0)):
        self.gamma = _range(self.name, "gamma", gamma, 1.0, 5.0)
        self.scale = _range(self.name, "scale", scale, 0.01, 1.0)
        self.sigma = _range(self.name, "sigma", sigma, 0.0, 50.0)
        self.label = self.name

    def forward(self, x, g):
        B = x.shape[0]
        gamma, scale = (_uniform(r, B, g, x.device).view(-1, 1, 1, 1).to(x) for r in (self.gamma, self.scale))
        sigma = _uniform(self.sigma, B, g, x.device).view(-1, 1, 1, 1).to(x) / 255.0
        return scale * x.pow(gamma) + sigma * _randn_like(x, g)


@register_degradation
class Downsample(Degradation):
    """Bicubic down-sampling by an integer ``factor`` (anti-aliased, as MATLAB ``imresize`` for SR benchmarks),
    then by default bicubic up-sampling back to the input size.

    Args:
        factor: integer scale factor within ``[1, 8]`` (a range samples integers); default ``(2, 4)``.
        upsample: bring the result back to ``(H, W)``; with ``False`` the output is
            ``(H // factor, W // factor)`` and ``factor`` must be a single number.
    """

    name = "downsample"

    def __init__(self, factor: Range = (2.0, 4.0), upsample: bool = True):
        self.factor = _range(self.name, "factor", factor, 1.0, 8.0)
        if math.ceil(self.factor[0]) > math.floor(self.factor[1]):
            raise ValueError(f"{self.name}: factor range {factor!r} contains no integer")
        if not upsample and self.factor[0] != self.factor[1]:
            raise ValueError(f"{self.name}: upsample=False needs a single factor (the output size), got {factor!r}")
        self.upsample = bool(upsample)
        self.label = self.name

    def forward(self, x, g):
        H, W = x.shape[-2:]
        factors = _randint(self.factor, x.shape[0], g)
        out = []
        for b, f in enumerate(factors):
            if H // f < 1 or W // f < 1:
                raise ValueError(f"{self.label}: a {H}x{W} image is too small to downsample by {f}")
            y = resize(x[b : b + 1], (H // f, W // f), interpolation="bicubic", antialias=True)
            out.append(resize(y, (H, W), interpolation="bicubic") if self.upsample else y)
        return torch.cat(out)


class Compose(Degradation):
    """Apply ``ops`` one after the other (e.g. blur, then noise, then JPEG, the usual camera order)."""

    name = "compose"

    def __init__(self, ops: Sequence[Degradation | str | Mapping[str, Any]], label: str | None = None):
        self.ops = [build_degradation(op) for op in ops]
        if not self.ops:
            raise ValueError("Compose needs at least one degradation")
        self.label = label or "+".join(op.label for op in self.ops)

    def forward(self, x, g):
        for op in self.ops:
            x = op(x, g)
        return x


class RandomSubset(Degradation):
    """For each image, pick ``k`` of ``ops`` at random (``k`` uniform in ``num``, ops weighted by ``weights``)
    and apply them in the listed order; the label is the chosen ops' labels joined by ``+``.

    ``RandomSubset(ops)`` (one op per image) is the all-in-one training mix of AirNet / PromptIR.
    """

    name = "random_subset"

    def __init__(self, ops: Sequence[Degradation | str | Mapping[str, Any]], num: int | tuple[int, int] = 1,
                 weights: Sequence[float] | None = None):
        self.ops = [build_degradation(op) for op in ops]
        lo, hi = (num, num) if isinstance(num, int) else (int(num[0]), int(num[1]))
        if not self.ops or not 0 <= lo <= hi <= len(self.ops):
            raise ValueError(f"RandomSubset: need 0 <= num low <= high <= {len(self.ops)} (the number of ops), got {num!r}")
        w = [1.0] * len(self.ops) if weights is None else [float(v) for v in weights]
        if len(w) != len(self.ops) or min(w) < 0 or sum(v > 0 for v in w) < max(hi, 1):
            raise ValueError(f"RandomSubset: weights must be {len(self.ops)} non-negative numbers, at least {max(hi, 1)} "
                             f"of them positive; got {weights!r}")
        self.num, self.weights = (lo, hi), torch.tensor(w, dtype=torch.float64)
        self.label = "random(" + ",".join(op.label for op in self.ops) + ")"

    def choose(self, B: int, g: torch.Generator | None) -> list[tuple[int, ...]]:
        """The sorted op indices of each of ``B`` images."""
        ks = _randint(self.num, B, g)
        w = self.weights.to(g.device if g is not None else "cpu")
        return [tuple(sorted(torch.multinomial(w, k, generator=g).tolist())) if k else () for k in ks]

    def apply(self, x_B3HW, generator=None):
        check_images(x_B3HW, self.label)
        chosen = self.choose(x_B3HW.shape[0], generator)
        out = x_B3HW.clone()
        for subset in sorted(set(chosen)):
            idx = [b for b, c in enumerate(chosen) if c == subset]
            y = x_B3HW[idx]
            for i in subset:
                y = self.ops[i](y, generator)
            out[idx] = y
        return out, ["+".join(self.ops[i].label for i in c) or "identity" for c in chosen]

    def forward(self, x, g):
        return self.apply(x, g)[0]


def _parse_value(text: str) -> Any:
    """``"25"`` -> 25.0, ``"0..50"`` -> (0.0, 50.0), ``"true"`` -> True, else the string."""
    if ".." in text:
        lo, hi = text.split("..", 1)
        return (_parse_value(lo), _parse_value(hi))
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return int(text) if text.lstrip("-").isdigit() else float(text)
    except ValueError:
        return text


def build_degradation(spec: Degradation | str | Mapping[str, Any], label: str | None = None) -> Degradation:
    """A degradation from a spec: an instance (returned as is), a name (``"haze"``), a name with parameters
    (``"gaussian_noise:sigma=25"``, ``"jpeg:quality=10..40"`` for a range), a mapping
    ``{"name": "haze", "beta": 1.0}``, or a list of specs (a :class:`Compose`). The label is ``label``, else the spec string, else the name."""
    if isinstance(spec, (list, tuple)):
        return Compose(spec, label)
    if isinstance(spec, Degradation):
        if label:
            spec.label = label
        return spec
    if isinstance(spec, str):
        name, _, rest = spec.partition(":")
        params: dict[str, Any] = {}
        for item in filter(None, (s.strip() for s in rest.split(","))):
            key, eq, value = item.partition("=")
            if not eq:
                raise ValueError(f"degradation spec {spec!r}: expected key=value, got {item!r}")
            params[key.strip()] = _parse_value(value.strip())
        default_label = spec if rest else name
    elif isinstance(spec, Mapping):
        params = dict(spec)
        name = params.pop("name", None)
        label = label or params.pop("label", None)
        default_label = name
    else:
        raise ValueError(f"a degradation spec is a name, 'name:key=value,...', a mapping or a Degradation; got {spec!r}")
    name = str(name).strip()
    if name not in DEGRADATIONS:
        raise ValueError(f"unknown degradation {name!r}; known: {sorted(DEGRADATIONS)}")
    try:
        op = DEGRADATIONS[name](**params)
    except TypeError as e:
        raise ValueError(f"degradation {name!r}: {e}") from None
    op.label = label or str(default_label)
    return op


#: the all-in-one training mix: one degradation per image, each over its class's default (training) range
ALL_IN_ONE: tuple[str, ...] = ("gaussian_noise", "poisson_noise", "gaussian_blur", "defocus_blur", "motion_blur",
                               "jpeg", "rain", "haze", "low_light", "downsample")

#: fixed settings for evaluation, label -> spec (noise at the BSD68 levels, JPEG at a LIVE1 level, x4 SR)
EVAL_SUITE: dict[str, str] = {
    "noise15": "gaussian_noise:sigma=15",
    "noise25": "gaussian_noise:sigma=25",
    "noise50": "gaussian_noise:sigma=50",
    "poisson": "poisson_noise:peak=30",
    "gaussian_blur": "gaussian_blur:sigma=2",
    "defocus_blur": "defocus_blur:radius=3",
    "motion_blur": "motion_blur:length=15,angle=30",
    "jpeg20": "jpeg:quality=20",
    "rain": "rain:density=0.002,length=21,angle=10,intensity=0.5",
    "haze": "haze:beta=1.5,airlight=0.9,depth=vertical",
    "low_light": "low_light:gamma=2.5,scale=0.4,sigma=4",
    "sr_x4": "downsample:factor=4",
}


def all_in_one(ops: Sequence[str | Mapping[str, Any] | Degradation] = ALL_IN_ONE, num: int | tuple[int, int] = 1,
               weights: Sequence[float] | None = None) -> RandomSubset:
    """The all-in-one training degradation: :class:`RandomSubset` over ``ops`` (default :data:`ALL_IN_ONE`)."""
    return RandomSubset(ops, num, weights)


def eval_suite(labels: Sequence[str] | None = None) -> dict[str, Degradation]:
    """The :data:`EVAL_SUITE` degradations (all, or those named in ``labels``), labelled by their keys."""
    labels = list(EVAL_SUITE) if labels is None else list(labels)
    unknown = [lb for lb in labels if lb not in EVAL_SUITE]
    if unknown:
        raise ValueError(f"unknown evaluation degradations {unknown}; known: {list(EVAL_SUITE)}")
    return {lb: build_degradation(EVAL_SUITE[lb], label=lb) for lb in labels}
