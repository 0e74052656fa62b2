"""Tokenizer-training losses: PatchGAN discriminator, hinge GAN loss, VQGAN's adaptive weight, and LPIPS.

VAR trains its tokenizer with "L2 + VQ (commitment beta 0.25) + LPIPS + GAN" (VAR Sec. 3.2, following
VQGAN, Esser et al. 2021, Sec. 3.2); its training code was never released, so this module provides the
pieces in their standard form:

* :class:`NLayerDiscriminator`: pix2pix / taming-transformers PatchGAN (Isola et al. 2017), 2D or 3D.
* :func:`hinge_d_loss`, :func:`hinge_g_loss`: hinge GAN losses (taming's ``disc_loss="hinge"``).
* :func:`adaptive_gan_weight`: VQGAN Eq. 7, ``lambda = ||grad_GL[L_rec]|| / (||grad_GL[L_GAN]|| + 1e-4)``
  at the decoder's last layer ``GL``.
* :class:`LPIPS`: learned perceptual distance (Zhang et al. 2018) with a VGG16 trunk written here in plain
  torch (no torchvision). Weights must come from local files: torchvision's ``vgg16`` keys
  (``features.{i}.weight/bias``) and LPIPS's linear heads (``lin{k}.model.1.weight``, as in
  richzhang/PerceptualSimilarity ``weights/v0.1/vgg.pth``), in one combined file or two.

Images are in ``[-1, 1]``.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "NLayerDiscriminator",
    "hinge_d_loss",
    "hinge_g_loss",
    "adaptive_gan_weight",
    "LPIPS",
    "VGG16_FEATURE_CFG",
]

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_BN = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


# ------------------------------------------------------------------------------ PatchGAN
class NLayerDiscriminator(nn.Module):
    """PatchGAN discriminator (pix2pix / taming ``NLayerDiscriminator``) for images (``dims=2``) or volumes.

    ``n_layers`` stride-2 4x4 convs (widths ``ndf * min(2**n, 8)``) with LeakyReLU(0.2), one stride-1 conv,
    then a 1-channel stride-1 conv giving one real/fake logit per overlapping patch.

    Args:
        in_channels: input channels.
        ndf: width of the first layer.
        n_layers: number of stride-2 convs (3: 70x70 receptive field in 2D).
        dims: 2 or 3.
        norm: ``"batch"`` (taming's default), ``"group"`` (GroupNorm with up to 32 groups, batch-size independent)
            or ``"none"``.

    Example:
        >>> d = NLayerDiscriminator(3, ndf=16)
        >>> d(torch.zeros(2, 3, 64, 64)).shape
        torch.Size([2, 1, 6, 6])
    """

    def __init__(
        self,
        in_channels: int = 3,
        ndf: int = 64,
        n_layers: int = 3,
        dims: int = 2,
        norm: Literal["batch", "group", "none"] = "batch",
    ):
        super().__init__()
        if dims not in _CONV:
            raise ValueError(f"dims must be 2 or 3, got {dims}")
        if norm not in ("batch", "group", "none"):
            raise ValueError(f"norm must be 'batch', 'group' or 'none', got {norm!r}")
        conv = _CONV[dims]

        def norm_layer(c: int) -> nn.Module:
            if norm == "batch":
                return _BN[dims](c)
            if norm == "group":
                return nn.GroupNorm(math.gcd(32, c), c)
            return nn.Identity()

        use_bias = norm == "none"
        layers: list[nn.Module] = [conv(in_channels, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [
                conv(ndf * prev, ndf * mult, 4, stride=stride, padding=1, bias=use_bias),
                norm_layer(ndf * mult),
                nn.LeakyReLU(0.2, True),
            ]
        layers.append(conv(ndf * mult, 1, 4, stride=1, padding=1))
        self.main = nn.Sequential(*layers)
        self.apply(_pix2pix_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, *S) -> patch logits (B, 1, *S')."""
        return self.main(x)


def _pix2pix_init(m: nn.Module) -> None:
    """taming ``weights_init``: conv weights N(0, 0.02); norm weights N(1, 0.02), biases 0."""
    if isinstance(m, (nn.Conv2d, nn.Conv3d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm)):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss ``0.5 * (mean(relu(1 - D(x))) + mean(relu(1 + D(G(z)))))``."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def hinge_g_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """Generator hinge loss ``-mean(D(G(z)))``."""
    return -logits_fake.mean()


def adaptive_gan_weight(
    rec_loss: torch.Tensor,
    g_loss: torch.Tensor,
    last_layer: torch.Tensor,
    max_weight: float = 1e4,
    eps: float = 1e-4,
) -> torch.Tensor:
    """VQGAN's adaptive weight (Esser et al. 2021, Eq. 7): ratio of the gradient norms of the reconstruction
    loss and the generator loss w.r.t. ``last_layer`` (the decoder's last conv weight), clamped to
    ``[0, max_weight]`` and detached. Multiply the GAN loss by it (and by a global ``disc_weight``).

    Both losses must still have their graphs; the graphs are retained for the caller's ``backward``.
    """
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    return (rec_grad.norm() / (g_grad.norm() + eps)).clamp(0.0, max_weight).detach()


# ------------------------------------------------------------------------------ LPIPS
#: torchvision's vgg16 ``features``: conv widths and "M" (2x2 max pool); index i of the flattened stack
#: (conv, relu, ..., pool) is the ``features.{i}`` key.
VGG16_FEATURE_CFG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)
#: indices (into ``features``) of the ReLU outputs LPIPS compares: relu1_2, relu2_2, relu3_3, relu4_3, relu5_3.
_LPIPS_TAPS: tuple[int, ...] = (3, 8, 15, 22, 29)
_LPIPS_CHANNELS: tuple[int, ...] = (64, 128, 256, 512, 512)
# LPIPS ScalingLayer: maps [-1, 1] inputs to ImageNet-normalised ones.
_LPIPS_SHIFT = (-0.030, -0.088, -0.188)
_LPIPS_SCALE = (0.458, 0.448, 0.450)


def _load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a tensor dict from ``.safetensors`` or a torch file (``weights_only=True``, on CPU)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    sd = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(sd, dict):
        raise ValueError(f"{str(path)!r} holds a {type(sd).__name__}, not a state dict")
    return sd


def _normalize_lpips_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Accept the usual spellings and return ``features.{i}.*`` / ``lins.{k}.weight`` keys.

    Recognised: torchvision ``features.{i}.*`` (``classifier.*`` ignored); PerceptualSimilarity's full model
    ``net.slice{s}.{i}.*`` (i is the index into ``features``); heads ``lin{k}.model.1.weight`` or
    ``lins.{k}.model.1.weight``; any of these under a ``module.`` prefix.
    """
    out: dict[str, torch.Tensor] = {}
    for key, v in sd.items():
        k = key[len("module."):] if key.startswith("module.") else key
        if m := re.fullmatch(r"(?:features|net\.slice\d)\.(\d+)\.(weight|bias)", k):
            out[f"features.{m[1]}.{m[2]}"] = v
        elif m := re.fullmatch(r"lins?\.?(\d)\.model\.1\.weight", k):
            out[f"lins.{m[1]}.weight"] = v
    return out


class LPIPS(nn.Module):
    """LPIPS perceptual distance with a VGG16 trunk (Zhang et al. 2018), loaded from local weight files.

    ``d(x, y) = sum_k mean_hw( w_k . (n(f_k(x)) - n(f_k(y)))^2 )`` where ``f_k`` are VGG16's relu1_2 ...
    relu5_3 activations, ``n`` unit-normalises over channels and ``w_k`` are the learned 1x1 linear heads.
    All parameters are frozen; the module stays in eval mode.

    Args:
        weights: file with the VGG16 ``features.{i}.weight/bias`` (torchvision key format) and, if
            ``lin_weights`` is None, the heads ``lin{k}.model.1.weight`` too (``.pth``/``.pt`` via
            ``torch.load(weights_only=True)``, or ``.safetensors``).
        lin_weights: separate file with the heads (e.g. PerceptualSimilarity's ``weights/v0.1/vgg.pth``).

    Raises:
        ValueError: naming the file(s) and the missing keys when weights are incomplete or mis-shaped.

    Inputs are ``(B, 3, H, W)`` (or ``(B, 1, H, W)``, repeated to RGB) in ``[-1, 1]``; ``forward`` returns the
    per-sample distance ``(B,)``.
    """

    def __init__(self, weights: str | Path, lin_weights: str | Path | None = None):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for v in VGG16_FEATURE_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, int(v), 3, padding=1), nn.ReLU()]
                cin = int(v)
        self.features = nn.Sequential(*layers[: _LPIPS_TAPS[-1] + 1])  # the last pool is unused
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in _LPIPS_CHANNELS)
        self.register_buffer("shift", torch.tensor(_LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)

        files = [Path(weights)] + ([Path(lin_weights)] if lin_weights is not None else [])
        sd: dict[str, torch.Tensor] = {}
        for f in files:
            sd.update(_normalize_lpips_keys(_load_weights(f)))
        own = self.state_dict()
        missing = sorted(set(own) - set(sd))
        if missing:
            where = " + ".join(repr(str(f)) for f in files)
            raise ValueError(
                f"LPIPS weights in {where} lack {len(missing)} keys (torchvision vgg16 'features.{{i}}.weight/bias' "
                f"and LPIPS heads 'lin{{k}}.model.1.weight'): missing {_show(missing)}"
            )
        bad = [f"{k}: file {tuple(sd[k].shape)} vs {tuple(v.shape)}" for k, v in own.items() if sd[k].shape != v.shape]
        if bad:
            raise ValueError(f"LPIPS weights in {[str(f) for f in files]} have wrong shapes: {_show(bad)}")
        self.load_state_dict({k: sd[k].float() for k in own}, strict=True)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "LPIPS":
        """Always stays in eval mode (a frozen metric)."""
        return super().train(False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-sample LPIPS distance between ``x`` and ``y`` (B, 3|1, H, W) in ``[-1, 1]`` -> (B,)."""
        if x.shape != y.shape:
            raise ValueError(f"LPIPS inputs differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"LPIPS takes images (B, 3, H, W) or (B, 1, H, W), got {tuple(x.shape)}")
        B = x.shape[0]
        h = torch.cat([x, y]).float()
        if h.shape[1] == 1:
            h = h.expand(-1, 3, -1, -1)
        h = (h - self.shift) / self.scale
        dist_B = h.new_zeros(B)
        taps = iter(zip(_LPIPS_TAPS, self.lins))
        tap, lin = next(taps)
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i == tap:
                n = h / (h.square().sum(1, keepdim=True).sqrt() + 1e-10)
                dist_B = dist_B + lin((n[:B] - n[B:]).square()).mean(dim=(1, 2, 3))
                tap, lin = next(taps, (None, None))
        return dist_B


def _show(items: list[str], n: int = 8) -> str:
    return ", ".join(items[:n]) + (f", ... ({len(items) - n} more)" if len(items) > n else "")
