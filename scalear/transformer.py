"""The next-scale transformer (VAR, Tian et al. 2024, Sec. 3.3 and 4; models/var.py, models/basic_var.py).

A decoder-only transformer reads the whole multi-scale token sequence at once, each scale's tokens seeing
every token of their own and all coarser scales and nothing finer (block-causal attention), and predicts all
tokens of scale ``k`` in parallel from the running reconstruction area-downsampled to scale ``k``.

Faithful to VAR: AdaLN conditioning of every block (per-block or shared ``ada_lin``), a start token built from
the condition, a learned level embedding per scale plus absolute positional embedding, attention with
L2-normalised queries/keys and a learned per-head temperature (``attn_l2_norm``), width ``64 * depth`` and
``depth`` heads, stochastic depth rising linearly to ``0.1 * depth / 24``, VAR's initialisation. Module and
parameter names follow VAR's so that its released checkpoints load (see :mod:`scalear.var_checkpoints`).

Beyond VAR, two more ways to condition, which the domains need:

* **cross-attention** to condition tokens (``context_dim > 0``), e.g. image patch features (SAR3D);
* a **prefix** of condition tokens (``prefix_dim > 0``), e.g. image tokens (DepthART, DAR): prefix tokens
  attend only among themselves (with ``prefix_sees_start`` also to the first scale's start tokens, as in
  DepthART's released model), target tokens see the whole prefix plus the block-causal pattern.

Attention runs through :func:`torch.nn.functional.scaled_dot_product_attention`. At inference each attention
layer keeps a KV cache so a scale's forward pass only processes that scale's tokens (see
:mod:`scalear.sampling`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from scalear.config_check import JSONConfig, check_config
from scalear.errors import UsageError
from scalear.schedules import ScaleSchedule


# ------------------------------------------------------------------------------------------- config
@dataclass
class TransformerConfig(JSONConfig):
    """Hyper-parameters of :class:`NextScaleTransformer`; ``None`` fields take VAR's depth rule."""

    vocab_size: int = 4096
    latent_dim: int = 32  #: tokenizer channels Cvae
    schedule: ScaleSchedule = field(default_factory=lambda: ScaleSchedule.var_2d(256))
    depth: int = 16
    width: int | None = None  #: default 64 * depth
    num_heads: int | None = None  #: default depth
    mlp_ratio: float = 4.0
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float | None = None  #: default 0.1 * depth / 24
    num_classes: int = 0  #: > 0: class-conditional AdaLN; label ``num_classes`` is the null class
    cond_dim: int = 0  #: > 0: AdaLN from a generic condition vector of this size
    cond_drop_rate: float = 0.1  #: probability of dropping the AdaLN condition in training (for CFG)
    shared_adaln: bool = False  #: VAR's ``shared_aln``
    attn_l2_norm: bool = True
    context_dim: int = 0  #: > 0: cross-attention to condition tokens of this size in every block
    prefix_dim: int = 0  #: > 0: a prefix of condition tokens of this size
    max_prefix_len: int = 0  #: number of prefix positions with a learned positional embedding
    prefix_sees_start: bool = False  #: prefix tokens also attend to the first scale's tokens (DepthART's release)
    norm_eps: float = 1e-6
    init_adaln: float = 0.5
    init_adaln_gamma: float = 1e-3  #: VAR's ``alng`` (1e-3 for d16/d20, 1e-4 d24, 1e-5 d30)
    init_head: float = 0.02

    def __post_init__(self) -> None:
        if isinstance(self.schedule, dict):
            self.schedule = ScaleSchedule.from_dict(self.schedule)
        self.width = self.width or 64 * self.depth
        self.num_heads = self.num_heads or self.depth
        if self.drop_path_rate is None:
            self.drop_path_rate = 0.1 * self.depth / 24
        if self.width % self.num_heads:
            raise ValueError(f"width {self.width} is not divisible by num_heads {self.num_heads}")
        if self.num_classes and self.cond_dim:
            raise ValueError("choose one AdaLN condition: num_classes (labels) or cond_dim (vectors), not both")
        if self.prefix_dim and self.max_prefix_len <= 0:
            raise ValueError("prefix_dim > 0 needs max_prefix_len > 0 (positions of the prefix)")

    label = "transformer config"


#: TransformerConfig fields a model takes from its tokenizer's quantizer (:func:`tokenizer_fields`)
TOKENIZER_FIELDS = frozenset({"vocab_size", "latent_dim", "schedule"})
#: TransformerConfig fields of how a model conditions the transformer (class label, AdaLN vector, cross-attention
#: context, prefix tokens): a model that builds its own conditioning sets them itself
CONDITION_FIELDS = frozenset({"num_classes", "cond_dim", "context_dim", "prefix_dim", "max_prefix_len"})


def tokenizer_fields(quantizer) -> dict[str, Any]:
    """What a tokenizer's :class:`~scalear.quant.MultiScaleQuantizer` fixes of a transformer over its tokens: the
    vocabulary, the width of a code vector and the token schedule."""
    return {"vocab_size": quantizer.vocab_size, "latent_dim": quantizer.dim, "schedule": quantizer.schedule}


def check_transformer_overrides(overrides: Mapping[str, Any] | None, what: str,
                                derived: frozenset[str] = TOKENIZER_FIELDS) -> dict[str, Any]:
    """A model's overrides of :class:`TransformerConfig` fields as a new dict, checked: a key the model derives
    itself (``derived``), an unknown key or a value of the wrong type is a
    :class:`~scalear.errors.UsageError` naming it (``what``: the model's transformer, in the message)."""
    overrides = dict(overrides or {})
    allowed = set(TransformerConfig.__dataclass_fields__) - derived
    if unknown := sorted(set(overrides) - allowed):
        raise UsageError(f"unknown {what} keys {unknown} (set by the model: {sorted(derived)}); "
                         f"allowed: {sorted(allowed)}")
    check_config(TransformerConfig, overrides, what)
    return overrides


def _var_preset(depth: int, **kw) -> TransformerConfig:
    alng = {16: 1e-3, 20: 1e-3, 24: 1e-4, 30: 1e-5}.get(depth, 1e-3)
    return TransformerConfig(depth=depth, num_classes=1000, init_adaln_gamma=alng, **kw)


#: Named presets. ``var-d*`` reproduce VAR's ImageNet 256 models (class-conditional, 1000 classes).
TRANSFORMER_PRESETS: dict[str, TransformerConfig] = {
    "var-d16": _var_preset(16),
    "var-d20": _var_preset(20),
    "var-d24": _var_preset(24),
    "var-d30": _var_preset(30),
    "small": TransformerConfig(depth=8, width=384, num_heads=6),
    "tiny": TransformerConfig(depth=4, width=128, num_heads=4),
}


def create_transformer(name: str, **overrides) -> "NextScaleTransformer":
    """Build a preset from :data:`TRANSFORMER_PRESETS` with ``overrides`` applied (timm-style)."""
    if name not in TRANSFORMER_PRESETS:
        raise KeyError(f"unknown transformer preset {name!r}; available: {sorted(TRANSFORMER_PRESETS)}")
    if "depth" in overrides:  # re-derive what the depth rule gives unless it is overridden too
        overrides = {"width": None, "num_heads": None, "drop_path_rate": None, **overrides}
    return NextScaleTransformer(replace(TRANSFORMER_PRESETS[name], **overrides))


# ------------------------------------------------------------------------------------------- fast linear
#: oneDNN's fp32 matmul (the kernel torch.compile's CPU backend calls) where this build has it; see :func:`linear`.
_ONEDNN_LINEAR = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, gelu: bool = False) -> torch.Tensor:
    """``F.linear(x, weight, bias)``, followed by tanh-GELU if ``gelu``.

    Inference in fp32 on the CPU (no autograd, no autocast) goes through oneDNN's matmul with the GELU fused into
    it (``torch.ops.mkldnn._linear_pointwise``) instead of the BLAS ``sgemm`` that ``F.linear`` calls: measured 2x
    faster on an AVX-512 AMD EPYC, where MKL's sgemm runs at half the conv kernels' rate. The results equal
    ``F.linear``'s up to float rounding. Everywhere else (CUDA, autocast, training, and inside ``torch.compile``,
    whose inductor cannot lower the oneDNN op) it is plain ``F.linear``.
    """
    if (_ONEDNN_LINEAR and x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32
            and not torch.is_grad_enabled() and not torch.is_autocast_enabled("cpu")
            and not torch.compiler.is_compiling()):
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "gelu" if gelu else "none", [], "tanh" if gelu else "")
    y = F.linear(x, weight, bias)
    return F.gelu(y, approximate="tanh") if gelu else y


# ------------------------------------------------------------------------------------------- blocks
class DropPath(nn.Module):
    """Stochastic depth per sample."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = x.new_empty(x.shape[0], *([1] * (x.ndim - 1))).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class FFN(nn.Module):
    def __init__(self, dim: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = linear(x, self.fc1.weight, self.fc1.bias, gelu=True)  # self.act (tanh GELU), fused on the CPU
        return self.drop(linear(h, self.fc2.weight, self.fc2.bias))


class SelfAttention(nn.Module):
    """VAR's attention: fused qkv without k bias, optional L2-normalised q/k with a learned per-head scale.

    With ``caching`` on, keys and values of every call are appended to a cache and attention runs over the
    whole cache with no mask: calling it scale by scale reproduces the block-causal pattern exactly. Without
    autograd the cache is static: buffers of ``cache_capacity`` positions (set by
    :meth:`NextScaleTransformer.kv_caching`; they grow if a call needs more) are allocated on the first call and
    filled in place, ``cached_k`` / ``cached_v`` being views of the filled part; with autograd (e.g. training
    through the cached path) each call concatenates instead.
    """

    def __init__(self, dim: int, num_heads: int, attn_drop: float = 0.0, proj_drop: float = 0.0, l2_norm: bool = True):
        super().__init__()
        self.num_heads, self.head_dim, self.l2_norm = num_heads, dim // num_heads, l2_norm
        self.mat_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_bias, self.v_bias = nn.Parameter(torch.zeros(dim)), nn.Parameter(torch.zeros(dim))
        self.register_buffer("zero_k_bias", torch.zeros(dim))
        if l2_norm:
            self.scale = 1.0
            self.scale_mul_1H11 = nn.Parameter(torch.full((1, num_heads, 1, 1), 4.0).log())
            self.max_scale_mul = math.log(100)
        else:
            self.scale = 0.25 / math.sqrt(self.head_dim)
        self.proj, self.proj_drop, self.attn_drop = nn.Linear(dim, dim), nn.Dropout(proj_drop), attn_drop
        self.cache_capacity = 0
        self.caching, self.cached_k, self.cached_v = False, None, None
        self._k_buf = self._v_buf = None

    def kv_caching(self, enable: bool) -> None:
        self.caching, self.cached_k, self.cached_v = enable, None, None
        self._k_buf = self._v_buf = None

    def _append_to_cache(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write this call's keys/values (B, H, L, hd) after the cached ones; returns views of all of them."""
        n0 = 0 if self.cached_k is None else self.cached_k.shape[2]
        n1 = n0 + k.shape[2]
        buf = self._k_buf
        if buf is None or buf.shape[2] < n1 or buf.shape[:2] != k.shape[:2] or buf.dtype != k.dtype:
            shape = (*k.shape[:2], max(n1, self.cache_capacity), k.shape[3])
            self._k_buf, self._v_buf = k.new_empty(shape), v.new_empty(shape)
            if n0:  # grown beyond the capacity: keep what is cached
                self._k_buf[:, :, :n0], self._v_buf[:, :, :n0] = self.cached_k, self.cached_v
        self._k_buf[:, :, n0:n1], self._v_buf[:, :, n0:n1] = k, v
        self.cached_k, self.cached_v = self._k_buf[:, :, :n1], self._v_buf[:, :, :n1]
        return self.cached_k, self.cached_v

    def forward(self, x_BLC: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        B, L, C = x_BLC.shape
        bias = torch.cat((self.q_bias, self.zero_k_bias, self.v_bias))
        qkv = linear(x_BLC, self.mat_qkv.weight, bias).view(B, L, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, L, hd)
        if self.l2_norm:
            q = F.normalize(q, dim=-1) * self.scale_mul_1H11.clamp(max=self.max_scale_mul).exp().to(q.dtype)
            k = F.normalize(k, dim=-1)
        if self.caching:
            if torch.is_grad_enabled() and (k.requires_grad or v.requires_grad):  # autograd: no in-place writes
                if self.cached_k is not None:
                    k, v = torch.cat((self.cached_k, k), dim=2), torch.cat((self.cached_v, v), dim=2)
                self.cached_k, self.cached_v = k, v
            else:
                k, v = self._append_to_cache(k, v)
            attn_mask = None  # the cache only ever holds tokens this call may see
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.attn_drop if self.training else 0.0, scale=self.scale
        )
        return self.proj_drop(linear(out.transpose(1, 2).reshape(B, L, C), self.proj.weight, self.proj.bias))


class CrossAttention(nn.Module):
    """Pre-norm cross-attention from sequence tokens to condition tokens (SAR3D-style conditioning)."""

    def __init__(self, dim: int, context_dim: int, num_heads: int, attn_drop: float = 0.0, eps: float = 1e-6):
        super().__init__()
        self.num_heads, self.head_dim, self.attn_drop = num_heads, dim // num_heads, attn_drop
        self.ln = nn.LayerNorm(dim, eps=eps)
        self.to_q, self.to_kv = nn.Linear(dim, dim), nn.Linear(context_dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x_BLC: torch.Tensor, ctx_BTD: torch.Tensor) -> torch.Tensor:
        B, L, C = x_BLC.shape
        q = self.to_q(self.ln(x_BLC)).view(B, L, self.num_heads, self.head_dim).transpose(1, 2)
        k, v = self.to_kv(ctx_BTD).view(B, -1, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj(out.transpose(1, 2).reshape(B, L, C))


class AdaLNSelfAttn(nn.Module):
    """VAR's block: AdaLN-modulated self-attention and FFN with gated residuals (+ optional cross-attention)."""

    def __init__(self, cfg: TransformerConfig, drop_path: float, shared_adaln: bool):
        super().__init__()
        C, D = cfg.width, cfg.width
        self.C = C
        self.drop_path = DropPath(drop_path)
        self.attn = SelfAttention(C, cfg.num_heads, cfg.attn_drop_rate, cfg.drop_rate, cfg.attn_l2_norm)
        self.ffn = FFN(C, round(C * cfg.mlp_ratio), cfg.drop_rate)
        self.ln_wo_grad = nn.LayerNorm(C, eps=cfg.norm_eps, elementwise_affine=False)
        self.shared_adaln = shared_adaln
        if shared_adaln:
            self.ada_gss = nn.Parameter(torch.randn(1, 1, 6, C) / C**0.5)
        else:
            self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(D, 6 * C))
        self.cross_attn = CrossAttention(C, cfg.context_dim, cfg.num_heads, cfg.attn_drop_rate, cfg.norm_eps) if cfg.context_dim else None
        self._ada_memo: tuple[torch.Tensor, tuple[torch.Tensor, ...]] | None = None

    def modulation(self, cond_BD: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """AdaLN's (gamma1, gamma2, scale1, scale2, shift1, shift2), each (B, 1, C). While the KV cache is on, the
        result for the same ``cond_BD`` tensor is kept: the condition is constant over a sampling run, and its
        ``ada_lin`` (6 C^2 weights per block) is computed once instead of once per scale."""
        memo = self._ada_memo
        if memo is not None and memo[0] is cond_BD:
            return memo[1]
        if self.shared_adaln:  # cond_BD is already the shared (B, 1, 6, C) modulation
            mods = (self.ada_gss + cond_BD).unbind(2)
        else:
            mods = self.ada_lin(cond_BD).view(-1, 1, 6, self.C).unbind(2)
        self._ada_memo = (cond_BD, mods) if self.attn.caching else None
        return mods

    def forward(self, x: torch.Tensor, cond_BD: torch.Tensor, attn_mask: torch.Tensor | None, context: torch.Tensor | None) -> torch.Tensor:
        gamma1, gamma2, scale1, scale2, shift1, shift2 = self.modulation(cond_BD)
        x = x + self.drop_path(self.attn(self.ln_wo_grad(x) * (1 + scale1) + shift1, attn_mask) * gamma1)
        if self.cross_attn is not None:
            x = x + self.drop_path(self.cross_attn(x, context))
        x = x + self.drop_path(self.ffn(self.ln_wo_grad(x) * (1 + scale2) + shift2) * gamma2)
        return x


class AdaLNBeforeHead(nn.Module):
    def __init__(self, C: int, D: int, eps: float):
        super().__init__()
        self.C = C
        self.ln_wo_grad = nn.LayerNorm(C, eps=eps, elementwise_affine=False)
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(D, 2 * C))

    def forward(self, x: torch.Tensor, cond_BD: torch.Tensor) -> torch.Tensor:
        scale, shift = self.ada_lin(cond_BD).view(-1, 1, 2, self.C).unbind(2)
        return self.ln_wo_grad(x) * (1 + scale) + shift


class SharedAdaLin(nn.Linear):
    def forward(self, cond_BD: torch.Tensor) -> torch.Tensor:
        return super().forward(cond_BD).view(-1, 1, 6, self.out_features // 6)


# ------------------------------------------------------------------------------------------- model
class NextScaleTransformer(nn.Module):
    """VAR's next-scale transformer over a :class:`~scalear.schedules.ScaleSchedule` of token maps.

    Example:
        >>> cfg = TransformerConfig(vocab_size=64, latent_dim=8, schedule=ScaleSchedule.square((1, 2, 4)),
        ...                         depth=2, width=64, num_heads=2, num_classes=10)
        >>> model = NextScaleTransformer(cfg)
        >>> x_BlC = torch.randn(3, 1 + 4 + 16 - 1, 8)  # teacher-forcing inputs of scales 1..K-1
        >>> model(x_BlC, label_B=torch.tensor([0, 1, 2])).shape
        torch.Size([3, 21, 64])
    """

    scalear_kind = "transformer"

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        C, sched = cfg.width, cfg.schedule
        self.C, self.num_scales, self.L = C, sched.num_scales, sched.total_tokens
        self.first_l = sched.tokens_per_scale[0]
        # condition -> (B, C) vector used by AdaLN and as the start token
        if cfg.num_classes:
            self.class_emb = nn.Embedding(cfg.num_classes + 1, C)
        elif cfg.cond_dim:
            self.cond_proj = nn.Linear(cfg.cond_dim, C)
            self.cond_null = nn.Parameter(torch.zeros(1, C))
        else:
            self.uncond_emb = nn.Parameter(torch.zeros(1, C))
        self.pos_start = nn.Parameter(torch.empty(1, self.first_l, C))
        self.pos_1LC = nn.Parameter(torch.empty(1, self.L, C))
        self.lvl_embed = nn.Embedding(self.num_scales, C)
        self.word_embed = nn.Linear(cfg.latent_dim, C)
        if cfg.prefix_dim:
            self.prefix_proj = nn.Linear(cfg.prefix_dim, C)
            self.prefix_pos = nn.Parameter(torch.empty(1, cfg.max_prefix_len, C))
        if cfg.context_dim:
            self.context_null = nn.Parameter(torch.zeros(1, 1, cfg.context_dim))
        self.shared_ada_lin = nn.Sequential(nn.SiLU(), SharedAdaLin(C, 6 * C)) if cfg.shared_adaln else nn.Identity()
        # drop-path rates linear in depth, as VAR; a generator: an untrusted config's depth allocates no list
        dpr = (cfg.drop_path_rate * i / max(cfg.depth - 1, 1) for i in range(cfg.depth))
        self.blocks = nn.ModuleList(AdaLNSelfAttn(cfg, p, cfg.shared_adaln) for p in dpr)
        self.head_nm = AdaLNBeforeHead(C, C, cfg.norm_eps)
        self.head = nn.Linear(C, cfg.vocab_size)
        self.register_buffer("lvl_1L", sched.level_ids().view(1, -1), persistent=False)
        self._ada_memo: tuple[torch.Tensor, torch.Tensor] | None = None
        self.init_weights()

    # ------------------------------------------------------------------ init (VAR's init_weights)
    @torch.no_grad()
    def init_weights(self) -> None:
        cfg, std = self.cfg, math.sqrt(1 / self.C / 3)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=std)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.Embedding):
                nn.init.trunc_normal_(m.weight, std=std)
            elif isinstance(m, nn.LayerNorm) and m.elementwise_affine:
                m.weight.fill_(1.0)
                m.bias.zero_()
        for p in (self.pos_start, self.pos_1LC):
            nn.init.trunc_normal_(p, std=std)
        if cfg.prefix_dim:
            nn.init.trunc_normal_(self.prefix_pos, std=std)
        self.head.weight.mul_(cfg.init_head)
        self.head.bias.zero_()
        lin = self.head_nm.ada_lin[-1]
        lin.weight.mul_(cfg.init_adaln)
        lin.bias.zero_()
        for block in self.blocks:
            block.attn.proj.weight.div_(math.sqrt(2 * cfg.depth))
            block.ffn.fc2.weight.div_(math.sqrt(2 * cfg.depth))
            if not block.shared_adaln:
                w = block.ada_lin[-1].weight
                w[2 * self.C :].mul_(cfg.init_adaln)
                w[: 2 * self.C].mul_(cfg.init_adaln_gamma)
                block.ada_lin[-1].bias.zero_()
            else:  # VAR scales the per-block offsets the same way: gammas by init_adaln_gamma, the rest by init_adaln
                block.ada_gss[:, :, 2:].mul_(cfg.init_adaln)
                block.ada_gss[:, :, :2].mul_(cfg.init_adaln_gamma)

    # ------------------------------------------------------------------ conditioning
    def condition(
        self,
        batch_size: int,
        label_B: torch.Tensor | None = None,
        cond_BD: torch.Tensor | None = None,
        drop_B: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The (B, C) condition vector; ``drop_B`` (bool) replaces it with the null condition (CFG)."""
        cfg = self.cfg
        if cfg.num_classes:
            if label_B is None:
                raise ValueError("this model is class-conditional: pass label_B")
            if drop_B is not None:
                label_B = torch.where(drop_B, torch.full_like(label_B, cfg.num_classes), label_B)
            return self.class_emb(label_B)
        if cfg.cond_dim:
            if cond_BD is None:
                raise ValueError(f"this model is conditioned on vectors of size {cfg.cond_dim}: pass cond_BD")
            c = self.cond_proj(cond_BD)
            return c if drop_B is None else torch.where(drop_B[:, None], self.cond_null.to(c.dtype), c)
        return self.uncond_emb.expand(batch_size, -1)

    def has_guidance(self) -> bool:
        """Whether the model has a null condition, i.e. supports classifier-free guidance."""
        return bool(self.cfg.num_classes or self.cfg.cond_dim or self.cfg.context_dim)

    def _null_context(self, context: torch.Tensor | None, drop_B: torch.Tensor | None) -> torch.Tensor | None:
        if context is None or drop_B is None:
            return context
        return torch.where(drop_B[:, None, None], self.context_null.to(context.dtype), context)

    def _ada(self, cond_BC: torch.Tensor) -> torch.Tensor:
        """The blocks' AdaLN input; kept for the same ``cond_BC`` while the KV cache is on (see
        :meth:`AdaLNSelfAttn.modulation`)."""
        memo = self._ada_memo
        if memo is not None and memo[0] is cond_BC:
            return memo[1]
        ada = self.shared_ada_lin(cond_BC)
        self._ada_memo = (cond_BC, ada) if len(self.blocks) and self.blocks[0].attn.caching else None
        return ada

    def _logits(self, x_BlC: torch.Tensor, cond_BC: torch.Tensor) -> torch.Tensor:
        return linear(self.head_nm(x_BlC, cond_BC), self.head.weight, self.head.bias).float()

    def _check_context(self, context: torch.Tensor | None, prefix: torch.Tensor | None) -> None:
        if self.cfg.context_dim and (context is None or context.shape[-1] != self.cfg.context_dim):
            got = None if context is None else tuple(context.shape)
            raise ValueError(f"this model cross-attends to context tokens (B, T, {self.cfg.context_dim}); got {got}")
        if self.cfg.prefix_dim:
            if prefix is None or prefix.shape[-1] != self.cfg.prefix_dim:
                got = None if prefix is None else tuple(prefix.shape)
                raise ValueError(f"this model needs prefix tokens (B, P, {self.cfg.prefix_dim}); got {got}")
            if prefix.shape[1] > self.cfg.max_prefix_len:
                raise ValueError(f"prefix has {prefix.shape[1]} tokens; the model has {self.cfg.max_prefix_len} positions")

    # ------------------------------------------------------------------ embeddings
    def embed_prefix(self, prefix_BPD: torch.Tensor) -> torch.Tensor:
        return self.prefix_proj(prefix_BPD) + self.prefix_pos[:, : prefix_BPD.shape[1]]

    def embed_scale(self, k: int, cond_BC: torch.Tensor, x_BnCvae: torch.Tensor | None = None) -> torch.Tensor:
        """Input embedding of scale ``k``: the start tokens for ``k = 0``, else ``word_embed`` of the running
        reconstruction's tokens, plus level and positional embeddings."""
        sl = self.cfg.schedule.scale_slice(k)
        if k == 0:
            x = cond_BC.unsqueeze(1).expand(-1, self.first_l, -1) + self.pos_start
        else:
            x = self.word_embed(x_BnCvae.float())
        return x + self.lvl_embed.weight[k] + self.pos_1LC[:, sl]

    def attn_mask(self, prefix_len: int, device: torch.device) -> torch.Tensor:
        """Boolean (P+L, P+L) mask, True = may attend: block-causal over scales; prefix tokens (level -1)
        see only the prefix (and the first scale with ``prefix_sees_start``); scale tokens see the whole prefix
        and every token of their own and coarser scales."""
        lvl = torch.cat((torch.full((prefix_len,), -1, device=device), self.lvl_1L[0].to(device)))
        mask = lvl[None, :] <= lvl[:, None]
        if self.cfg.prefix_sees_start:
            mask[:prefix_len] |= lvl[None, :] == 0
        return mask

    # ------------------------------------------------------------------ training forward
    def forward(
        self,
        x_BlCvae: torch.Tensor,
        label_B: torch.Tensor | None = None,
        cond_BD: torch.Tensor | None = None,
        context_BTD: torch.Tensor | None = None,
        prefix_BPD: torch.Tensor | None = None,
        drop_B: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Teacher-forced forward over all scales.

        Args:
            x_BlCvae: inputs of scales 1..K-1, (B, L - n_0, Cvae) (:meth:`MultiScaleVQ.teacher_forcing_input`).
            label_B / cond_BD: the AdaLN condition (class labels, or condition vectors).
            context_BTD: condition tokens for cross-attention.
            prefix_BPD: prefix condition tokens.
            drop_B: bool mask of samples whose condition is replaced by the null condition. ``None`` in
                training draws it with probability ``cond_drop_rate``.

        Returns:
            logits (B, L, V) for every token of every scale.
        """
        B = x_BlCvae.shape[0]
        if x_BlCvae.shape[1] != self.L - self.first_l:
            raise ValueError(f"expected {self.L - self.first_l} input tokens (scales 1..K-1), got {x_BlCvae.shape[1]}")
        self._check_context(context_BTD, prefix_BPD)
        if drop_B is None and self.training and self.cfg.cond_drop_rate > 0 and self.has_guidance():
            drop_B = torch.rand(B, device=x_BlCvae.device) < self.cfg.cond_drop_rate
        cond = self.condition(B, label_B, cond_BD, drop_B)
        context = self._null_context(context_BTD, drop_B)
        sos = cond.unsqueeze(1).expand(-1, self.first_l, -1) + self.pos_start
        x = torch.cat((sos, self.word_embed(x_BlCvae.float())), dim=1)
        x = x + self.lvl_embed(self.lvl_1L) + self.pos_1LC
        P = 0
        if prefix_BPD is not None:
            P = prefix_BPD.shape[1]
            x = torch.cat((self.embed_prefix(prefix_BPD), x), dim=1)
        mask = self.attn_mask(P, x.device)
        ada = self._ada(cond)
        for block in self.blocks:
            x = block(x, ada, mask, context)
        return self._logits(x[:, P:], cond)

    # ------------------------------------------------------------------ cached inference
    def kv_caching(self, enable: bool) -> None:
        """Turn the KV cache of every block on (emptied, room for the longest prefix and all scales) or off."""
        for block in self.blocks:
            block.attn.kv_caching(enable)
            block.attn.cache_capacity = self.cfg.max_prefix_len + self.L if enable else 0
            block._ada_memo = None
        self._ada_memo = None

    def prefill_prefix(self, prefix_BPD: torch.Tensor, cond_BC: torch.Tensor, context: torch.Tensor | None) -> None:
        """Run the prefix through the blocks to fill the KV cache (prefix tokens see only each other)."""
        if self.cfg.prefix_sees_start:
            raise ValueError("with prefix_sees_start the prefix goes through with the first scale: use forward_first_scale")
        x, ada = self.embed_prefix(prefix_BPD), self._ada(cond_BC)
        for block in self.blocks:
            x = block(x, ada, None, context)

    def forward_scale(self, x_BnC: torch.Tensor, cond_BC: torch.Tensor, context: torch.Tensor | None,
                      last: int | None = None) -> torch.Tensor:
        """One cached step: embedded tokens of the next scale -> their logits (B, n, V), or those of the ``last``
        tokens only. Needs ``kv_caching(True)``."""
        ada = self._ada(cond_BC)
        for block in self.blocks:
            x_BnC = block(x_BnC, ada, None, context)
        if last is not None:
            x_BnC = x_BnC[:, -last:]
        return self._logits(x_BnC, cond_BC)

    def forward_first_scale(self, x_BnC: torch.Tensor, cond_BC: torch.Tensor, context: torch.Tensor | None,
                            prefix_BPD: torch.Tensor | None = None) -> torch.Tensor:
        """The first cached step: fills the KV cache with the prefix (if any) and returns the logits of scale 0.

        The prefix goes through first, seeing only itself (:meth:`prefill_prefix`), or with ``prefix_sees_start``
        together with the start tokens, all of them seeing each other (DepthART's released inference)."""
        if prefix_BPD is None:
            return self.forward_scale(x_BnC, cond_BC, context)
        if not self.cfg.prefix_sees_start:
            self.prefill_prefix(prefix_BPD, cond_BC, context)
            return self.forward_scale(x_BnC, cond_BC, context)
        both = torch.cat((self.embed_prefix(prefix_BPD), x_BnC), dim=1)
        return self.forward_scale(both, cond_BC, context, last=x_BnC.shape[1])

    def forward_upto(
        self, x_BlC: torch.Tensor, cond_BC: torch.Tensor, context: torch.Tensor | None, prefix_BPD: torch.Tensor | None = None
    ) -> torch.Tensor:
        """One uncached step: embedded tokens of scales 0..k (B, l, C) -> logits of scale k (B, n_k, V).

        Recomputes the whole prefix (and the prefix condition tokens) under the block-causal mask; the baseline
        that :meth:`forward_scale` with the KV cache is measured against. Needs ``kv_caching(False)``.
        """
        l, offsets = x_BlC.shape[1], (*self.cfg.schedule.offsets, self.L)
        if l not in offsets[1:]:
            raise ValueError(f"expected the tokens of the first scales, i.e. a length in {offsets[1:]}; got {l}")
        n_k = l - offsets[offsets.index(l) - 1]
        P = 0 if prefix_BPD is None else prefix_BPD.shape[1]
        if prefix_BPD is not None:
            x_BlC = torch.cat((self.embed_prefix(prefix_BPD), x_BlC), dim=1)
        mask, ada = self.attn_mask(P, x_BlC.device)[: P + l, : P + l], self._ada(cond_BC)
        for block in self.blocks:
            x_BlC = block(x_BlC, ada, mask, context)
        return self._logits(x_BlC[:, -n_k:], cond_BC)

    # ------------------------------------------------------------------ misc
    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def no_weight_decay_names(self) -> set[str]:
        """Parameters VAR trains without weight decay: biases, norms, embeddings and modulation tokens."""
        skip = ("pos_start", "pos_1LC", "prefix_pos", "cond_null", "uncond_emb", "context_null", "scale_mul", "ada_gss")
        return {n for n, p in self.named_parameters() if p.ndim <= 1 or any(s in n for s in skip) or "emb" in n}
