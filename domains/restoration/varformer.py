"""Varformer: image restoration guided by VAR's multi-scale prior (Wang & Zhao, CVPR 2025).

"Navigating Image Restoration with VAR's Distribution Alignment Prior" (code siywang541/Varformer, class
``VarFormer2``; arXiv 2412.21063). A VAR model trained on clean images (its multi-scale tokenizer and
next-scale transformer) turns a degraded image into a stack of per-scale latent maps that are aligned with the
clean-image distribution; low scales carry global appearance (low light, haze), high scales local detail
(noise, rain). A U-shaped restoration network reads that stack at several levels.

* **Prior extraction** (paper Sec. 3.2, :class:`VARPrior`): the degraded image, resized to the tokenizer's
  input, is encoded by the tokenizer (``encode_latent``), *enhanced* by a few trainable residual conv layers
  (the reference's ``EnhanceLayers``) and quantized into multi-scale tokens. An unconditional (null-class)
  VAR pass runs scale by scale with the KV cache and greedy decoding; after each of the first
  ``inject_blocks`` transformer blocks a trainable cross-attention (:class:`TokenInjection`, a side module
  around the frozen block) lets the hidden states of scale ``k`` read the degraded image's tokens of scale
  ``k``. Each scale's upsampled, phi-refined code map is one prior map: ``K`` maps whose sum is the predicted
  ``f_hat`` (:attr:`PriorOutput.maps`).
* **Degradation-aware enhancement, DAE** (Sec. 3.3, :class:`ScaleWeights`): per image and U-net level, a
  small conv head on the level's features gives a softmax over the ``K`` scales; the weighted maps are
  concatenated, instance-normalised, projected to the level's width and resized to its resolution.
* **Adaptive feature transformation, AFT** (Sec. 3.3, :class:`AnchorCrossAttention`): cross-attention with the
  prior as anchor (queries from the prior, keys/values from the features) plus a sigmoid-gated fusion, applied
  at every encoder and decoder level but the first, as in the reference.
* **Losses** (Sec. 3.4, :func:`varformer_loss`): L1 to the clean image, MSE between the enhanced latent and the
  clean image's latent, cross-entropy of the VAR pass's logits against the clean image's tokens, and LPIPS
  when its weights are supplied locally.

Which parts are frozen is :attr:`VarformerConfig.freeze`: ``"tokenizer"`` (the VQ-VAE), ``"blocks"`` (the
transformer blocks), ``"embeddings"`` (condition, positional, level and word embeddings) and ``"head"``. The
reference freezes the tokenizer and the blocks and trains the embeddings and head (the default here).

Simplifications (the released network itself is the ``official`` preset, :mod:`.varformer_official`): the
restoration net is a compact conv U-net (the reference: Swin/Restormer blocks and a second "main"
encoder/decoder with texture warping); the enhancement layers are residual convs instead of
transformer layers; AFT and DAE use Restormer-style channel ("transposed") attention instead of window
attention, so they run at any image size; the injection cross-attention is added as a residual with a
zero-initialised output (the reference replaces the hidden state), so training starts from the frozen VAR;
no classifier-free guidance (both branches of the reference are the null class). The prior is computed at the
tokenizer's input size and resized to each level, so :meth:`Varformer.restore` takes any image size; use
:mod:`~scalear.domains.restoration.tiling` for large images.

Example:
    >>> model = create_varformer("tiny").eval()
    >>> out = model.restore(torch.rand(1, 3, 40, 52))
    >>> tuple(out.shape), bool(out.min() >= 0), bool(out.max() <= 1)
    ((1, 3, 40, 52), True, True)
"""

from __future__ import annotations

from collections import ChainMap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from scalear.config_check import JSONConfig
from scalear.io import register_model_kind
from scalear.registry import register_presets
from scalear.transformer import (CONDITION_FIELDS, TOKENIZER_FIELDS, NextScaleTransformer, TransformerConfig,
                                 check_transformer_overrides, tokenizer_fields)
from scalear.vqvae import VQVAE, VQVAE_PRESETS, VQVAEConfig

#: the groups :attr:`VarformerConfig.freeze` may name
FREEZE_GROUPS: tuple[str, ...] = ("tokenizer", "blocks", "embeddings", "head")
_EMBEDDINGS = ("class_emb", "uncond_emb", "cond_proj", "cond_null", "pos_start", "pos_1LC", "lvl_embed", "word_embed")
_DERIVED = TOKENIZER_FIELDS | (CONDITION_FIELDS - {"num_classes"})  # set by the model itself


# ------------------------------------------------------------------------------------------- config
@dataclass
class VarformerConfig(JSONConfig):
    """Hyper-parameters of :class:`Varformer`.

    Args:
        tokenizer: :class:`~scalear.vqvae.VQVAEConfig` fields of the prior's tokenizer (RGB, 2D).
        transformer: :class:`~scalear.transformer.TransformerConfig` fields (depth, width, heads,
            ``num_classes``; vocabulary, latent width and schedule come from the tokenizer).
        use_prior: False builds the same U-net without the VAR prior branch, DAE and AFT (the no-prior ablation).
        freeze: groups of :data:`FREEZE_GROUPS` kept frozen (no gradient, eval mode).
        inject_blocks: transformer blocks followed by a token-injection cross-attention (reference: depth // 3).
        enhance_layers: residual conv layers enhancing the degraded latent (reference: 4).
        widths: channels of the U-net's levels (one 2x downsampling between levels).
        blocks_per_level: residual blocks per level in encoder and decoder.
        heads: attention heads of DAE / AFT.
    """

    tokenizer: dict[str, Any] = field(default_factory=lambda: dict(VQVAE_PRESETS["tiny"]))
    transformer: dict[str, Any] = field(default_factory=lambda: dict(depth=4, width=128, num_heads=4, drop_path_rate=0.0))
    use_prior: bool = True
    freeze: tuple[str, ...] = ("tokenizer", "blocks")
    inject_blocks: int | None = None
    enhance_layers: int = 2
    widths: tuple[int, ...] = (16, 32, 64)
    blocks_per_level: int = 1
    heads: int = 2

    def __post_init__(self) -> None:
        self.tokenizer = VQVAEConfig.from_dict(dict(self.tokenizer)).to_dict()
        if self.tokenizer["in_channels"] != 3 or self.tokenizer["dims"] != 2:
            raise ValueError("Varformer's prior needs an RGB image tokenizer (in_channels=3, dims=2)")
        self.transformer = check_transformer_overrides(self.transformer, "Varformer transformer", _DERIVED)
        self.freeze, self.widths = tuple(self.freeze), tuple(int(w) for w in self.widths)
        if bad := sorted(set(self.freeze) - set(FREEZE_GROUPS)):
            raise ValueError(f"unknown freeze groups {bad}; choose from {FREEZE_GROUPS}")
        if len(self.widths) < 2 or any(w % self.heads or w % 4 for w in self.widths):
            raise ValueError(f"widths {self.widths}: need >= 2 levels, each divisible by heads={self.heads} and by 4")
        depth = self.transformer.get("depth", 16)
        if self.inject_blocks is None:
            self.inject_blocks = max(1, depth // 3)
        if not 0 <= self.inject_blocks <= depth:
            raise ValueError(f"inject_blocks must be in [0, {depth}], got {self.inject_blocks}")

    def transformer_config(self, tokenizer: VQVAE) -> TransformerConfig:
        return TransformerConfig(**{"cond_drop_rate": 0.0, **self.transformer}, **tokenizer_fields(tokenizer.quantize))

    label = "Varformer config"


#: ``tiny``: the core's tiny tokenizer (32 px prior, 6 scales, 256 codes), a 4-block transformer and a 3-level
#: U-net of 16-64 channels, trainable on 2 CPU cores. ``small``: 64 px prior, 8 blocks. ``paper``: VAR's f16
#: tokenizer (256 px, 10 scales) and VAR-d16, loadable from VAR's public weights (:func:`init_from_var`).
VARFORMER_PRESETS: dict[str, VarformerConfig] = {
    "tiny": VarformerConfig(),
    "small": VarformerConfig(tokenizer=dict(VQVAE_PRESETS["small"]),
                             transformer=dict(depth=8, width=384, num_heads=6, drop_path_rate=0.0),
                             widths=(32, 64, 128), blocks_per_level=2, heads=4),
    "paper": VarformerConfig(tokenizer=dict(VQVAE_PRESETS["var-f16"]),
                             transformer=dict(depth=16, width=1024, num_heads=16, drop_path_rate=0.0,
                                              num_classes=1000, init_adaln_gamma=1e-3),
                             enhance_layers=4, widths=(48, 96, 192, 384), blocks_per_level=2, heads=8),
}


#: The released network (siywang541/Varformer ``VarFormer2``, "VarFormer_16": 908M parameters, 256 px only), as a
#: preset name: :class:`~.varformer_official.OfficialVarformer`, loaded from the authors' files by
#: :func:`~.varformer_checkpoints.load_official_varformer`. The compact presets above are the CPU-trainable ones.
OFFICIAL_PRESET = "official"


def create_varformer(name: str = "tiny", **overrides: Any) -> nn.Module:
    """A preset of :data:`VARFORMER_PRESETS` with :class:`VarformerConfig` ``overrides`` (a ``transformer``
    dict is merged into the preset's), or :data:`OFFICIAL_PRESET`, the released network (no overrides)."""
    if name == OFFICIAL_PRESET:
        if overrides:
            raise ValueError(f"the {OFFICIAL_PRESET!r} Varformer is the released network; it takes no overrides "
                             f"(got {sorted(overrides)})")
        from scalear.domains.restoration.varformer_official import OfficialVarformer

        return OfficialVarformer()
    if name not in VARFORMER_PRESETS:
        raise KeyError(f"unknown Varformer preset {name!r}; available: {sorted(VARFORMER_PRESETS)} and "
                       f"{OFFICIAL_PRESET!r}")
    d = VARFORMER_PRESETS[name].to_dict()
    if "transformer" in overrides:
        overrides["transformer"] = {**d["transformer"], **overrides["transformer"]}
    return Varformer(VarformerConfig.from_dict({**d, **overrides}))


# ------------------------------------------------------------------------------------------- building blocks
class LayerNorm2d(nn.GroupNorm):
    """Normalisation over all channels and pixels of each image (``GroupNorm(1, C)``), size-agnostic."""

    def __init__(self, channels: int):
        super().__init__(1, channels)


class ResBlock(nn.Module):
    """``x + conv(gelu(conv(norm(x))))``."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.GELU(),
                                  nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class TokenInjection(nn.Module):
    """Cross-attention from VAR's hidden tokens of one scale to the degraded image's tokens of that scale (keys
    carry the scale's positional + level embedding), added as a residual whose output projection starts at
    zero (the reference's ``CrossAttentionAR``)."""

    def __init__(self, width: int, latent_dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.ln_q, self.ln_kv = nn.LayerNorm(width), nn.LayerNorm(latent_dim)
        self.to_q, self.to_kv, self.proj = nn.Linear(width, width), nn.Linear(latent_dim, 2 * width), nn.Linear(width, width)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x_BnC: torch.Tensor, lq_BnCvae: torch.Tensor, pos_BnC: torch.Tensor) -> torch.Tensor:
        B, n, C = x_BnC.shape
        h = self.num_heads
        q = self.to_q(self.ln_q(x_BnC)).view(B, n, h, -1).transpose(1, 2)
        k, v = self.to_kv(self.ln_kv(lq_BnCvae)).chunk(2, dim=-1)
        k, v = ((k + pos_BnC).view(B, -1, h, C // h).transpose(1, 2), v.view(B, -1, h, C // h).transpose(1, 2))
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, n, C)
        return x_BnC + self.proj(out)


class ScaleWeights(nn.Module):
    """DAE: per image, a softmax over the ``K`` prior scales from a level's features; the weighted maps,
    concatenated and instance-normalised, are projected to the level's width (reference ``WPMoudle4_norm``)."""

    def __init__(self, channels: int, num_scales: int, latent_dim: int):
        super().__init__()
        self.score = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.GELU(),
                                   nn.Conv2d(channels, num_scales, 1))
        self.norm = nn.InstanceNorm2d(num_scales * latent_dim, affine=True)
        self.proj = nn.Conv2d(num_scales * latent_dim, channels, 1)

    def weights(self, feat_BCHW: torch.Tensor) -> torch.Tensor:
        """``(B, K)`` scale weights, non-negative, summing to 1 per image."""
        return self.score(feat_BCHW).mean((2, 3)).softmax(dim=1)

    def forward(self, feat_BCHW: torch.Tensor, maps_BKChw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w_BK = self.weights(feat_BCHW)
        B, K, C, h, w = maps_BKChw.shape
        p = self.proj(self.norm((maps_BKChw * w_BK.view(B, K, 1, 1, 1)).reshape(B, K * C, h, w)))
        return F.interpolate(p, feat_BCHW.shape[-2:], mode="bilinear", align_corners=False), w_BK


class AnchorCrossAttention(nn.Module):
    """AFT: channel ("transposed", Restormer MDTA) cross-attention with the prior as anchor (queries from the
    prior, keys and values from the features), then a sigmoid gate mixing in the prior (reference
    ``AnchorCrossAttnBlock`` + ``RACMoudle2``)."""

    def __init__(self, channels: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm_f, self.norm_p = LayerNorm2d(channels), LayerNorm2d(channels)
        self.q, self.kv = nn.Conv2d(channels, channels, 1), nn.Conv2d(channels, 2 * channels, 1)
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.proj = nn.Conv2d(channels, channels, 1)
        self.gate = nn.Conv2d(2 * channels, channels, 1)

    def forward(self, feat_BCHW: torch.Tensor, prior_BCHW: torch.Tensor) -> torch.Tensor:
        B, C, H, W = feat_BCHW.shape
        q = self.q(self.norm_p(prior_BCHW)).view(B, self.heads, C // self.heads, H * W)
        k, v = self.kv(self.norm_f(feat_BCHW)).view(B, 2, self.heads, C // self.heads, H * W).unbind(1)
        attn = (F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-1, -2) * self.temperature).softmax(-1)
        x = feat_BCHW + self.proj((attn @ v).view(B, C, H, W))
        g = torch.sigmoid(self.gate(torch.cat((x, prior_BCHW), 1)))
        return x + g * prior_BCHW


# ------------------------------------------------------------------------------------------- the VAR prior
@dataclass
class PriorOutput:
    """What :class:`VARPrior` computes for a batch of degraded images."""

    maps: torch.Tensor  #: (B, K, Cvae, h, w) per-scale upsampled code maps; their sum is the predicted f_hat
    logits: torch.Tensor  #: (B, L, V) the VAR pass's logits of every token
    indices: list[torch.Tensor]  #: per scale (B, n_k) the greedy tokens
    f_enhanced: torch.Tensor  #: (B, Cvae, h, w) the enhanced latent of the degraded image


class VARPrior(nn.Module):
    """The prior branch: tokenizer, latent enhancement, token injection and the VAR pass (module docstring)."""

    def __init__(self, cfg: VarformerConfig):
        super().__init__()
        self.tokenizer = VQVAE(VQVAEConfig.from_dict(cfg.tokenizer))
        self.transformer = NextScaleTransformer(cfg.transformer_config(self.tokenizer))
        Cvae, tr = self.tokenizer.config.z_channels, self.transformer
        self.enhance = nn.Sequential(*(ResBlock(Cvae) for _ in range(cfg.enhance_layers)))
        self.inject = nn.ModuleList(TokenInjection(tr.C, Cvae, tr.cfg.num_heads) for _ in range(cfg.inject_blocks))

    @property
    def num_scales(self) -> int:
        return self.tokenizer.schedule.num_scales

    def _labels(self, B: int, device: torch.device) -> dict[str, torch.Tensor]:
        n = self.transformer.cfg.num_classes
        return {"label_B": torch.full((B,), n, device=device)} if n else {}

    def tokenizer_input(self, image_B3HW: torch.Tensor) -> torch.Tensor:
        """Images in ``[0, 1]`` (any size) -> the tokenizer's input in ``[-1, 1]`` at its size."""
        size = tuple(self.tokenizer.input_shape)
        if tuple(image_B3HW.shape[-2:]) != size:
            image_B3HW = F.interpolate(image_B3HW, size, mode="bilinear", align_corners=False, antialias=True)
        return image_B3HW.clamp(0, 1) * 2 - 1

    def latent(self, image_B3HW: torch.Tensor) -> torch.Tensor:
        """``encode_latent`` of an image in ``[0, 1]`` (no graph when the tokenizer is frozen)."""
        tok = self.tokenizer
        with torch.set_grad_enabled(torch.is_grad_enabled() and any(p.requires_grad for p in tok.parameters())):
            return tok.encode_latent(self.tokenizer_input(image_B3HW))

    def forward(self, degraded_B3HW: torch.Tensor) -> PriorOutput:
        tok, tr = self.tokenizer, self.transformer
        q, sched = tok.quantize, tok.schedule
        f_lq = self.latent(degraded_B3HW)
        f_enh = f_lq + self.enhance(f_lq)
        with torch.no_grad():  # the degraded image's multi-scale tokens: its cumulative f_hat at scale k, at scale k
            lq_tokens = [q.downsample_tokens(f, k) for k, f in enumerate(q.encode_fhats(f_enh.detach()))]
        B = degraded_B3HW.shape[0]
        cond_BC = tr.condition(B, **self._labels(B, degraded_B3HW.device))
        ada = tr._ada(cond_BC)
        f_hat, maps, logits, indices = torch.zeros_like(f_lq), [], [], []
        tr.kv_caching(True)
        try:
            x_BnC = tr.embed_scale(0, cond_BC)
            for k in range(sched.num_scales):
                pos = tr.pos_1LC[:, sched.scale_slice(k)] + tr.lvl_embed.weight[k]
                h_BnC = x_BnC
                for i, block in enumerate(tr.blocks):
                    h_BnC = block(h_BnC, ada, None, None)
                    if i < len(self.inject):
                        h_BnC = self.inject[i](h_BnC, lq_tokens[k].to(h_BnC.dtype), pos)
                logits_BnV = tr.head(tr.head_nm(h_BnC, cond_BC)).float()
                idx_Bn = logits_BnV.argmax(-1)
                with torch.no_grad():
                    new = q.add_scale(torch.zeros_like(f_hat), q.embed(idx_Bn, k), k)  # phi_k(upsample(code map))
                f_hat = f_hat + new
                maps.append(new)
                logits.append(logits_BnV)
                indices.append(idx_Bn)
                if k + 1 < sched.num_scales:
                    x_BnC = tr.embed_scale(k + 1, cond_BC, q.downsample_tokens(f_hat, k + 1))
        finally:
            tr.kv_caching(False)
        return PriorOutput(torch.stack(maps, 1), torch.cat(logits, 1), indices, f_enh)


# ------------------------------------------------------------------------------------------- the model
@dataclass
class VarformerOutput:
    image: torch.Tensor  #: (B, 3, H, W) the restoration (unclamped)
    prior: PriorOutput | None  #: None when ``use_prior`` is False
    scale_weights: list[torch.Tensor]  #: per prior-guided level, (B, K) DAE weights


class Varformer(nn.Module):
    """Varformer (module docstring): a U-net restoring images, guided at every level but the first by the
    DAE-weighted, AFT-fused VAR prior. ``restore`` maps ``(B, 3, H, W)`` in ``[0, 1]`` to the same."""

    scalear_kind = "varformer"

    def __init__(self, cfg: VarformerConfig):
        super().__init__()
        self.cfg = cfg
        W, nb = cfg.widths, cfg.blocks_per_level
        self.prior = VARPrior(cfg) if cfg.use_prior else None
        self.conv_in = nn.Conv2d(3, W[0], 3, padding=1)
        self.enc = nn.ModuleList(nn.Sequential(*(ResBlock(w) for _ in range(nb))) for w in W)
        self.down = nn.ModuleList(nn.Conv2d(a, b, 4, stride=2, padding=1) for a, b in zip(W[:-1], W[1:]))
        self.up = nn.ModuleList(nn.Sequential(nn.Conv2d(b, 4 * a, 1), nn.PixelShuffle(2)) for a, b in zip(W[:-1], W[1:]))
        self.fuse = nn.ModuleList(nn.Conv2d(2 * a, a, 1) for a in W[:-1])
        self.dec = nn.ModuleList(nn.Sequential(*(ResBlock(w) for _ in range(nb))) for w in W[:-1])
        self.conv_out = nn.Conv2d(W[0], 3, 3, padding=1)
        if self.prior is not None:
            K, Cvae = self.prior.num_scales, self.prior.tokenizer.config.z_channels
            # in call order: encoder levels 1..L-1 (the last is the bottleneck), then decoder levels L-2..1
            guided = [*W[1:], *reversed(W[1:-1])]
            self.dae = nn.ModuleList(ScaleWeights(w, K, Cvae) for w in guided)
            self.aft = nn.ModuleList(AnchorCrossAttention(w, cfg.heads) for w in guided)
        self.apply_freeze()

    # ------------------------------------------------------------------ freezing
    def frozen_modules(self) -> list[nn.Module]:
        """The modules :attr:`VarformerConfig.freeze` names (none without the prior)."""
        if self.prior is None:
            return []
        tr, out = self.prior.transformer, []
        shared_ada = [tr.shared_ada_lin] if tr.cfg.shared_adaln else []  # else an Identity: nothing to freeze
        groups = {"tokenizer": [self.prior.tokenizer], "blocks": [tr.blocks, *shared_ada],
                  "head": [tr.head_nm, tr.head]}
        for g in self.cfg.freeze:
            out += groups.get(g, [])
        return out

    def frozen_parameters(self) -> list[nn.Parameter]:
        ps = [p for m in self.frozen_modules() for p in m.parameters()]
        if self.prior is not None and "embeddings" in self.cfg.freeze:
            tr = self.prior.transformer
            ps += [p for n, p in tr.named_parameters() if n.split(".")[0] in _EMBEDDINGS]
        return ps

    def apply_freeze(self) -> None:
        for p in self.frozen_parameters():
            p.requires_grad_(False)
        for m in self.frozen_modules():
            m.eval()

    def train(self, mode: bool = True) -> "Varformer":
        super().train(mode)
        for m in self.frozen_modules():
            m.eval()
        return self

    # ------------------------------------------------------------------ forward
    @property
    def multiple(self) -> int:
        """Input sides are padded (reflect) to a multiple of this."""
        return 2 ** (len(self.cfg.widths) - 1)

    def forward(self, degraded_B3HW: torch.Tensor) -> VarformerOutput:
        if degraded_B3HW.ndim != 4 or degraded_B3HW.shape[1] != 3:
            raise ValueError(f"expected images (B, 3, H, W) in [0, 1], got shape {tuple(degraded_B3HW.shape)}")
        x = degraded_B3HW.float()
        H, W = x.shape[-2:]
        m = self.multiple
        ph, pw = -H % m, -W % m
        xp = F.pad(x, (0, pw, 0, ph), mode="reflect" if min(H, W) > max(ph, pw) else "replicate") if ph or pw else x
        prior = self.prior(x) if self.prior is not None else None
        guide = iter(zip(self.dae, self.aft)) if prior is not None else None
        weights: list[torch.Tensor] = []

        def guided(h: torch.Tensor) -> torch.Tensor:
            if guide is None:
                return h
            dae, aft = next(guide)
            p, w_BK = dae(h, prior.maps)
            weights.append(w_BK)
            return aft(h, p)

        h, skips = self.conv_in(xp), []
        for lvl, block in enumerate(self.enc):
            if lvl > 0:
                h = guided(self.down[lvl - 1](h))
            h = block(h)
            skips.append(h)
        for lvl in reversed(range(len(self.dec))):
            h = self.fuse[lvl](torch.cat((self.up[lvl](h), skips[lvl]), 1))
            h = self.dec[lvl](guided(h) if lvl > 0 else h)
        out = xp + self.conv_out(h)
        return VarformerOutput(out[..., :H, :W], prior, weights)

    @torch.no_grad()
    def restore(self, image_B3HW: torch.Tensor) -> torch.Tensor:
        """Restored images ``(B, 3, H, W)`` in ``[0, 1]`` for degraded ones of any size."""
        return self(image_B3HW).image.clamp(0, 1)

    def num_params(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)


# ------------------------------------------------------------------------------------------- losses
@dataclass
class LossWeights:
    """Weights of :func:`varformer_loss` (the reference: L1 1, feature 0.5, tokens 0.1, perceptual 1)."""

    l1: float = 1.0
    feature: float = 0.5
    tokens: float = 0.1
    perceptual: float = 1.0


def varformer_loss(model: Varformer, degraded_B3HW: torch.Tensor, clean_B3HW: torch.Tensor,
                   weights: LossWeights | None = None, lpips: nn.Module | None = None
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor], VarformerOutput]:
    """The training loss (Sec. 3.4): ``l1 |y - x| + feature MSE(f_enh, f_clean) + tokens CE(logits, idx_clean)
    [+ perceptual LPIPS(y, x)]``; the prior terms only with the prior, LPIPS only when ``lpips`` is given.
    Returns the total, the terms (detached) and the model output."""
    w = weights or LossWeights()
    out = model(degraded_B3HW)
    l1 = F.l1_loss(out.image, clean_B3HW)
    logs, total = {"l1": l1.detach()}, w.l1 * l1
    if out.prior is not None:
        prior = model.prior
        with torch.no_grad():
            f_clean = prior.latent(clean_B3HW)
            idx_clean = torch.cat(prior.tokenizer.quantize.encode(f_clean), 1)
        feat = F.mse_loss(out.prior.f_enhanced, f_clean)
        ce = F.cross_entropy(out.prior.logits.transpose(1, 2), idx_clean)
        total = total + w.feature * feat + w.tokens * ce
        logs |= {"feature": feat.detach(), "tokens": ce.detach(),
                 "token_acc": (out.prior.logits.argmax(-1) == idx_clean).float().mean()}
    if lpips is not None and w.perceptual > 0:
        perc = lpips(out.image.clamp(0, 1) * 2 - 1, clean_B3HW * 2 - 1).mean()
        total = total + w.perceptual * perc
        logs["perceptual"] = perc.detach()
    return total, logs, out


# ------------------------------------------------------------------------------------------- VAR weights
@torch.no_grad()
def init_from_var(model: Varformer, var_path: str | Path | None = None, vae_path: str | Path | None = None) -> Varformer:
    """Load VAR's public weights (``vae_ch160v4096z32.pth``, ``var_d16.pth``) into the prior, through
    :mod:`scalear.var_checkpoints`; the model needs VAR's architecture (the ``paper`` preset for VAR-d16)."""
    from scalear.var_checkpoints import (CheckpointMismatchError, _load_tensors, load_var_vqvae,
                                         map_var_transformer_state_dict)

    if model.prior is None:
        raise ValueError("this Varformer has no prior (use_prior=False); there is nothing to load VAR's weights into")
    if vae_path is not None:
        model.prior.tokenizer.load_state_dict(load_var_vqvae(vae_path).state_dict())
    if var_path is not None:
        tr = model.prior.transformer
        sd = map_var_transformer_state_dict(_load_tensors(var_path), tr.cfg.schedule, source=str(var_path))
        own = tr.state_dict()
        bad = sorted(k for k in set(sd) & set(own) if sd[k].shape != own[k].shape)
        if set(own) != set(sd) or bad:
            raise CheckpointMismatchError(f"{var_path} does not fit this Varformer's transformer: missing "
                                          f"{sorted(set(own) - set(sd))[:8]}, unexpected {sorted(set(sd) - set(own))[:8]}, "
                                          f"shape mismatches {bad[:8]}")
        tr.load_state_dict({k: v.float() for k, v in sd.items()})
    return model


def load_prior(model: Varformer, tokenizer: str | Path | None = None, transformer: str | Path | None = None) -> Varformer:
    """Load a scalear prior (exported folders): a tokenizer and optionally a transformer trained on clean images."""
    from scalear.io import from_pretrained

    if model.prior is None:
        raise ValueError("this Varformer has no prior (use_prior=False); cannot load a prior into it")
    for path, attr, kind in ((tokenizer, "tokenizer", VQVAE), (transformer, "transformer", NextScaleTransformer)):
        if path is None:
            continue
        m = from_pretrained(path)
        if not isinstance(m, kind):
            raise ValueError(f"{path}: expected an exported {kind.__name__}, got a {type(m).__name__}")
        own = getattr(model.prior, attr)
        try:
            own.load_state_dict(m.state_dict())
        except RuntimeError as e:
            raise ValueError(f"{path} does not fit this Varformer's {attr} (choose the preset it was trained "
                             f"for): {e}") from None
    return model


def _build(d: dict) -> Varformer:
    return Varformer(VarformerConfig.from_dict(d))


register_model_kind("varformer", _build, lambda m: m.cfg.to_dict())
register_presets("varformer", ChainMap(VARFORMER_PRESETS, {OFFICIAL_PRESET: "released VarFormer2"}),
                 create_varformer)

__all__ = ["FREEZE_GROUPS", "VarformerConfig", "VARFORMER_PRESETS", "create_varformer", "Varformer", "VarformerOutput",
           "VARPrior", "PriorOutput", "ScaleWeights", "AnchorCrossAttention", "TokenInjection", "LossWeights",
           "varformer_loss", "init_from_var", "load_prior", "OFFICIAL_PRESET"]
