"""G3PT's Cross-scale Vector Quantization tokenizer ("CVQ"; Zhang, Xiong, Xu, arXiv 2409.06322, Sec. 3).

G3PT maps an *unordered* point cloud to discrete tokens at several levels of detail (LoD) and decodes occupancy.
Its code is not public; what the paper describes (a point cloud cross-attended into learnable latent queries,
learnable down- and up-sampling queries between levels because unordered sets cannot be interpolated,
lookup-free quantization) is filled in here as follows.

**Encoder** (Perceiver / 3DShape2VecSet-style). Points ``(B, N, 3)`` in ``[-0.5, 0.5]^3`` -> Fourier features
(``num_freqs`` octaves of sin/cos plus the coordinates) -> Linear -> one cross-attention block from ``M_K``
learnable latent queries to the points -> ``enc_blocks`` self-attention blocks -> finest latent tokens
``z (B, M_K, C)``. Points carry no positional index anywhere, so the tokens are invariant to the order of the
points by construction (up to float summation order).

**Cross-scale residual quantization** (:class:`CrossScaleQuantizer`): VAR's Algorithm 1 with *learned* resizing.
Levels ``patch_nums = (M_1, ..., M_K)`` tokens, a 1-D :meth:`ScaleSchedule.seq_1d` schedule. With ``r = z`` and
``f_hat = 0``, for ``k = 1..K``:

* ``down_k(r)``: cross-attention from ``M_k`` learnable down-sampling queries (+ a level embedding) to the
  residual tokens ``r (B, M_K, C)`` -> ``(B, M_k, C)``;
* ``Linear(C -> d)`` and LFQ (:class:`scalear.domains.g3pt.lfq.LookupFreeQuantizer`, ``2^d`` codes) -> codes ``q_k``;
* ``up_k(q_k)``: the codes -> ``Linear(d -> C)`` + a learned slot embedding per code position of level ``k``
  (the slot identity; there is no order among slots), then cross-attention from ``M_K`` learnable up-sampling
  queries -> ``(B, M_K, C)``;
* ``r <- r - up_k(q_k)``, ``f_hat <- f_hat + up_k(q_k)``.

Unlike VAR, whose resizing has no parameters, ``down``/``up`` are learned, so the residual chain is kept
differentiable (straight-through through every LFQ) instead of VAR's detached residual.

The next-scale transformer's input for level ``k+1`` is ``down_{k+1}(f_hat_k)``, the cross-scale query of the
running reconstruction (VAR: ``f_hat`` area-downsampled), width ``C``; :meth:`CrossScaleQuantizer.next_input`
and :meth:`~CrossScaleQuantizer.teacher_forcing_input` give it, so the core :func:`scalear.sampling.sample` and
:class:`~scalear.transformer.NextScaleTransformer` run unchanged on this quantizer.

**Decoder.** ``dec_blocks`` self-attention blocks over ``f_hat`` tokens; query points (Fourier features ->
Linear) cross-attend to them -> MLP -> occupancy logit ``(B, Q)``.

**Loss** (:meth:`G3PTTokenizer.loss`): BCE of the occupancy from the full ``f_hat`` + ``prefix_weight`` x BCE
from partial reconstructions + ``entropy_weight`` x LFQ entropy loss + ``commit_weight`` x commitment loss
(MAGVIT-v2: 0.25) + ``latent_weight`` x VAR's residual-quantization loss, the mean over levels of
``|f_hat_k - sg(z)|^2 + beta |sg(f_hat_k) - z|^2`` (``beta`` = :data:`LATENT_BETA` = 0.25, VAR's ``vq_loss``;
``f_hat_k`` after levels ``1..k``). Supervising the partial reconstructions is a deviation (the paper does not say
how its levels are trained): it keeps coarse prefixes decodable, so that reconstruction improves level by level.
With ``prefix_mode="random"`` (the default; nested dropout, Rippel et al. 2014) every sample decodes ONE prefix
``f_hat_k``, ``k`` uniform in ``1..K-1``, so a step costs two decoder passes instead of ``K``; ``"mean"`` decodes
all ``K-1`` prefixes and averages their BCE (same expectation, ``K/2`` times the decoder cost). The latent term is
what makes the chain residual: without it nothing ties ``f_hat`` to ``z``, and ``r = z - f_hat_k``, what level
``k+1`` quantizes, is dominated by ``f_hat_k`` (known from the coarser codes) instead of what they missed;
measured on the procedural objects after 1500 steps, ``|z - f_hat_k|`` grew from 3.8 ``|z|`` at level 1 to 8.5
``|z|`` at level 4 and the levels beyond the second added almost nothing.

**Training recipe** (deviations from the paper and from MAGVIT-v2, chosen by measurement on the ``tiny`` preset,
procedural chairs/lamps/mugs/tables, 16 held-out objects, one CPU thread; figures in
``configs/g3pt/tokenizer_tiny.yaml``):

* learnable queries (latents, down-/up-sampling queries, slot embeddings) initialised ``N(0, query_init^2)``
  with ``query_init = 0.2``, not the usual 0.02. The queries enter the residual stream of their cross-attention
  block, whose attention is nearly uniform at initialisation; with 0.02 the block's output is the context's
  average for every query, so the 64 latent tokens are nearly identical (their variance across tokens 0.014 vs
  0.18 across shapes) and every slot of a finer level sees the same average and gets the same code (6-10 distinct
  codes among the 1024 level-4 tokens of 16 shapes, at initialisation and still after 300 steps): the finer
  levels carried nothing and the reconstruction was flat across levels. 0.2 keeps the slots apart (54 distinct
  level-4 codes at initialisation, ~400-500 after training) while shape still dominates the tokens' variance;
* ``entropy_weight = 0.5`` (MAGVIT-v2: 0.1): with 0.1 the finer levels' codes stay collapsed;
* ``num_freqs = 4`` Fourier octaves (highest frequency ``8 pi``) instead of 6: the smoother encoding of points
  and queries generalises better to held-out shapes in a short run (held-out BCE 0.366 vs 0.389 after 450 steps);
* ``latent_weight = 0.1``: 900 steps, 600 objects, held-out BCE from levels 1 / 1-2 / 1-3 / all 0.326 / 0.320 /
  0.316 / 0.316 and IoU 0.482 / 0.497 / 0.516 / 0.516, against 0.340 / 0.338 / 0.334 / 0.333 and 0.469 / 0.483 /
  0.489 / 0.489 without the term (better at every level, and more gained from the levels: IoU +0.034 vs +0.020);
  1.0 fits ``z`` closer (relative error 0.12 after all levels vs 0.29 at 0.1) but the coarse level then carries
  nearly everything (450 steps: BCE 0.361 / 0.357 / 0.355 / 0.356);
* peak learning rate 5e-3 (20 warm-up steps, cosine decay; 1e-3 and 3e-3 learn visibly slower in the same
  budget), 256 input points (a third cheaper per step than 512), 900 steps of 16 objects, 150 procedural objects
  per class: these live in the training configuration (``configs/g3pt/tokenizer_tiny.yaml``;
  :data:`G3PT_TOKENIZER_TRAINING` for plain loops). Steps matter most (600 objects, held-out BCE from all levels:
  450 steps 0.364, 900 steps 0.333, 1500 steps 0.305, without the latent term); more objects keep the first level
  from indexing the training set (96 objects: training-set BCE 0.342 from level 1, 0.337 from all four) and cost
  little (600 objects are cached in 20 s).

Tried and not kept: training with a continuous bottleneck first (no faster), random anisotropic scaling of points
and queries (levels differ more, absolute quality lower in the budget), lr 1e-2 (worse), entropy weight 1.0
(similar), 4 code bits instead of 10 (worse at every level, flat across levels), width 128 at the same steps (no
better at 450 steps), a locality bias tying each latent slot to a learned anchor in the cube (a Gaussian
attention bias in the encoder's and the decoder's cross-attention: the latent tokens differ more, but held-out
BCE 0.339 vs 0.316 after 900 steps). Scope: the procedural shapes have few degrees of freedom, so the first three
levels (21 tokens, 210 bits) already describe most of a shape and the last level adds little in CPU budgets; the
level-4 codes of a slot take 8-15 distinct values across 64 shapes (level 1: ~40), and the tiny decoder is what
limits the reconstruction (training-set BCE is within 0.02 of held-out).

Other choices not given by the paper: pre-norm attention blocks with ``heads`` heads and a 4x GELU MLP; level
embeddings initialised ``N(0, 0.02)``; codes ``±1`` (MAGVIT-v2), or ``±1/sqrt(d)`` with ``normalize_codes``.

Example:
    >>> tok = create_tokenizer("tiny").eval()
    >>> pts = torch.rand(2, 256, 3) - 0.5
    >>> idx = tok.points_to_indices(pts)
    >>> [tuple(i.shape) for i in idx], tok.quantize.vocab_size
    ([(2, 1), (2, 4), (2, 16), (2, 64)], 1024)
    >>> tok.occupancy_logits(tok.indices_to_fhat(idx), torch.rand(2, 100, 3) - 0.5).shape
    torch.Size([2, 100])
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from scalear.config_check import JSONConfig, with_overrides
from scalear.domains.g3pt.lfq import LookupFreeQuantizer
from scalear.io import register_model_kind
from scalear.registry import register_presets
from scalear.schedules import ScaleSchedule


# ------------------------------------------------------------------------------------------- config
@dataclass
class G3PTTokenizerConfig(JSONConfig):
    """Hyper-parameters of :class:`G3PTTokenizer`.

    Args:
        patch_nums: tokens per level of detail, coarse to fine (``M_1..M_K``); the last is the latent set size.
        width: token channels C.
        heads: attention heads (``width`` divisible by it).
        code_bits: LFQ bits d per token (vocabulary ``2^d``).
        num_freqs: Fourier octaves of the point encoding (frequencies ``2^j * pi``, ``j < num_freqs``).
        enc_blocks: self-attention blocks after the point cross-attention.
        dec_blocks: self-attention blocks over ``f_hat`` before the occupancy queries.
        mlp_ratio: hidden width of the blocks' MLPs relative to ``width``.
        normalize_codes: BSQ-style ``±1/sqrt(d)`` codes instead of ``±1``.
        lfq_tau: temperature of LFQ's soft assignment (entropy loss).
        entropy_weight, commit_weight: loss weights (MAGVIT-v2: 0.1, 0.25; here 0.5, 0.25, module docstring).
        prefix_weight: weight of the occupancy BCE of the partial reconstructions (0 disables).
        prefix_mode: ``"random"`` (one random prefix per sample, nested dropout) or ``"mean"`` (all prefixes).
        query_init: standard deviation of the learnable queries' initialisation (module docstring).
    """

    patch_nums: tuple[int, ...] = (1, 4, 16, 64)
    width: int = 64
    heads: int = 4
    code_bits: int = 10
    num_freqs: int = 4
    enc_blocks: int = 1
    dec_blocks: int = 1
    mlp_ratio: float = 2.0
    normalize_codes: bool = False
    lfq_tau: float = 1.0
    entropy_weight: float = 0.5
    commit_weight: float = 0.25
    latent_weight: float = 0.1
    prefix_weight: float = 1.0
    prefix_mode: str = "random"
    query_init: float = 0.2

    def __post_init__(self) -> None:
        self.patch_nums = tuple(int(s) for s in self.patch_nums)
        ScaleSchedule.seq_1d(self.patch_nums)  # validates growth
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}")
        if not 1 <= self.code_bits <= 30:
            raise ValueError(f"code_bits must be in 1..30, got {self.code_bits}")
        if self.prefix_mode not in ("mean", "random"):
            raise ValueError(f"prefix_mode must be 'mean' or 'random', got {self.prefix_mode!r}")

    @property
    def schedule(self) -> ScaleSchedule:
        return ScaleSchedule.seq_1d(self.patch_nums)

    renamed = {"sizes": "patch_nums"}  # the name in files written before the rename

    label = "G3PT tokenizer"


#: ``tiny`` trains on a CPU in minutes; ``small`` a GPU-sized model; ``paper`` a guess at G3PT's scale (the paper
#: gives no token counts or widths; 2^16 codes is a common LFQ vocabulary). All share the loss weights and query
#: initialisation chosen on ``tiny`` (module docstring); they are untested at the larger sizes.
G3PT_TOKENIZER_PRESETS: dict[str, G3PTTokenizerConfig] = {
    "tiny": G3PTTokenizerConfig(),
    "small": G3PTTokenizerConfig(patch_nums=(1, 4, 16, 64, 256), width=256, heads=8, code_bits=12, num_freqs=8,
                                 enc_blocks=4, dec_blocks=4, mlp_ratio=4.0),
    "paper": G3PTTokenizerConfig(patch_nums=(1, 4, 16, 64, 256, 1024), width=768, heads=12, code_bits=16, num_freqs=8,
                                 enc_blocks=8, dec_blocks=16, mlp_ratio=4.0),
}


#: Optimisation recipe per preset, for the Lightning config and plain training loops alike: AdamW (``betas``,
#: ``weight_decay``), peak ``lr`` with ``warmup_steps`` linear warm-up then cosine decay to ``min_lr_ratio`` x ``lr``
#: at ``steps`` (:func:`scalear.training.base.cosine_with_warmup`), gradient-norm clipping ``grad_clip``, batches
#: of ``batch_size`` objects with ``n_points`` input points and ``n_query`` occupancy queries. ``tiny``: about
#: 5.4 min on one CPU thread (figures in ``configs/g3pt/tokenizer_tiny.yaml``).
G3PT_TOKENIZER_TRAINING: dict[str, dict[str, Any]] = {
    "tiny": dict(lr=5e-3, warmup_steps=20, min_lr_ratio=0.0, betas=(0.9, 0.95), weight_decay=0.0, grad_clip=2.0,
                 steps=900, batch_size=16, n_points=256, n_query=512),
}


def tokenizer_config(name: str, **overrides: Any) -> G3PTTokenizerConfig:
    if name not in G3PT_TOKENIZER_PRESETS:
        raise KeyError(f"unknown G3PT tokenizer preset {name!r}; available: {sorted(G3PT_TOKENIZER_PRESETS)}")
    return G3PTTokenizerConfig.from_dict({**copy.deepcopy(G3PT_TOKENIZER_PRESETS[name]).to_dict(), **overrides})


def create_tokenizer(name: str = "tiny", **overrides: Any) -> "G3PTTokenizer":
    """Build a preset of :data:`G3PT_TOKENIZER_PRESETS` with ``overrides`` applied."""
    return G3PTTokenizer(tokenizer_config(name, **overrides))


# ------------------------------------------------------------------------------------------- blocks
def fourier_features(x_BN3: torch.Tensor, num_freqs: int) -> torch.Tensor:
    """``[x, sin(2^j pi x), cos(2^j pi x)]_j`` -> (B, N, 3 + 6 num_freqs)."""
    freqs = (2.0 ** torch.arange(num_freqs, device=x_BN3.device, dtype=x_BN3.dtype)) * math.pi
    xf = (x_BN3.unsqueeze(-1) * freqs).flatten(-2)  # (B, N, 3F)
    return torch.cat((x_BN3, xf.sin(), xf.cos()), dim=-1)


class MLP(nn.Sequential):
    def __init__(self, dim: int, ratio: float):
        super().__init__(nn.Linear(dim, round(dim * ratio)), nn.GELU(), nn.Linear(round(dim * ratio), dim))


class Attention(nn.Module):
    """Multi-head attention from ``x`` (B, L, C) to ``ctx`` (B, T, C) (self-attention when ``ctx is x``)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.to_q, self.to_kv, self.proj = nn.Linear(dim, dim), nn.Linear(dim, 2 * dim), nn.Linear(dim, dim)

    def forward(self, x_BLC: torch.Tensor, ctx_BTC: torch.Tensor) -> torch.Tensor:
        B, L, C = x_BLC.shape
        h = self.heads
        q = self.to_q(x_BLC).view(B, L, h, C // h).transpose(1, 2)
        k, v = self.to_kv(ctx_BTC).view(B, -1, 2, h, C // h).permute(2, 0, 3, 1, 4).unbind(0)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, L, C))


class CrossBlock(nn.Module):
    """Pre-norm cross-attention ``x + attn(LN x, LN ctx)`` then ``+ MLP(LN x)``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.ln_q, self.ln_kv, self.ln_mlp = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn, self.mlp = Attention(dim, heads), MLP(dim, mlp_ratio)

    def forward(self, x_BLC: torch.Tensor, ctx_BTC: torch.Tensor) -> torch.Tensor:
        x = x_BLC + self.attn(self.ln_q(x_BLC), self.ln_kv(ctx_BTC))
        return x + self.mlp(self.ln_mlp(x))


class SelfBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.ln, self.ln_mlp = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn, self.mlp = Attention(dim, heads), MLP(dim, mlp_ratio)

    def forward(self, x_BLC: torch.Tensor) -> torch.Tensor:
        h = self.ln(x_BLC)
        x = x_BLC + self.attn(h, h)
        return x + self.mlp(self.ln_mlp(x))


def _queries(n: int, dim: int, std: float) -> nn.Parameter:
    return nn.Parameter(torch.randn(1, n, dim) * std)


# ------------------------------------------------------------------------------------------- quantizer
#: VAR's commitment factor of the residual-quantization loss (``beta`` of ``||sg(f_hat) - z||^2``)
LATENT_BETA = 0.25


@dataclass
class CrossScaleOutput:
    f_hat: torch.Tensor  #: (B, M_K, C) full reconstruction (straight-through through every level)
    fhats: list[torch.Tensor]  #: per level k, the partial reconstruction after levels 1..k, (B, M_K, C)
    indices: list[torch.Tensor]  #: per level, (B, M_k) token indices
    commit_loss: torch.Tensor  #: LFQ commitment loss, averaged over levels
    latent_loss: torch.Tensor  #: VAR's residual-quantization loss of every partial ``f_hat`` against ``z``, averaged
    entropy_loss: torch.Tensor  #: LFQ entropy loss, averaged over levels
    usage: list[float]  #: per level, % of the level's tokens' distinct codes over min(tokens, 2^d)


class CrossScaleQuantizer(nn.Module):
    """Residual multi-level LFQ over an unordered token set with learned down-/up-sampling queries.

    Exposes the interface :func:`scalear.sampling.sample` and next-scale training use on
    :class:`~scalear.quant.MultiScaleVQ`: ``schedule``, ``vocab_size``, ``dim`` (= C, the width of the
    transformer's input tokens), ``embedding(idx)`` (LFQ codes), ``empty_fhat``, ``next_input``,
    ``teacher_forcing_input``, ``encode``, ``decode``. ``f_hat`` here is a token set ``(B, M_K, C)``.
    """

    def __init__(self, patch_nums: tuple[int, ...], width: int, heads: int, code_bits: int, mlp_ratio: float = 2.0,
                 normalize_codes: bool = False, lfq_tau: float = 1.0, query_init: float = 0.2):
        super().__init__()
        self.schedule = ScaleSchedule.seq_1d(patch_nums)
        self.patch_nums, self.dim, self.code_bits = tuple(patch_nums), width, code_bits
        K, MK = len(patch_nums), patch_nums[-1]
        self.lfq = LookupFreeQuantizer(code_bits, normalize=normalize_codes, tau=lfq_tau)
        self.vocab_size = self.lfq.vocab_size
        self.level_embed = nn.Parameter(torch.randn(K, width) * 0.02)
        self.down_queries = nn.ParameterList(_queries(m, width, query_init) for m in patch_nums)
        self.down = nn.ModuleList(CrossBlock(width, heads, mlp_ratio) for _ in patch_nums)
        self.pre_quant = nn.Linear(width, code_bits)
        self.post_quant = nn.Linear(code_bits, width)
        self.slot_embed = nn.ParameterList(_queries(m, width, query_init) for m in patch_nums)
        self.up_queries = nn.ParameterList(_queries(MK, width, query_init) for _ in patch_nums)
        self.up = nn.ModuleList(CrossBlock(width, heads, mlp_ratio) for _ in patch_nums)
        self.up_out = nn.ModuleList(nn.Linear(width, width) for _ in patch_nums)  # residual-stream -> contribution

    @property
    def num_levels(self) -> int:
        return len(self.patch_nums)

    def embedding(self, idx: torch.Tensor) -> torch.Tensor:
        """LFQ code vectors (..., d) of indices (...)."""
        return self.lfq.indices_to_codes(idx)

    def empty_fhat(self, batch: int, device=None, dtype=None) -> torch.Tensor:
        dtype = dtype or self.level_embed.dtype
        return torch.zeros(batch, self.patch_nums[-1], self.dim, device=device, dtype=dtype)

    # ------------------------------------------------------------------ learned resizing
    def down_tokens(self, k: int, x_BMC: torch.Tensor) -> torch.Tensor:
        """``down_k``: M_k learnable queries (+ level embedding) cross-attend the finest tokens -> (B, M_k, C)."""
        q = (self.down_queries[k] + self.level_embed[k]).expand(x_BMC.shape[0], -1, -1)
        return self.down[k](q, x_BMC)

    def up_codes(self, k: int, codes_Bmd: torch.Tensor) -> torch.Tensor:
        """``up_k``: level k's codes (B, M_k, d) -> contribution to ``f_hat`` (B, M_K, C)."""
        ctx = self.post_quant(codes_Bmd.to(self.post_quant.weight.dtype)) + self.slot_embed[k]
        q = (self.up_queries[k] + self.level_embed[k]).expand(codes_Bmd.shape[0], -1, -1)
        return self.up_out[k](self.up[k](q, ctx))

    def _check(self, z: torch.Tensor) -> None:
        if z.ndim != 3 or tuple(z.shape[1:]) != (self.patch_nums[-1], self.dim):
            raise ValueError(f"latent tokens have shape {tuple(z.shape)}; expected (B, {self.patch_nums[-1]}, {self.dim})")

    # ------------------------------------------------------------------ training forward
    def forward(self, z_BMC: torch.Tensor) -> CrossScaleOutput:
        """Quantize ``z`` level by level (differentiable, straight-through LFQ)."""
        self._check(z_BMC)
        r, f_hat = z_BMC, torch.zeros_like(z_BMC)
        fhats, indices, commit, entropy, latent, usage = [], [], 0.0, 0.0, 0.0, []
        z_sg = z_BMC.detach()
        for k, m in enumerate(self.patch_nums):
            out = self.lfq(self.pre_quant(self.down_tokens(k, r)))
            h = self.up_codes(k, out.codes)
            r, f_hat = r - h, f_hat + h
            latent = latent + F.mse_loss(f_hat, z_sg) + LATENT_BETA * F.mse_loss(z_BMC, f_hat.detach())
            fhats.append(f_hat)
            indices.append(out.indices)
            commit, entropy = commit + out.commit_loss, entropy + out.entropy_loss
            usage.append(100.0 * out.indices.unique().numel() / min(out.indices.numel(), self.vocab_size))
        K = self.num_levels
        return CrossScaleOutput(f_hat=f_hat, fhats=fhats, indices=indices, commit_loss=commit / K,
                                latent_loss=latent / K, entropy_loss=entropy / K, usage=usage)

    # ------------------------------------------------------------------ inference API
    @torch.no_grad()
    def encode(self, z_BMC: torch.Tensor) -> list[torch.Tensor]:
        """Finest latent tokens -> per-level indices ``[(B, M_k)]``."""
        self._check(z_BMC)
        r = z_BMC
        indices = []
        for k in range(self.num_levels):
            idx = self.lfq.codes_to_indices(self.pre_quant(self.down_tokens(k, r)))
            r = r - self.up_codes(k, self.embedding(idx))
            indices.append(idx)
        return indices

    @torch.no_grad()
    def decode(self, indices: list[torch.Tensor], upto: int | None = None) -> torch.Tensor:
        """Per-level indices -> ``f_hat`` (B, M_K, C), summing the first ``upto`` levels (all by default)."""
        if len(indices) > self.num_levels:
            raise ValueError(f"got {len(indices)} levels of indices; the schedule has {self.num_levels}")
        f_hat = self.empty_fhat(indices[0].shape[0], indices[0].device)
        for k, idx in enumerate(indices[:upto]):
            if tuple(idx.shape[1:]) != (self.patch_nums[k],):
                raise ValueError(f"level {k} indices have shape {tuple(idx.shape)}; expected (B, {self.patch_nums[k]})")
            f_hat = f_hat + self.up_codes(k, self.embedding(idx))
        return f_hat

    @torch.no_grad()
    def teacher_forcing_input(self, indices: list[torch.Tensor]) -> torch.Tensor:
        """Transformer inputs of levels 2..K from ground-truth indices: ``cat_k down_{k+1}(f_hat_k)``, (B, L - M_1, C)."""
        f_hat = self.empty_fhat(indices[0].shape[0], indices[0].device)
        out = []
        for k in range(self.num_levels - 1):
            f_hat = f_hat + self.up_codes(k, self.embedding(indices[k]))
            out.append(self.down_tokens(k + 1, f_hat))
        if not out:
            return f_hat.new_zeros(f_hat.shape[0], 0, self.dim)
        return torch.cat(out, dim=1)

    def next_input(self, k: int, f_hat: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One sampling step: add level ``k``'s codes ``h`` ((B, d, M_k) as the sampler's token map, or (B, M_k, d))
        to ``f_hat`` and return ``(f_hat, down_{k+1}(f_hat))``; the second is None after the last level."""
        if h.ndim == 3 and h.shape[1] == self.code_bits and h.shape[2] == self.patch_nums[k]:
            h = h.transpose(1, 2)
        f_hat = f_hat + self.up_codes(k, h)
        if k == self.num_levels - 1:
            return f_hat, None
        return f_hat, self.down_tokens(k + 1, f_hat)


# ------------------------------------------------------------------------------------------- model
#: weights written before the quantizer attribute took the core's name (``quantize``, as in every tokenizer)
RENAMED_WEIGHTS = {"quantizer.": "quantize."}


def _rename_old_quantizer_keys(state_dict: dict, prefix: str, *args: Any) -> None:
    """Lightning checkpoints of older runs (resuming): :data:`RENAMED_WEIGHTS` read under their new names."""
    for old, new in RENAMED_WEIGHTS.items():
        for key in [k for k in state_dict if k.startswith(prefix + old)]:
            state_dict[prefix + new + key[len(prefix + old):]] = state_dict.pop(key)


class G3PTTokenizer(nn.Module):
    """Point cloud -> multi-level LFQ tokens -> occupancy (see the module docstring)."""

    scalear_kind = "g3pt_tokenizer"

    def __init__(self, config: G3PTTokenizerConfig | None = None, **overrides: Any):
        super().__init__()
        self.config = cfg = with_overrides(config or G3PTTokenizerConfig(), overrides)
        C, fin = cfg.width, 3 + 6 * cfg.num_freqs
        self.point_in = nn.Linear(fin, C)
        self.latents = _queries(cfg.patch_nums[-1], C, cfg.query_init)
        self.enc_cross = CrossBlock(C, cfg.heads, cfg.mlp_ratio)
        self.enc_blocks = nn.ModuleList(SelfBlock(C, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.enc_blocks))
        self.enc_norm = nn.LayerNorm(C)
        self.quantize = CrossScaleQuantizer(cfg.patch_nums, C, cfg.heads, cfg.code_bits, cfg.mlp_ratio,
                                            cfg.normalize_codes, cfg.lfq_tau, cfg.query_init)
        self.dec_blocks = nn.ModuleList(SelfBlock(C, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.dec_blocks))
        self.query_in = nn.Linear(fin, C)
        self.dec_cross = CrossBlock(C, cfg.heads, cfg.mlp_ratio)
        self.head = nn.Sequential(nn.LayerNorm(C), nn.Linear(C, C), nn.GELU(), nn.Linear(C, 1))
        self._register_load_state_dict_pre_hook(_rename_old_quantizer_keys)

    @property
    def schedule(self) -> ScaleSchedule:
        return self.quantize.schedule

    # ------------------------------------------------------------------ encoder / decoder
    @staticmethod
    def _check_points(x: torch.Tensor, name: str) -> None:
        if x.ndim != 3 or x.shape[-1] != 3:
            raise ValueError(f"{name} must be (B, N, 3), got {tuple(x.shape)}")

    def encode_tokens(self, points_BN3: torch.Tensor) -> torch.Tensor:
        """Point cloud (B, N, 3) -> continuous finest latent tokens z (B, M_K, C)."""
        self._check_points(points_BN3, "points")
        x = self.point_in(fourier_features(points_BN3.to(self.point_in.weight.dtype), self.config.num_freqs))
        z = self.enc_cross(self.latents.expand(x.shape[0], -1, -1), x)
        for blk in self.enc_blocks:
            z = blk(z)
        return self.enc_norm(z)

    def occupancy_logits(self, f_hat_BMC: torch.Tensor, query_BQ3: torch.Tensor) -> torch.Tensor:
        """Occupancy logits (B, Q) at query points (B, Q, 3) of the shape decoded from ``f_hat`` tokens."""
        self._check_points(query_BQ3, "query")
        h = f_hat_BMC
        for blk in self.dec_blocks:
            h = blk(h)
        q = self.query_in(fourier_features(query_BQ3.to(self.query_in.weight.dtype), self.config.num_freqs))
        return self.head(self.dec_cross(q, h)).squeeze(-1)

    # ------------------------------------------------------------------ tokens
    @torch.no_grad()
    def points_to_indices(self, points_BN3: torch.Tensor) -> list[torch.Tensor]:
        """Point cloud -> per-level token indices ``[(B, M_k)]``."""
        return self.quantize.encode(self.encode_tokens(points_BN3))

    @torch.no_grad()
    def indices_to_fhat(self, indices: list[torch.Tensor], upto: int | None = None) -> torch.Tensor:
        """Indices of the first ``upto`` levels (all by default) -> ``f_hat`` tokens (B, M_K, C)."""
        return self.quantize.decode(indices, upto)

    def forward(self, points_BN3: torch.Tensor) -> CrossScaleOutput:
        return self.quantize(self.encode_tokens(points_BN3))

    # ------------------------------------------------------------------ loss
    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Training loss of a batch with ``points`` (B, N, 3), ``query`` (B, Q, 3), ``occupancy`` (B, Q) in {0, 1}.

        Returns ``(loss, logs)``; logs hold ``bce`` (full reconstruction), ``bce_prefix``, ``commit``, ``entropy``,
        ``usage`` (mean % over levels) and ``acc`` (occupancy accuracy)."""
        cfg = self.config
        out = self(batch["points"])
        query, occ = batch["query"], batch["occupancy"].float()
        K = self.quantize.num_levels
        use_prefix = cfg.prefix_weight > 0 and K > 1
        if use_prefix and cfg.prefix_mode == "random":  # nested dropout: one random prefix 1..K-1 per sample
            B = out.f_hat.shape[0]
            pick = torch.randint(0, K - 1, (B,), device=out.f_hat.device)
            part = torch.stack(out.fhats[:-1])[pick, torch.arange(B, device=pick.device)]
            fh = torch.cat([out.f_hat, part])
        else:
            fh = torch.cat([out.f_hat, *out.fhats[:-1]]) if use_prefix else out.f_hat  # ((K or 1) B, M_K, C)
        reps = fh.shape[0] // out.f_hat.shape[0]
        logits = self.occupancy_logits(fh, query.repeat(reps, 1, 1)).view(reps, *occ.shape)
        bce_all = F.binary_cross_entropy_with_logits(logits, occ.expand_as(logits), reduction="none").mean((1, 2))
        bce, bce_prefix = bce_all[0], (bce_all[1:].mean() if use_prefix else bce_all.new_zeros(()))
        loss = (bce + cfg.prefix_weight * bce_prefix + cfg.entropy_weight * out.entropy_loss
                + cfg.commit_weight * out.commit_loss + cfg.latent_weight * out.latent_loss)
        acc = ((logits[0] > 0).float() == occ).float().mean()
        logs = {"bce": float(bce.detach()), "bce_prefix": float(bce_prefix.detach()), "commit": float(out.commit_loss.detach()),
                "latent": float(out.latent_loss.detach()),
                "entropy": float(out.entropy_loss.detach()), "usage": sum(out.usage) / K, "acc": float(acc)}
        return loss, logs

    # ------------------------------------------------------------------ meshes
    @torch.no_grad()
    def fhat_to_grid(self, f_hat_BMC: torch.Tensor, resolution: int = 64, chunk: int = 32768) -> torch.Tensor:
        """Decoded shapes as SDF-like grids (B, R, R, R): ``-logit`` at voxel centres (negative inside)."""
        from scalear.gen3d.fields import sdf_to_grid

        return sdf_to_grid(lambda p: -self.occupancy_logits(f_hat_BMC, p.to(f_hat_BMC.device)), resolution, chunk,
                           batch_size=f_hat_BMC.shape[0], device=f_hat_BMC.device)

    @torch.no_grad()
    def indices_to_meshes(self, indices: list[torch.Tensor], resolution: int = 64, upto: int | None = None) -> list:
        """Per-level indices -> one ``trimesh.Trimesh`` per sample (None where the decoded field is empty or full)."""
        from scalear.gen3d.fields import EmptyFieldError, extract_mesh

        meshes = []
        for g in self.fhat_to_grid(self.indices_to_fhat(indices, upto), resolution):
            try:
                meshes.append(extract_mesh(g, level=0.0))
            except EmptyFieldError:
                meshes.append(None)
        return meshes


register_model_kind("g3pt_tokenizer", lambda d: G3PTTokenizer(G3PTTokenizerConfig.from_dict(d)), lambda m: m.config.to_dict(),
                    RENAMED_WEIGHTS)
register_presets("g3pt_tokenizer", G3PT_TOKENIZER_PRESETS, create_tokenizer)

__all__ = ["G3PT_TOKENIZER_PRESETS", "G3PT_TOKENIZER_TRAINING", "CrossScaleOutput",
           "CrossScaleQuantizer", "G3PTTokenizer", "G3PTTokenizerConfig",
           "create_tokenizer", "fourier_features", "tokenizer_config"]
