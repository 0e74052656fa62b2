"""Tokenizer autoencoder: LDM's VQ-GAN encoder/decoder around VAR's multi-scale quantizer (VAR Sec. 3.2).

The architecture follows VAR's ``models/vqvae.py`` and ``models/basic_vae.py``, which copy the convolutional
autoencoder of latent diffusion's ``vq-f16`` VQ-GAN (Rombach et al. 2022; Esser et al. 2021): ResNet blocks
with GroupNorm(32, eps 1e-6) and SiLU, one self-attention block per resolution step at the lowest resolution,
a middle block (ResNet, attention, ResNet), ``2x`` down/up-sampling between levels, and 3x3 ``quant_conv`` /
``post_quant_conv`` around the quantizer. Module names and nesting are VAR's, so VAR's released tokenizer
``vae_ch160v4096z32.pth`` loads with a handful of renames (see :mod:`scalear.var_checkpoints`).

Beyond VAR, every layer is generic over 2D images and 3D volumes (``dims=3``: Conv3d, e.g. SAR3D-style
occupancy or SDF grids), and the number of input channels is configurable.

Pipeline (images and volumes in ``[-1, 1]``)::

    f = quant_conv(encoder(x))                           # (B, Cvae, *latent)
    f_hat, idx = quantize(f)                             # multi-scale residual VQ, coarse to fine
    x_rec = decoder(post_quant_conv(f_hat)).clamp(-1, 1)

Example:
    >>> m = create_vqvae("tiny")
    >>> x = torch.rand(2, 3, 32, 32) * 2 - 1
    >>> idx = m.img_to_indices(x)
    >>> [tuple(i.shape) for i in idx]
    [(2, 1), (2, 4), (2, 9), (2, 16), (2, 36), (2, 64)]
    >>> m.indices_to_img(idx).shape
    torch.Size([2, 3, 32, 32])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from scalear.config_check import JSONConfig
from scalear.quant import MultiScaleVQ, QuantOutput
from scalear.schedules import VAR_PATCH_NUMS, ScaleSchedule
from scalear.transformer import linear

__all__ = [
    "VQVAEConfig",
    "VQVAE",
    "Encoder",
    "Decoder",
    "ResnetBlock",
    "AttnBlock",
    "VQVAE_PRESETS",
    "create_vqvae",
]

_CONV: dict[int, type[nn.Module]] = {2: nn.Conv2d, 3: nn.Conv3d}


def _conv(dims: int, cin: int, cout: int, k: int, stride: int = 1, padding: int | None = None) -> nn.Module:
    return _CONV[dims](cin, cout, k, stride=stride, padding=k // 2 if padding is None else padding)


def _pointwise(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)`` for a 1x1 ``conv`` (or an Identity). A channels-last 2D map without autograd is already a
    (pixels, channels) matrix: the conv runs as :func:`scalear.transformer.linear` on it (oneDNN's matmul on the CPU,
    where a 1x1 conv would take the slower BLAS path), and the result is channels-last again."""
    if isinstance(conv, nn.Conv2d) and not torch.is_grad_enabled() and x.is_contiguous(memory_format=torch.channels_last):
        return linear(x.permute(0, 2, 3, 1), conv.weight.flatten(1), conv.bias).permute(0, 3, 1, 2)
    return conv(x)


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=groups, num_channels=channels, eps=1e-6, affine=True)


# ------------------------------------------------------------------------------ building blocks
def _nearest2x_conv3x3(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """``conv(nearest_upsample_2x(x))`` for a 3x3, padding-1 ``conv``, computed at the low resolution.

    Output pixel ``(2i + a, 2j + c)`` sees low-resolution rows ``i - 1 + a, i + a`` and columns ``j - 1 + c, j + c``
    only, with the 3x3 taps that land on the same low-resolution pixel summed into a 2x2 kernel. All four phases
    ``(a, c)`` are one 2x2 conv with ``4 * C_out`` outputs over ``x`` zero-padded by one, each phase reading its own
    shifted window of that conv's output: 16 instead of 36 multiply-adds per low-resolution pixel and channel
    pair, and no upsampled input. Equal to the plain path up to float rounding.
    """
    w, (B, _, H, W) = conv.weight, x.shape
    rows = (torch.stack((w[:, :, 0], w[:, :, 1] + w[:, :, 2]), 2), torch.stack((w[:, :, 0] + w[:, :, 1], w[:, :, 2]), 2))
    k = torch.cat([torch.stack((r[..., 0], r[..., 1] + r[..., 2]), -1) if c == 0 else
                   torch.stack((r[..., 0] + r[..., 1], r[..., 2]), -1) for r in rows for c in (0, 1)])
    bias = None if conv.bias is None else conv.bias.repeat(4)
    out = F.conv2d(F.pad(x, (1, 1, 1, 1)), k, bias)  # (B, 4 * Co, H + 1, W + 1), phase-major channels
    Co = w.shape[0]
    fmt = torch.channels_last if out.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    y = torch.empty(B, Co, 2 * H, 2 * W, dtype=out.dtype, device=out.device, memory_format=fmt)
    for p, (a, c) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        y[:, :, a::2, c::2] = out[:, p * Co : (p + 1) * Co, a : a + H, c : c + W]
    return y


class Upsample2x(nn.Module):
    """Nearest-neighbour ``x2`` then a 3x3 conv (VAR ``Upsample2x``); 2D inference runs the equivalent conv at the
    low resolution (:func:`_nearest2x_conv3x3`)."""

    def __init__(self, channels: int, dims: int = 2):
        super().__init__()
        self.conv = _conv(dims, channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.conv, nn.Conv2d) and not torch.is_grad_enabled():
            return _nearest2x_conv3x3(x, self.conv)
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Downsample2x(nn.Module):
    """Zero-pad one voxel at the far end of every spatial axis, then a 3x3 stride-2 conv (VAR ``Downsample2x``)."""

    def __init__(self, channels: int, dims: int = 2):
        super().__init__()
        self.dims = dims
        self.conv = _conv(dims, channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1) * self.dims, mode="constant", value=0.0))


class ResnetBlock(nn.Module):
    """``x + conv2(drop(silu(norm2(conv1(silu(norm1(x)))))))`` with a 1x1 ``nin_shortcut`` when widths differ."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0, dims: int = 2, groups: int = 32):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.norm1 = _norm(in_channels, groups)
        self.conv1 = _conv(dims, in_channels, out_channels, 3)
        self.norm2 = _norm(out_channels, groups)
        self.dropout = nn.Dropout(dropout) if dropout > 1e-6 else nn.Identity()
        self.conv2 = _conv(dims, out_channels, out_channels, 3)
        self.nin_shortcut = _conv(dims, in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x), inplace=True))  # in place on the norm's fresh output, as VAR
        h = self.conv2(self.dropout(F.silu(self.norm2(h), inplace=True)))
        return h.add_(_pointwise(self.nin_shortcut, x))  # in place on the conv's fresh output: one big allocation less


class AttnBlock(nn.Module):
    """Single-head self-attention over all positions (VAR's ``AttnBlock``: one 1x1 ``qkv`` conv, ``proj_out``)."""

    def __init__(self, channels: int, dims: int = 2, groups: int = 32):
        super().__init__()
        self.C = channels
        self.norm = _norm(channels, groups)
        self.qkv = _conv(dims, channels, 3 * channels, 1)
        self.proj_out = _conv(dims, channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = _pointwise(self.qkv, self.norm(x))
        B, spatial = qkv.shape[0], qkv.shape[2:]
        q_BNC, k_BNC, v_BNC = qkv.flatten(2).transpose(1, 2).reshape(B, -1, 3, self.C).unbind(2)  # views if NHWC
        # softmax(q k^T / sqrt(C)) v, as VAR's bmm formulation
        h_BNC = F.scaled_dot_product_attention(q_BNC[:, None], k_BNC[:, None], v_BNC[:, None])[:, 0]
        # (B, *spatial, C) moved to (B, C, *spatial): a channels-last view, no copy
        return _pointwise(self.proj_out, h_BNC.reshape(B, *spatial, self.C).movedim(-1, 1)).add_(x)


def _attn(channels: int, enabled: bool, dims: int, groups: int) -> nn.Module:
    return AttnBlock(channels, dims, groups) if enabled else nn.Identity()


# ------------------------------------------------------------------------------ encoder / decoder
class Encoder(nn.Module):
    """LDM/VAR encoder: ``conv_in``, ``len(ch_mult)`` levels (``2x`` downsampling between them), mid, ``conv_out``.

    Maps ``(B, in_channels, *S)`` to ``(B, z_channels, *S / 2**(len(ch_mult)-1))``.
    """

    def __init__(
        self,
        *,
        ch: int = 128,
        ch_mult: Sequence[int] = (1, 2, 4, 8),
        num_res_blocks: int = 2,
        dropout: float = 0.0,
        in_channels: int = 3,
        z_channels: int,
        using_sa: bool = True,
        using_mid_sa: bool = True,
        dims: int = 2,
        norm_groups: int = 32,
    ):
        super().__init__()
        self.num_resolutions, self.num_res_blocks = len(ch_mult), num_res_blocks
        self.downsample_ratio = 2 ** (self.num_resolutions - 1)
        g = norm_groups
        self.conv_in = _conv(dims, in_channels, ch, 3)
        in_ch_mult = (1, *ch_mult)
        self.down = nn.ModuleList()
        block_in = ch
        for i_level in range(self.num_resolutions):
            block, attn = nn.ModuleList(), nn.ModuleList()
            block_in, block_out = ch * in_ch_mult[i_level], ch * ch_mult[i_level]
            last = i_level == self.num_resolutions - 1
            for _ in range(num_res_blocks):
                block.append(ResnetBlock(block_in, block_out, dropout, dims, g))
                block_in = block_out
                if last and using_sa:
                    attn.append(AttnBlock(block_in, dims, g))
            down = nn.Module()
            down.block, down.attn = block, attn
            if not last:
                down.downsample = Downsample2x(block_in, dims)
            self.down.append(down)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(block_in, block_in, dropout, dims, g)
        self.mid.attn_1 = _attn(block_in, using_mid_sa, dims, g)
        self.mid.block_2 = ResnetBlock(block_in, block_in, dropout, dims, g)
        self.norm_out = _norm(block_in, g)
        self.conv_out = _conv(dims, block_in, z_channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for i_level, down in enumerate(self.down):
            for i_block, block in enumerate(down.block):
                h = block(h)
                if len(down.attn) > 0:
                    h = down.attn[i_block](h)
            if i_level != self.num_resolutions - 1:
                h = down.downsample(h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(F.silu(self.norm_out(h), inplace=True))


class Decoder(nn.Module):
    """LDM/VAR decoder: ``conv_in``, mid, ``len(ch_mult)`` levels of ``num_res_blocks + 1`` blocks (``2x``
    nearest upsampling between them), ``conv_out``. ``up[i]`` mirrors the encoder's ``down[i]``."""

    def __init__(
        self,
        *,
        ch: int = 128,
        ch_mult: Sequence[int] = (1, 2, 4, 8),
        num_res_blocks: int = 2,
        dropout: float = 0.0,
        in_channels: int = 3,
        z_channels: int,
        using_sa: bool = True,
        using_mid_sa: bool = True,
        dims: int = 2,
        norm_groups: int = 32,
    ):
        super().__init__()
        self.num_resolutions, self.num_res_blocks = len(ch_mult), num_res_blocks
        g = norm_groups
        block_in = ch * ch_mult[-1]
        self.conv_in = _conv(dims, z_channels, block_in, 3)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(block_in, block_in, dropout, dims, g)
        self.mid.attn_1 = _attn(block_in, using_mid_sa, dims, g)
        self.mid.block_2 = ResnetBlock(block_in, block_in, dropout, dims, g)
        ups: list[nn.Module] = []
        for i_level in reversed(range(self.num_resolutions)):
            block, attn = nn.ModuleList(), nn.ModuleList()
            block_out = ch * ch_mult[i_level]
            for _ in range(num_res_blocks + 1):
                block.append(ResnetBlock(block_in, block_out, dropout, dims, g))
                block_in = block_out
                if i_level == self.num_resolutions - 1 and using_sa:
                    attn.append(AttnBlock(block_in, dims, g))
            up = nn.Module()
            up.block, up.attn = block, attn
            if i_level != 0:
                up.upsample = Upsample2x(block_in, dims)
            ups.insert(0, up)
        self.up = nn.ModuleList(ups)
        self.norm_out = _norm(block_in, g)
        self.conv_out = _conv(dims, block_in, in_channels, 3)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        channels_last = z.ndim == 4 and not torch.is_grad_enabled()
        if channels_last:  # inference: convolutions (oneDNN on CPU, cuDNN) run faster on NHWC; GroupNorm keeps it
            z = z.contiguous(memory_format=torch.channels_last)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(self.conv_in(z))))
        for i_level in reversed(range(self.num_resolutions)):
            up = self.up[i_level]
            for i_block, block in enumerate(up.block):
                h = block(h)
                if len(up.attn) > 0:
                    h = up.attn[i_block](h)
            if i_level != 0:
                h = up.upsample(h)
        out = self.conv_out(F.silu(self.norm_out(h), inplace=True))
        return out.contiguous() if channels_last else out


# ------------------------------------------------------------------------------ config
@dataclass
class VQVAEConfig(JSONConfig):
    """Hyperparameters of :class:`VQVAE`; defaults are VAR's released ``vae_ch160v4096z32`` (256 px, f16).

    Args:
        vocab_size: codebook size V.
        z_channels: latent channels Cvae.
        ch: base width; level ``i`` has ``ch * ch_mult[i]`` channels.
        ch_mult: width multipliers; ``len(ch_mult) - 1`` downsamplings (f16 for 5 levels).
        num_res_blocks: ResNet blocks per encoder level (the decoder has one more).
        dropout: dropout inside ResNet blocks.
        using_sa: self-attention after each block of the lowest-resolution level.
        using_mid_sa: self-attention in the middle block.
        in_channels: image/volume channels (3 RGB, 1 gray or SDF).
        dims: 2 for images, 3 for volumes.
        norm_groups: GroupNorm groups (VAR: 32); every width must be divisible by it.
        beta: commitment weight of the VQ loss.
        use_cosine: cosine nearest-neighbour search (VAR's ``using_znorm``).
        phi_ratio: phi mixing ratio (VAR's ``quant_resi``: 0.5).
        phi_share: 0 one phi per scale, 1 shared, K > 1 partially shared (VAR's ``share_quant_resi``: 4).
        quant_conv_ks: kernel of ``quant_conv``/``post_quant_conv``.
        patch_nums: per-scale side lengths (square maps for ``dims=2``, cubes for ``dims=3``); ignored when
            ``schedule`` is set.
        schedule: a :class:`ScaleSchedule` as ``to_dict()`` (e.g. non-square 2D maps); overrides ``patch_nums``.
        restart_every: re-seed dead codes every this many training steps (0 = never, as VAR).
        dead_threshold: EMA hits per step below which a code counts as dead.
    """

    vocab_size: int = 4096
    z_channels: int = 32
    ch: int = 160
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    dropout: float = 0.0
    using_sa: bool = True
    using_mid_sa: bool = True
    in_channels: int = 3
    dims: int = 2
    norm_groups: int = 32
    beta: float = 0.25
    use_cosine: bool = False
    phi_ratio: float = 0.5
    phi_share: int = 4
    quant_conv_ks: int = 3
    patch_nums: tuple[int, ...] = VAR_PATCH_NUMS[256]
    schedule: dict[str, Any] | None = None
    restart_every: int = 0
    dead_threshold: float = 0.03

    renamed = {"quant_resi": "phi_ratio", "share_quant_resi": "phi_share"}  # VAR's names, in older files

    def __post_init__(self) -> None:
        self.ch_mult = tuple(int(m) for m in self.ch_mult)
        self.patch_nums = tuple(int(p) for p in self.patch_nums)
        if isinstance(self.schedule, ScaleSchedule):
            self.schedule = self.schedule.to_dict()
        if self.dims not in _CONV:
            raise ValueError(f"dims must be 2 (images) or 3 (volumes), got {self.dims}")
        if not self.ch_mult:
            raise ValueError("ch_mult needs at least one level")
        bad = [self.ch * m for m in self.ch_mult if (self.ch * m) % self.norm_groups]
        if bad:
            raise ValueError(
                f"widths {bad} (ch={self.ch} x ch_mult) are not divisible by norm_groups={self.norm_groups}"
            )
        sched = self.scale_schedule()
        want = {2: "2d", 3: "3d"}[self.dims]
        if sched.kind != want:
            raise ValueError(f"a dims={self.dims} tokenizer needs a {want!r} schedule, got {sched.kind!r}")

    def scale_schedule(self) -> ScaleSchedule:
        """The quantizer's schedule: ``schedule`` if set, else square/cubic maps from ``patch_nums``."""
        if self.schedule is not None:
            return ScaleSchedule.from_dict(self.schedule)
        return ScaleSchedule.square(self.patch_nums) if self.dims == 2 else ScaleSchedule.volume_3d(self.patch_nums)

    @property
    def downsample_ratio(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)


# ------------------------------------------------------------------------------ model
class VQVAE(nn.Module):
    """VAR's multi-scale VQ-VAE tokenizer (VAR Sec. 3.2) on LDM's VQ-GAN autoencoder, for 2D or 3D inputs.

    Submodules (VAR's names): ``encoder``, ``decoder``, ``quantize`` (:class:`~scalear.quant.MultiScaleVQ`),
    ``quant_conv``, ``post_quant_conv``. Inputs are in ``[-1, 1]`` with spatial size
    ``schedule.final_shape * downsample_ratio`` (e.g. 256x256 for VAR's f16 tokenizer with a 16x16 last scale).
    """

    scalear_kind = "vqvae"  #: registered kind for scalear.io.save_pretrained / from_pretrained

    def __init__(self, config: VQVAEConfig | None = None, **overrides: Any):
        super().__init__()
        cfg = config or VQVAEConfig()
        if overrides:
            cfg = cfg.replace(**overrides)
        self.config = cfg
        dd = dict(
            ch=cfg.ch, ch_mult=cfg.ch_mult, num_res_blocks=cfg.num_res_blocks, dropout=cfg.dropout,
            in_channels=cfg.in_channels, z_channels=cfg.z_channels, using_sa=cfg.using_sa,
            using_mid_sa=cfg.using_mid_sa, dims=cfg.dims, norm_groups=cfg.norm_groups,
        )
        self.encoder = Encoder(**dd)
        self.decoder = Decoder(**dd)
        self.quantize = MultiScaleVQ(
            cfg.vocab_size, cfg.z_channels, cfg.scale_schedule(), beta=cfg.beta, use_cosine=cfg.use_cosine,
            phi_ratio=cfg.phi_ratio, phi_share=cfg.phi_share,
            restart_every=cfg.restart_every, dead_threshold=cfg.dead_threshold,
        )
        self.quant_conv = _conv(cfg.dims, cfg.z_channels, cfg.z_channels, cfg.quant_conv_ks)
        self.post_quant_conv = _conv(cfg.dims, cfg.z_channels, cfg.z_channels, cfg.quant_conv_ks)

    # ------------------------------------------------------------------ layout
    @property
    def schedule(self) -> ScaleSchedule:
        return self.quantize.schedule

    @property
    def downsample_ratio(self) -> int:
        return self.config.downsample_ratio

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Spatial size of the inputs this tokenizer accepts, e.g. ``(256, 256)``."""
        return tuple(s * self.downsample_ratio for s in self.schedule.final_shape)

    @property
    def last_layer(self) -> torch.Tensor:
        """Weight of the decoder's last conv (for VQGAN's adaptive GAN weight)."""
        return self.decoder.conv_out.weight

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ValueError naming the expected shape unless ``x`` is ``(B, in_channels, *input_shape)``."""
        cfg, want = self.config, self.input_shape
        what, unit = ("image", "px") if cfg.dims == 2 else ("volume", "voxels")
        if x.ndim != 2 + cfg.dims:
            raise ValueError(
                f"expected a batch of {what}s (B, {cfg.in_channels}, {', '.join(map(str, want))}), "
                f"got a tensor of shape {tuple(x.shape)}"
            )
        if x.shape[1] != cfg.in_channels:
            raise ValueError(f"{what} has {x.shape[1]} channels; this tokenizer takes {cfg.in_channels}")
        got = tuple(x.shape[2:])
        if got != want:
            r, last = self.downsample_ratio, "x".join(map(str, self.schedule.final_shape))
            raise ValueError(
                f"{what} is {'x'.join(map(str, got))} {unit}; this tokenizer needs multiples of {r} and the "
                f"schedule's last scale {last} needs {'x'.join(map(str, want))}"
            )

    # ------------------------------------------------------------------ training
    def encode_latent(self, x: torch.Tensor) -> torch.Tensor:
        """``quant_conv(encoder(x))``: (B, in_channels, *input_shape) -> f (B, Cvae, *latent)."""
        self.check_input(x)
        return self.quant_conv(self.encoder(x))

    def decode_latent(self, f_hat: torch.Tensor) -> torch.Tensor:
        """``decoder(post_quant_conv(f_hat))`` without clamping (training output)."""
        return self.decoder(self.post_quant_conv(f_hat))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, QuantOutput]:
        """Training pass: (B, Cin, *S) -> (unclamped reconstruction (B, Cin, *S), quantizer output).

        The reconstruction is decoded from the straight-through ``f_hat``, so gradients of a reconstruction
        loss reach the encoder; ``QuantOutput.loss`` is the VQ (codebook + beta * commitment) loss.
        """
        q = self.quantize(self.encode_latent(x))
        return self.decode_latent(q.f_hat), q

    # ------------------------------------------------------------------ inference
    def fhat_to_img(self, f_hat: torch.Tensor) -> torch.Tensor:
        """Quantized latent (B, Cvae, *latent) -> image/volume clamped to ``[-1, 1]``."""
        return self.decode_latent(f_hat).clamp(-1, 1)

    @torch.no_grad()
    def img_to_indices(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Image/volume -> per-scale token indices ``[(B, n_k)]``, coarse to fine (VAR ``img_to_idxBl``)."""
        return self.quantize.encode(self.encode_latent(x))

    @torch.no_grad()
    def indices_to_img(self, indices: list[torch.Tensor]) -> torch.Tensor:
        """Per-scale indices ``[(B, n_k)]`` -> image/volume in ``[-1, 1]``. Fewer scales than the schedule's
        decode a coarser reconstruction (only the first scales' residuals)."""
        return self.fhat_to_img(self.quantize.decode(indices))

    @torch.no_grad()
    def img_to_fhats(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Cumulative quantized latents after each scale: ``[(B, Cvae, *latent)] * K``; the last is ``f_hat``."""
        return self.quantize.encode_fhats(self.encode_latent(x))

    @torch.no_grad()
    def img_to_scale_recs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Coarse-to-fine reconstructions, one per scale: image decoded from the first ``k + 1`` scales
        (VAR ``img_to_reconstructed_img``)."""
        return [self.fhat_to_img(f_hat) for f_hat in self.img_to_fhats(x)]

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


# ------------------------------------------------------------------------------ presets
#: Named configurations (data, not code paths). Spatial input size = last scale x 2**(len(ch_mult) - 1).
VQVAE_PRESETS: dict[str, dict[str, Any]] = {
    # VAR's released tokenizer vae_ch160v4096z32.pth: 256 px RGB, f16, 16x16x32 latent, 10 scales (L = 680).
    "var-f16": dict(
        vocab_size=4096, z_channels=32, ch=160, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2, dropout=0.0,
        using_sa=True, using_mid_sa=True, in_channels=3, dims=2, beta=0.25, use_cosine=False, phi_ratio=0.5,
        phi_share=4, patch_nums=VAR_PATCH_NUMS[256],
    ),
    # ~5M params, 64 px RGB, f8 -> 8x8x16 latent, 6 scales (L = 130).
    "small": dict(
        vocab_size=1024, z_channels=16, ch=64, ch_mult=(1, 1, 2, 2), num_res_blocks=2, norm_groups=32,
        patch_nums=(1, 2, 3, 4, 6, 8),
    ),
    # CPU-trainable, 32 px RGB (override in_channels=1 for gray digits), f4 -> 8x8x8 latent, 6 scales.
    "tiny": dict(
        vocab_size=256, z_channels=8, ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, norm_groups=8,
        patch_nums=(1, 2, 3, 4, 6, 8), restart_every=20,
    ),
    # CPU-trainable 3D: 32^3 single-channel volumes (occupancy/SDF), f4 -> 8^3x8 latent, 4 scales.
    "tiny-3d": dict(
        vocab_size=256, z_channels=8, ch=16, ch_mult=(1, 2, 2), num_res_blocks=1, norm_groups=8, in_channels=1,
        dims=3, patch_nums=(1, 2, 4, 8), restart_every=20,
    ),
}


def create_vqvae(name: str, **overrides: Any) -> VQVAE:
    """Build a :class:`VQVAE` from a preset of :data:`VQVAE_PRESETS` with keyword ``overrides``.

    >>> create_vqvae("tiny", in_channels=1).config.in_channels
    1
    """
    if name not in VQVAE_PRESETS:
        raise KeyError(f"unknown VQVAE preset {name!r}; available: {sorted(VQVAE_PRESETS)}")
    return VQVAE(VQVAEConfig.from_dict({**VQVAE_PRESETS[name], **overrides}))

