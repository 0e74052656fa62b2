"""The released Varformer architecture: ``VarFormer2`` of siywang541/Varformer ("VarFormer_16", ``net_g_last.pth``),
as its test config builds it (Wang & Zhao, CVPR 2025, arXiv 2412.21063).

Where :mod:`.varformer` is a compact U-net that trains on a CPU, this module is the official network at its
released size (908M parameters, 256x256 only), so that the authors' checkpoint runs with the official outputs.
Module and parameter names are the official ones (``ft_layers``, ``cross_attn_blocks``, ``Mainencoder``,
``main_decoder``, ``DAE``, ``AFT``, ``cat_rec_syn`` ...), so the official state dict loads 1:1 into them; VAR's
tokenizer and transformer are scalear's :class:`~scalear.vqvae.VQVAE` (``var-f16``) and
:class:`~scalear.transformer.NextScaleTransformer` (VAR-d16), whose keys :mod:`.varformer_checkpoints` maps.

Forward pass (``basicsr/options/test.yml``; input ``(B, 3, 256, 256)`` in ``[-1, 1]``):

* **Prior extraction** (paper Sec. 3.2): VAR's encoder reads the degraded image (keeping each level's features),
  ``quant_conv``, then the **enhancement layers** (``ft_layers``: 4 NAFNet-style blocks with large-kernel
  attention and a curve-adjusting convolution, :class:`EnhanceBlock`) and VAR's multi-scale quantizer give the
  degraded image's tokens. VAR-d16 then runs scale by scale with the KV cache and the null class; after each of
  the first 8 blocks a **cross-attention** (:class:`TokenCrossAttention`) whose queries are the degraded image's
  embedded tokens of that scale *replaces* the hidden states. Two CFG branches run, both of the null class, which
  the cross-attention's head/branch interleaving (see :class:`TokenCrossAttention`) makes differ; logits are
  ``(1 + t) l_1 - t l_2`` with ``t = 0.5 k / 9`` and tokens their argmax (the official ``top_k=1``). Each
  scale's ``phi(upsample(code map))`` is one of the 10 prior maps.
* **Main encoder** (Sec. 3.3; ``Mainencoder``): VAR's encoder layout on the degraded image where, at levels
  1-4, the prior enters: :class:`ScaleWeights` (the official ``WPMoudle4_norm``: Swin blocks on the VAR encoder's
  and this encoder's features give a softmax over the 10 scales; the weighted maps, instance-normalised and
  projected, are upsampled to the level), then **DAE** (:class:`PixelMix`: per-pixel softmax mixing the features
  with the prior) and **AFT** (:class:`AnchorCrossAttn`: cross-attention through a 4x-downsampled anchor).
* **Main decoder** (``main_decoder``): VAR's decoder layout from the main encoder's latent, each level mixed
  with the main encoder's skip (``sigmoid(theta)``) and, at levels 4-1, the same prior modules fed by VAR's
  decoder run on the predicted ``f_hat``; the output blends with the input (``input_w``), is clamped to
  ``[-1, 1]`` and mapped to ``[0, 1]``.

What the official test config switches off stays out: texture warping (``dec_adjust: False``, which needs
deformable convolutions), training-only paths. Built but never used by the official forward, and kept only so
that its state dict loads strictly: the level-0 prior modules of both the main encoder and decoder, and Swin's
``patch_embed.proj`` (a convolution with 0 input channels). The official per-pixel weight
``softmax(conv1__w(w), dim=1)`` is over one channel, i.e. exactly 1: the residual is the input itself.

:meth:`OfficialVarformer.restore` is the official pre/post-processing on ``[0, 1]`` RGB images: resize to
256x256 as OpenCV's ``INTER_LINEAR`` computes it (bilinear, no antialiasing; :func:`resize_linear`),
``(x - 0.5) / 0.5``, the forward, and the 256x256 result resized back to the input's size (``size="input"``) or
kept (``size=256``, as the official test writes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from scalear.quant import resize as latent_resize
from scalear.schedules import VAR_PATCH_NUMS, ScaleSchedule
from scalear.transformer import create_transformer
from scalear.vqvae import AttnBlock, Decoder, Downsample2x, Encoder, ResnetBlock, Upsample2x, create_vqvae

INPUT_SIZE = 256  #: the only size the network runs at (VAR's 16x16 last scale, f16)
CH, CH_MULT, Z = 160, (1, 1, 2, 2, 4), 32  #: VAR's tokenizer widths, which the official classes hard-code
NUM_SCALES = 10
CFG = 0.5  #: VarFormer2.forward's default ``cfg`` (both branches are the null class)


def _gn(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-6)


# ------------------------------------------------------------------------------------------- Swin blocks
def swin_relative_index(ws: int) -> torch.Tensor:
    """``(ws^2, ws^2)`` index into the relative-position bias table of a ``ws x ws`` window."""
    yy, xx = torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")
    y, x = yy.flatten(), xx.flatten()
    return (y[:, None] - y[None, :] + ws - 1) * (2 * ws - 1) + (x[:, None] - x[None, :] + ws - 1)


def swin_shift_mask(height: int, width: int, ws: int, shift: int) -> torch.Tensor:
    """``(windows, ws^2, ws^2)`` additive mask of shifted windows: -100 between tokens of different regions."""
    def bands(n: int) -> torch.Tensor:
        b = torch.zeros(n, dtype=torch.long)
        b[n - ws:] = 1
        b[n - shift:] = 2
        return b

    region = bands(height)[:, None] * 3 + bands(width)[None, :]
    region = region.view(height // ws, ws, width // ws, ws).permute(0, 2, 1, 3).reshape(-1, ws * ws)
    return torch.where(region[:, :, None] == region[:, None, :], 0.0, -100.0)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside a window, with a learned relative-position bias (Swin)."""

    def __init__(self, dim: int, ws: int, num_heads: int):
        super().__init__()
        self.num_heads, self.scale = num_heads, (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * ws - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", swin_relative_index(ws))
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x_WNC: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        Bw, N, C = x_WNC.shape
        q, k, v = self.qkv(x_WNC).view(Bw, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(N, N, -1)
        attn = attn + bias.permute(2, 0, 1)
        if mask is not None:
            nW = mask.shape[0]
            attn = (attn.view(Bw // nW, nW, self.num_heads, N, N) + mask[None, :, None]).view(Bw, self.num_heads, N, N)
        return self.proj((attn.softmax(-1) @ v).transpose(1, 2).reshape(Bw, N, C))


class SwinMLP(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwinBlock(nn.Module):
    """Swin transformer block on ``(B, H*W, C)`` tokens: (shifted) window attention and an MLP, pre-norm."""

    def __init__(self, dim: int, resolution: int, num_heads: int, ws: int, shift: int):
        super().__init__()
        self.ws, self.shift, self.resolution = ws, shift, resolution
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, ws, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = SwinMLP(dim, 4 * dim)
        if shift:
            self.register_buffer("attn_mask", swin_shift_mask(resolution, resolution, ws, shift))
        else:
            self.attn_mask = None

    def forward(self, x_BLC: torch.Tensor, H: int, W: int) -> torch.Tensor:
        B, L, C = x_BLC.shape
        ws, s = self.ws, self.shift
        h = self.norm1(x_BLC).view(B, H, W, C)
        if s:
            h = torch.roll(h, (-s, -s), (1, 2))
        win = h.view(B, H // ws, ws, W // ws, ws, C).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, C)
        mask = self.attn_mask
        if s and (H, W) != (self.resolution, self.resolution):
            mask = swin_shift_mask(H, W, ws, s).to(x_BLC.device)
        win = self.attn(win, mask)
        h = win.view(B, H // ws, W // ws, ws, ws, C).permute(0, 1, 3, 2, 4, 5).reshape(B, H, W, C)
        if s:
            h = torch.roll(h, (s, s), (1, 2))
        x = x_BLC + h.reshape(B, L, C)
        return x + self.mlp(self.norm2(x))


class _SwinLayer(nn.Module):
    def __init__(self, blocks: list[SwinBlock]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)


class _UnusedPatchEmbed(nn.Module):
    """Swin's ``patch_embed.proj`` as the official code builds it: a convolution with 0 input channels that is never
    called (its weight has no elements; its bias is loaded and ignored)."""

    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Module()
        self.proj.weight = nn.Parameter(torch.zeros(dim, 0, 4, 4))
        self.proj.bias = nn.Parameter(torch.zeros(dim))


class SwinGroup(nn.Module):
    """Residual Swin group (SwinIR's RSTB): two blocks (the second shifted), a 3x3 conv, a residual connection."""

    def __init__(self, dim: int, resolution: int, num_heads: int, ws: int = 4, depth: int = 2):
        super().__init__()
        self.residual_group = _SwinLayer([SwinBlock(dim, resolution, num_heads, ws, 0 if i % 2 == 0 else ws // 2)
                                          for i in range(depth)])
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)
        self.patch_embed = _UnusedPatchEmbed(dim)

    def forward(self, x_BLC: torch.Tensor, H: int, W: int) -> torch.Tensor:
        h = x_BLC
        for block in self.residual_group.blocks:
            h = block(h, H, W)
        B, L, C = h.shape
        return self.conv(h.transpose(1, 2).reshape(B, C, H, W)).flatten(2).transpose(1, 2) + x_BLC


def _swin_map(groups: nn.Module, x_BCHW: torch.Tensor) -> torch.Tensor:
    """Run Swin groups over a feature map (as tokens) and return a map."""
    B, C, H, W = x_BCHW.shape
    t = x_BCHW.flatten(2).transpose(1, 2)
    for g in groups:
        t = g(t, H, W)
    return t.transpose(1, 2).reshape(B, C, H, W)


# ------------------------------------------------------------------------------------------- prior modules
class UpsampleBy(nn.Module):
    """Nearest-neighbour upsampling by ``r`` then a 3x3 conv."""

    def __init__(self, channels: int, r: int):
        super().__init__()
        self.r = r
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=self.r, mode="nearest"))


class ScaleWeights(nn.Module):
    """The prior at one level (official ``WPMoudle4_norm``): Swin groups over the level's fused features, a 1x1
    conv to ``num_scales`` scores, global average, softmax; the weighted prior maps ``(B, K, Cvae, 16, 16)``,
    flattened to ``K * Cvae`` channels, instance-normalised, projected to ``out_dim`` and upsampled by ``up``."""

    def __init__(self, dim: int, out_dim: int, up: int, resolution: int, num_heads: int, num_scales: int = NUM_SCALES):
        super().__init__()
        self.swin_blocks = nn.Sequential(*(SwinGroup(dim, resolution, num_heads) for _ in range(2)))
        self.conv1x1 = nn.Conv2d(dim, num_scales, 1)
        self.norm_3 = nn.InstanceNorm2d(num_scales * Z)
        self.conv_out = nn.Conv2d(num_scales * Z, out_dim, 1)
        self.upsample = UpsampleBy(out_dim, up) if up > 1 else None

    def weights(self, feat_BCHW: torch.Tensor) -> torch.Tensor:
        """``(B, K)`` softmax weights of the prior's scales."""
        return self.conv1x1(_swin_map(self.swin_blocks, feat_BCHW)).mean((2, 3)).softmax(1)

    def forward(self, feat_BCHW: torch.Tensor, maps_BKChw: torch.Tensor) -> torch.Tensor:
        w = self.weights(feat_BCHW)
        B, K, C, h, ww = maps_BKChw.shape
        p = self.conv_out(self.norm_3((w.view(B, K, 1, 1, 1) * maps_BKChw).reshape(B, K * C, h, ww)))
        return self.upsample(p) if self.upsample is not None else p


class PixelMix(nn.Module):
    """DAE (official ``RACMoudle2`` / ``RcaMoudle4``): Swin groups over ``[z, p]`` and a 1x1 conv give two logits per
    pixel; their softmax mixes ``z`` (features) and ``p`` (prior). Also returns the first logit ``(B, 1, H, W)``."""

    def __init__(self, dim: int, resolution: int, num_heads: int):
        super().__init__()
        self.conv1x1 = nn.Conv2d(2 * dim, 2, 1)
        self.swin_blocks = nn.Sequential(*(SwinGroup(2 * dim, resolution, num_heads) for _ in range(2)))

    def forward(self, z: torch.Tensor, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.conv1x1(_swin_map(self.swin_blocks, torch.cat((z, p), 1)))
        w = logits.softmax(1)
        return w[:, :1] * z + w[:, 1:] * p, logits[:, :1]


class AnchorCrossAttn(nn.Module):
    """AFT (official ``AnchorCrossAttnBlock``): queries from the features, keys/values from the prior, through an
    anchor ``a`` (a stride-4 conv of both, HW/16 tokens): ``softmax(q a) softmax(a k) v``, single head."""

    def __init__(self, channels: int, s: int = 4):
        super().__init__()
        self.C, self.s = channels, s
        self.proj_out = nn.Conv2d(channels, channels, 1)
        self.norm_q, self.q = _gn(channels), nn.Conv2d(channels, channels, 1)
        self.norm_kv, self.kv = _gn(channels), nn.Conv2d(channels, 2 * channels, 1)
        self.norm_a, self.a = _gn(2 * channels), nn.Conv2d(2 * channels, channels, s, stride=s)

    def forward(self, x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        q = self.q(self.norm_q(x)).view(B, C, H * W).transpose(1, 2)  # B, HW, C
        k, v = self.kv(self.norm_kv(p)).view(B, 2, C, H * W).unbind(1)  # B, C, HW
        a = self.a(self.norm_a(torch.cat((x, p), 1))).view(B, C, -1)  # B, C, HW/s^2
        r = C ** -0.5
        w1 = (q @ a).mul_(r).softmax(2)  # B, HW, HW/s^2
        w2 = (a.transpose(1, 2) @ k).mul_(r).softmax(2)  # B, HW/s^2, HW
        h = (v @ w2.transpose(1, 2)) @ w1.transpose(1, 2)  # B, C, HW
        return x + self.proj_out(h.view(B, C, H, W))


# ------------------------------------------------------------------------------------------- enhancement layers
class ChannelLayerNorm(nn.Module):
    """Layer norm over the channels of every pixel, with a per-channel affine (eps 1e-6)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight, self.bias, self.eps = nn.Parameter(torch.ones(channels)), nn.Parameter(torch.zeros(channels)), eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu = x.mean(1, keepdim=True)
        var = (x - mu).pow(2).mean(1, keepdim=True)
        return self.weight.view(1, -1, 1, 1) * ((x - mu) / (var + self.eps).sqrt()) + self.bias.view(1, -1, 1, 1)


class LargeKernelAttention(nn.Module):
    """5x5 depthwise, 7x7 depthwise dilated by 3, 1x1 (official ``LKA``)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv0 = nn.Conv2d(cin, cin, 5, padding=2, groups=cin)
        self.conv_spatial = nn.Conv2d(cin, cin, 7, padding=9, groups=cin, dilation=3)
        self.conv1 = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1(self.conv_spatial(self.conv0(x)))


class CurveConv(nn.Module):
    """Official ``IMAConv``: the channels in ``split`` groups; each group, clamped to ``[0, 1]``, goes through
    ``n_curve`` quadratic curves ``x + a x (1 - x)`` whose per-pixel ``a`` (sigmoid) the other groups predict,
    then its own 3x3 conv."""

    def __init__(self, channels: int, split: int = 4, n_curve: int = 3):
        super().__init__()
        self.n_curve = n_curve
        self.sizes = [channels // split] * (split - 1) + [channels - channels // split * (split - 1)]
        for i, c in enumerate(self.sizes):
            rest = channels - c
            setattr(self, f"predictA{i}", nn.Sequential(
                nn.Conv2d(rest, c, 5, padding=2), nn.ReLU(), nn.Conv2d(c, c, 3, padding=1), nn.ReLU(),
                nn.Conv2d(c, n_curve, 1), nn.Sigmoid()))
            setattr(self, f"conv{i}", nn.Conv2d(c, c, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = torch.split(x, self.sizes, dim=1)
        out = []
        for i, part in enumerate(parts):
            a = getattr(self, f"predictA{i}")(torch.cat(parts[:i] + parts[i + 1:], 1))
            y = F.relu(part) - F.relu(part - 1)
            for j in range(self.n_curve):
                y = y + a[:, j:j + 1] * y * (1 - y)
            out.append(getattr(self, f"conv{i}")(y))
        return torch.cat(out, 1)


class EnhanceBlock(nn.Module):
    """One enhancement layer (official ``AIEM``): a gated depthwise-conv branch scaled by large-kernel and
    channel attention, then a gated curve-conv branch, each added with a learned per-channel scale."""

    def __init__(self, c: int):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(c, 2 * c, 1), nn.Conv2d(2 * c, 2 * c, 3, padding=1, groups=2 * c)
        self.conv3 = nn.Conv2d(c, c, 1)
        self.sca1 = LargeKernelAttention(2 * c, c)
        self.sca2 = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(2 * c, c, 1))
        self.conv4, self.IMAC, self.conv5 = nn.Conv2d(c, 2 * c, 1), CurveConv(c), nn.Conv2d(c, c, 1)
        self.norm1, self.norm2 = ChannelLayerNorm(c), ChannelLayerNorm(c)
        self.beta, self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1)), nn.Parameter(torch.zeros(1, c, 1, 1))

    @staticmethod
    def _gate(x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return a * b

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        x = self.conv2(self.conv1(self.norm1(inp)))
        x = self.conv3((self.sca2(x) * self.sca1(x)) * self._gate(x))
        y = inp + x * self.beta
        x = self.conv5(self.IMAC(self._gate(self.conv4(self.norm2(y)))))
        return y + x * self.gamma


class EnhanceLayers(nn.Module):
    def __init__(self, channels: int = Z, n_layers: int = 4):
        super().__init__()
        self.blks = nn.ModuleList(EnhanceBlock(channels) for _ in range(n_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for b in self.blks:
            x = b(x)
        return x


class TokenCrossAttention(nn.Module):
    """Official ``CrossAttentionAR``: queries from the degraded image's embedded tokens of a scale, keys/values from
    VAR's hidden states of the same scale (no k bias; scale 0.25 / sqrt(head_dim)); the output replaces them.

    The official code applies ``transpose(1, 2)`` to a 5-D ``(1, 2B, heads, L, hd)`` output before reshaping it to
    ``(2B, L, C)``: heads and the two CFG branches are interleaved, so the branches differ from then on. This is
    reproduced per image, as the official test (batch 1) computes it: hidden states are ``(2B, L, C)``, image
    ``b``'s two branches at rows ``2b`` and ``2b + 1``. (With a batch of several images the official code would
    also mix images; scalear does not.)"""

    def __init__(self, dim: int = 1024, num_heads: int = 16):
        super().__init__()
        self.num_heads, self.scale = num_heads, 0.25 / math.sqrt(dim // num_heads)
        self.proj = nn.Linear(dim, dim)
        self.mat_q, self.mat_kv = nn.Linear(dim, dim, bias=False), nn.Linear(dim, 2 * dim, bias=False)
        self.q_bias, self.v_bias = nn.Parameter(torch.zeros(dim)), nn.Parameter(torch.zeros(dim))
        self.register_buffer("zero_k_bias", torch.zeros(dim))

    def forward(self, lq_BLC: torch.Tensor, x_2BLC: torch.Tensor) -> torch.Tensor:
        B, L, C = lq_BLC.shape
        H = self.num_heads
        q = F.linear(lq_BLC, self.mat_q.weight, self.q_bias).view(B, 1, L, H, -1).transpose(2, 3)
        kv = F.linear(x_2BLC, self.mat_kv.weight, torch.cat((self.zero_k_bias, self.v_bias)))
        k, v = kv.view(B, 2, L, 2, H, -1).permute(3, 0, 1, 4, 2, 5)  # each (B, 2, H, L, hd)
        out = F.scaled_dot_product_attention(q.expand(B, 2, H, L, -1), k, v, scale=self.scale)
        return self.proj(out.transpose(1, 2).reshape(2 * B, L, C))


# ------------------------------------------------------------------------------------------- main encoder / decoder
def _mid(channels: int) -> nn.Module:
    mid = nn.Module()
    mid.block_1, mid.attn_1 = ResnetBlock(channels, channels), AttnBlock(channels)
    mid.block_2 = ResnetBlock(channels, channels)
    return mid


def _level_res(level: int) -> int:
    return INPUT_SIZE // 2 ** level


def _prior_modules(owner: nn.Module, level: int, var_ch: int, h_ch: int, out_ch: int, heads: int) -> None:
    """The prior modules of one level: fuse (norm + 1x1 conv of [VAR features, h]), ScaleWeights, DAE, AFT."""
    name, res = f"Level_{level}", _level_res(level)
    owner.cat_rec_syn_bf_nm[name] = _gn(var_ch + h_ch)
    owner.cat_rec_syn_bf[name] = nn.Conv2d(var_ch + h_ch, var_ch, 1)
    owner.cat_rec_syn[name] = ScaleWeights(var_ch, out_ch, 2 ** (len(CH_MULT) - 1 - level), res, heads)
    owner.DAE[name] = PixelMix(out_ch, res, heads)
    owner.AFT[name] = AnchorCrossAttn(out_ch)


def _apply_prior(owner: nn.Module, level: int, h: torch.Tensor, var_feat: torch.Tensor,
                 maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    name = f"Level_{level}"
    vg = owner.cat_rec_syn_bf[name](owner.cat_rec_syn_bf_nm[name](torch.cat((var_feat, h), 1)))
    prior = owner.cat_rec_syn[name](vg, maps)
    h, w_z = owner.DAE[name](h, prior)
    return owner.AFT[name](h, prior), w_z


class MainEncoder(nn.Module):
    """``Mainencoder``: VAR's encoder layout (ch 160, 1,1,2,2,4, 2 res blocks) with the prior entering at levels 1-4."""

    def __init__(self):
        super().__init__()
        in_mult = (1, *CH_MULT)
        self.conv_in = nn.Conv2d(3, CH, 3, padding=1)
        self.down = nn.ModuleList()
        self.DAE, self.AFT = nn.ModuleDict(), nn.ModuleDict()
        self.cat_rec_syn, self.cat_rec_syn_bf, self.cat_rec_syn_bf_nm = (nn.ModuleDict() for _ in range(3))
        last = len(CH_MULT) - 1
        for i, m in enumerate(CH_MULT):
            block_in, block_out = CH * in_mult[i], CH * m
            _prior_modules(self, i, CH * m, block_in, block_in, 8)
            down = nn.Module()
            down.block = nn.ModuleList(ResnetBlock(block_in if j == 0 else block_out, block_out) for j in range(2))
            down.attn = nn.ModuleList(AttnBlock(block_out) for _ in range(2)) if i == last else nn.ModuleList()
            if i != last:
                down.downsample = Downsample2x(block_out)
            self.down.append(down)
        block_in = CH * CH_MULT[-1]
        self.mid = _mid(block_in)
        self.norm_out, self.conv_out = _gn(block_in), nn.Conv2d(block_in, Z, 3, padding=1)

    def forward(self, x: torch.Tensor, maps: torch.Tensor, var_feats: list[torch.Tensor]
                ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """-> (pre-``quant_conv`` latent, each level's features after its blocks, level 1's DAE logit at 2x)."""
        h, feats, w_z = self.conv_in(x), [], None
        for i, down in enumerate(self.down):
            if i > 0:
                h, w = _apply_prior(self, i, h, var_feats[i], maps)
                if i == 1:
                    w_z = F.interpolate(w, scale_factor=2, mode="nearest")
            for j, block in enumerate(down.block):
                h = block(h)
                if len(down.attn):
                    h = down.attn[j](h)
            feats.append(h)
            if i != len(self.down) - 1:
                h = down.downsample(h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(F.silu(self.norm_out(h))), feats, w_z


class MainDecoder(nn.Module):
    """``main_decoder``: VAR's decoder layout (2 res blocks per level) from the main encoder's latent; each level
    blends in the main encoder's skip, levels 4-1 the prior (fed by VAR's decoder features); the output blends
    with the input image."""

    def __init__(self):
        super().__init__()
        in_mult, last = (1, *CH_MULT), len(CH_MULT) - 1
        block_in = CH * CH_MULT[-1]
        self.conv_in = nn.Conv2d(Z, block_in, 3, padding=1)
        self.mid = _mid(block_in)
        self.DAE, self.AFT = nn.ModuleDict(), nn.ModuleDict()
        self.theta = nn.Parameter(torch.ones(len(CH_MULT)))
        self.cat_rec_syn, self.cat_rec_syn_bf, self.cat_rec_syn_bf_nm = (nn.ModuleDict() for _ in range(3))
        ups: list[nn.Module] = []
        for i in reversed(range(len(CH_MULT))):
            block_in, block_out = CH * CH_MULT[i], CH * in_mult[i]
            _prior_modules(self, i, block_in, block_in, block_in, 4)
            up = nn.Module()
            up.block = nn.ModuleList(ResnetBlock(block_in if j == 0 else block_out, block_out) for j in range(2))
            up.attn = nn.ModuleList(AttnBlock(block_out) for _ in range(2)) if i == last else nn.ModuleList()
            if i != 0:
                up.upsample = Upsample2x(block_out)
            ups.insert(0, up)
        self.up = nn.ModuleList(ups)
        self.norm_out, self.conv_out = _gn(CH), nn.Conv2d(CH, 3, 3, padding=1)
        self.input_w = nn.Parameter(torch.tensor(0.5))
        self.conv1__w = nn.Conv2d(1, 1, 1)

    def forward(self, inp: torch.Tensor, maps: torch.Tensor, z: torch.Tensor, enc_feats: list[torch.Tensor],
                w_z: torch.Tensor, var_feats: dict[int, torch.Tensor]) -> torch.Tensor:
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(self.conv_in(z))))
        for i in reversed(range(len(CH_MULT))):
            w = torch.sigmoid(self.theta[i])
            h = w * h + (1 - w) * enc_feats[i]
            if i != 0:
                h, _ = _apply_prior(self, i, h, var_feats[i], maps)
            up = self.up[i]
            for j, block in enumerate(up.block):
                h = block(h)
                if len(up.attn):
                    h = up.attn[j](h)
            if i != 0:
                h = up.upsample(h)
        res = torch.softmax(self.conv1__w(w_z), dim=1) * inp  # a softmax over one channel: exactly inp
        h = self.conv_out(F.silu(self.norm_out(h)))
        return h * (1 - self.input_w) + res * self.input_w


# ------------------------------------------------------------------------------------------- VAR features
def encoder_features(enc: Encoder, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """VAR's encoder on ``x``: its output and each level's features after its blocks (before downsampling)."""
    h, feats = enc.conv_in(x), []
    for i, down in enumerate(enc.down):
        for j, block in enumerate(down.block):
            h = block(h)
            if len(down.attn):
                h = down.attn[j](h)
        feats.append(h)
        if i != enc.num_resolutions - 1:
            h = down.downsample(h)
    h = enc.mid.block_2(enc.mid.attn_1(enc.mid.block_1(h)))
    return enc.conv_out(F.silu(enc.norm_out(h))), feats


def decoder_features(dec: Decoder, z: torch.Tensor) -> dict[int, torch.Tensor]:
    """VAR's decoder on ``z`` up to level 1: each level's features after its blocks (before upsampling). Level 0
    and the output conv, which the official model computes and discards, are skipped."""
    h, feats = dec.mid.block_2(dec.mid.attn_1(dec.mid.block_1(dec.conv_in(z)))), {}
    for i in reversed(range(1, dec.num_resolutions)):
        up = dec.up[i]
        for j, block in enumerate(up.block):
            h = block(h)
            if len(up.attn):
                h = up.attn[j](h)
        feats[i] = h
        h = up.upsample(h)
    return feats


# ------------------------------------------------------------------------------------------- the model
@dataclass
class OfficialOutput:
    image: torch.Tensor  #: (B, 3, 256, 256) in [0, 1], the official forward's output
    indices: list[torch.Tensor]  #: per scale (B, n_k): the VAR loop's tokens
    lq_indices: list[torch.Tensor]  #: per scale (B, n_k): the degraded image's (enhanced) tokens
    logits: torch.Tensor  #: (B, L, V) the CFG-mixed logits of every token
    f_hat: torch.Tensor  #: (B, Cvae, 16, 16) the predicted latent


class OfficialVarformer(nn.Module):
    """The released Varformer network (module docstring). ``forward``: ``(B, 3, 256, 256)`` in ``[-1, 1]`` ->
    :class:`OfficialOutput`; ``restore``: RGB in ``[0, 1]`` of any size -> restored RGB in ``[0, 1]``."""

    def __init__(self, depth: int = 16, enhance_layers: int = 4):
        super().__init__()
        self.tokenizer = create_vqvae("var-f16", patch_nums=VAR_PATCH_NUMS[INPUT_SIZE])
        self.transformer = create_transformer("var-d16", depth=depth, cond_drop_rate=0.0, drop_path_rate=0.0,
                                              schedule=self.schedule())
        width = self.transformer.C
        self.ft_layers = EnhanceLayers(Z, enhance_layers)
        self.cross_attn_blocks = nn.ModuleList(TokenCrossAttention(width, width // 64) for _ in range(depth // 2))
        self.Mainencoder = MainEncoder()
        self.main_decoder = MainDecoder()
        self.size: int | str = "input"  #: what restore returns: "input" (the input's size) or 256 (official)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @staticmethod
    def schedule() -> ScaleSchedule:
        """VAR's 10 scales at 256 px (token maps 1, 2, 3, 4, 5, 6, 8, 10, 13, 16)."""
        return ScaleSchedule.square(VAR_PATCH_NUMS[INPUT_SIZE])

    @torch.no_grad()
    def var_prior(self, f_lq: torch.Tensor) -> tuple[torch.Tensor, OfficialOutput]:
        """The VAR loop guided by the degraded latent ``f_lq``: per-scale prior maps ``(B, K, Cvae, 16, 16)`` and the
        tokens / logits / ``f_hat`` (``image`` left empty). Two CFG branches per image (rows ``2b``, ``2b + 1``),
        both of the null class, which :class:`TokenCrossAttention` makes differ."""
        tok, tr = self.tokenizer, self.transformer
        q, sched = tok.quantize, tok.schedule
        lq_idx = q.encode(f_lq)
        lq_in = q.teacher_forcing_input(lq_idx)  # (B, L - 1, Cvae): the degraded image's tokens of scales 1..K-1
        B, first = f_lq.shape[0], sched.tokens_per_scale[0]
        cond = tr.class_emb(torch.full((2 * B,), tr.cfg.num_classes, device=f_lq.device))
        lvl_pos = tr.lvl_embed(tr.lvl_1L) + tr.pos_1LC
        lq = cond[::2, None].expand(B, first, -1) + tr.pos_start.expand(B, first, -1) + lvl_pos[:, :first]
        x = lq.repeat_interleave(2, dim=0)
        ada = tr._ada(cond)
        f_hat = q.empty_fhat(B, f_lq.device)
        maps, logits, idx = [], [], []
        K, n_inject = sched.num_scales, len(self.cross_attn_blocks)
        tr.kv_caching(True)
        try:
            for k in range(K):
                for i, block in enumerate(tr.blocks):
                    x = block(x, ada, None, None)
                    if i < n_inject:
                        x = self.cross_attn_blocks[i](lq, x)
                l_k = tr.head(tr.head_nm(x.float(), cond).float()).float().unflatten(0, (B, 2))
                t = CFG * k / (K - 1)
                l_k = (1 + t) * l_k[:, 0] - t * l_k[:, 1]
                idx_k = l_k.argmax(-1)
                up = q.quant_resi(latent_resize(q.embed(idx_k, k), sched.final_shape, q.kind, up=True), k)
                f_hat = f_hat + up
                maps.append(up)
                logits.append(l_k)
                idx.append(idx_k)
                if k + 1 < K:
                    nxt = sched.scale_slice(k + 1)
                    pos = lvl_pos[:, nxt]
                    lq = tr.word_embed(lq_in[:, nxt.start - first:nxt.stop - first]) + pos
                    x = (tr.word_embed(q.downsample_tokens(f_hat, k + 1)) + pos).repeat_interleave(2, dim=0)
        finally:
            tr.kv_caching(False)
        return torch.stack(maps, 1), OfficialOutput(torch.empty(0), idx, lq_idx, torch.cat(logits, 1), f_hat)

    @torch.no_grad()
    def forward(self, x_B3HW: torch.Tensor) -> OfficialOutput:
        if x_B3HW.ndim != 4 or tuple(x_B3HW.shape[1:]) != (3, INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"the official Varformer takes (B, 3, {INPUT_SIZE}, {INPUT_SIZE}) in [-1, 1]; got "
                             f"{tuple(x_B3HW.shape)} (restore() resizes any image)")
        tok = self.tokenizer
        h, var_enc = encoder_features(tok.encoder, x_B3HW)
        f_lq = self.ft_layers(tok.quant_conv(h))
        maps, out = self.var_prior(f_lq)
        h, enc_feats, w_z = self.Mainencoder(x_B3HW, maps, var_enc)
        var_dec = decoder_features(tok.decoder, tok.post_quant_conv(out.f_hat))
        y = self.main_decoder(x_B3HW, maps, tok.quant_conv(h), enc_feats, w_z, var_dec)
        out.image = y.clamp(-1, 1).add(1).mul(0.5)
        return out

    @torch.no_grad()
    def restore(self, image_B3HW: torch.Tensor, size: int | str | None = None) -> torch.Tensor:
        """Restored RGB in ``[0, 1]``: the official processing (module docstring) at 256x256, returned at the input's
        size (``size="input"``, the default unless :attr:`size` says otherwise) or at 256x256 (``size=256``)."""
        size = self.size if size is None else size
        if size not in ("input", INPUT_SIZE):
            raise ValueError(f"size must be 'input' or {INPUT_SIZE}, got {size!r}")
        H, W = image_B3HW.shape[-2:]
        y = self(preprocess(image_B3HW.float())).image
        if size == "input" and (H, W) != (INPUT_SIZE, INPUT_SIZE):
            y = F.interpolate(y, (H, W), mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
        return y


def _linear_taps(n_in: int, n_out: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """OpenCV's ``INTER_LINEAR`` taps along one axis: source ``(dst + 0.5) * scale - 0.5`` computed in double and
    rounded to float, split into a floor index and a fraction; clamped at both edges (one tap, weight 1)."""
    f = ((torch.arange(n_out, dtype=torch.float64) + 0.5) * (1.0 / (n_out / n_in)) - 0.5).float()
    i0 = torch.floor(f)
    frac, i0 = f - i0, i0.long()
    edge = (i0 < 0) | (i0 >= n_in - 1)
    frac[edge] = 0.0
    i0 = i0.clamp(0, n_in - 1)
    return i0, (i0 + 1).clamp(max=n_in - 1), frac


def resize_linear(x_BCHW: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``cv2.resize(..., INTER_LINEAR)`` of float32 images: bilinear without antialiasing, rows then columns, each
    two-tap sum ``a (1 - f) + b f`` rounded once to float32 (as OpenCV's fused multiply-adds do)."""
    (y0, y1, fy), (x0, x1, fx) = _linear_taps(x_BCHW.shape[-2], size[0]), _linear_taps(x_BCHW.shape[-1], size[1])
    x = x_BCHW.double()
    (gx, fx), (gy, fy) = (((1 - f).double(), f.double()) for f in (fx, fy))  # weights in float32, as OpenCV's
    h = (x[..., x0] * gx + x[..., x1] * fx).float().double()
    return (h[..., y0, :] * gy[:, None] + h[..., y1, :] * fy[:, None]).float()


def preprocess(image_B3HW: torch.Tensor) -> torch.Tensor:
    """The official test's input: RGB in ``[0, 1]`` -> 256x256 (:func:`resize_linear`, OpenCV's ``INTER_LINEAR``)
    -> ``(x - 0.5) / 0.5``."""
    x = image_B3HW.float()
    if tuple(x.shape[-2:]) != (INPUT_SIZE, INPUT_SIZE):
        x = resize_linear(x, (INPUT_SIZE, INPUT_SIZE))
    return (x - 0.5) / 0.5


@dataclass
class OfficialRun:
    """:func:`run_official_test` of one image (batch 0, scales concatenated)."""

    model_input: torch.Tensor  #: (3, 256, 256) in [-1, 1]
    output: torch.Tensor  #: (3, 256, 256) RGB in [0, 1]
    output_u8_bgr: np.ndarray  #: (256, 256, 3) what the official test writes (tensor2img: BGR, round(x * 255))
    indices: torch.Tensor  #: (L,) the VAR loop's tokens
    lq_indices: torch.Tensor  #: (L,) the degraded image's tokens
    logits: torch.Tensor  #: (L, V)
    f_hat: torch.Tensor  #: (Cvae, 16, 16)


def run_official_test(model: OfficialVarformer, image_path: str | Path) -> OfficialRun:
    """The official test script's steps for one image file (``basicsr/varformer_test.py``): read (8/16-bit, no EXIF
    rotation, as ``cv2.IMREAD_UNCHANGED``), :func:`preprocess`, forward, ``tensor2img``."""
    from scalear.datasets.restoration.io import read_image_tensor

    x = preprocess(read_image_tensor(image_path)[None])
    out = model(x)
    y = out.image[0]
    u8 = (y.permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)[:, :, ::-1]
    return OfficialRun(x[0], y, np.ascontiguousarray(u8), torch.cat(out.indices, 1)[0], torch.cat(out.lq_indices, 1)[0],
                       out.logits[0], out.f_hat[0])


__all__ = ["INPUT_SIZE", "OfficialVarformer", "OfficialOutput", "OfficialRun", "run_official_test", "preprocess",
           "resize_linear", "encoder_features", "decoder_features",
           "SwinBlock", "SwinGroup", "ScaleWeights", "PixelMix", "AnchorCrossAttn", "EnhanceBlock", "EnhanceLayers",
           "TokenCrossAttention", "MainEncoder", "MainDecoder", "swin_relative_index", "swin_shift_mask"]
