"""DepthART: monocular depth as autoregressive refinement over VAR's multi-scale depth tokens.

Gabdullin et al., "Monocular Depth Estimation as Autoregressive Refinement Task" (arXiv 2409.15010; code
bulatko/DepthART, ``var_utils/depthart.py``, ``depth_var.py``).

* **One RGB tokenizer for image and depth** (paper Sec. 3.1): a frozen multi-scale VQ-VAE
  (:class:`~scalear.vqvae.VQVAE`; the paper uses VAR's ``vae_ch160v4096z32``) encodes the image (``[-1, 1]``)
  and the depth, normalised per image by its 98th percentile, mapped to ``[-1, 1]`` (``2 d / q98 - 1``,
  clipped) and repeated to 3 channels (:func:`depth_to_tokenizer_input`). A prediction is decoded, averaged over
  the 3 channels and mapped back (:func:`tokenizer_output_to_depth`): depth in units of the image's 98th
  percentile, i.e. defined up to scale (DepthART evaluates with per-image median scaling).
* **Image prefix** (Sec. 3.2, ``DepthVAR.prepare_to_var``): the image's cumulative quantized latent after each
  scale, area-downsampled to that scale's token map, gives ``L`` image tokens (one per depth token). They are a
  prefix of the next-scale transformer (:class:`~scalear.transformer.NextScaleTransformer` with
  ``prefix_dim``): prefix tokens attend only among themselves, depth tokens see the whole prefix and the
  block-causal pattern over depth scales (:meth:`~scalear.transformer.NextScaleTransformer.attn_mask`). The
  AdaLN condition is the unconditional (null-class) embedding.
* **Training** (Sec. 3.3): ``"teacher_forcing"`` is VAR's recipe (ground-truth token maps as inputs,
  cross-entropy over all ``L`` tokens; the paper's DepthVAR baseline). ``"dynamic"`` is DepthART's
  self-refinement (:meth:`DepthARTModel.self_refine`): scale by scale (KV cache) the model's own argmax
  prediction is accumulated into ``f_hat`` and fed back as the next input (detached); the target of scale
  ``k`` is the token map of the *residual* between the ground-truth continuous latent ``f`` and what the model
  accumulated so far, quantized as the tokenizer would (area-downsample, nearest code). Cross-entropy on the
  scales before the last, plus ``mse_weight * MSE(f_hat_K, f)`` on the final latent, whose last scale is a
  Gumbel-softmax soft code (``probs @ codebook``) so the MSE reaches the logits (:func:`depthart_loss`).
* **Inference** (Sec. 3.4): KV-cached sampling with top-k / top-p; per token ``num_samples`` codes are drawn
  and their codebook embeddings averaged (``embed_samples`` of :func:`scalear.sampling.sample`); paper:
  top-k 900, top-p 0.90, 5 samples.

Deviations: the released code embeds the image prefix with the transformer's own ``word_embed`` + level +
positional embeddings; here the prefix has its own projection and learned positions (``prefix_proj``,
``prefix_pos``), which :func:`init_from_var` and the released checkpoint's loader
(:mod:`~scalear.domains.depth.depthart_checkpoints`) set to exactly that embedding. By default the image prefix
is area- (not bicubic-) downsampled, as VAR downsamples its residuals, and prefix tokens see only each other.
The CPU presets train their tokenizer on procedural RGB-D scenes (no VAR weights can be downloaded here); the
``paper`` preset is VAR-d16 with VAR's tokenizer at 256 px.

The ``official`` preset is the released model (bulatko/DepthART ``model.safetensors``) as its code runs it:
VAR-d16's shape with plain softmax attention at scale 1/32 (``cos_attn: False``, ``tau: 4``), the prefix
bicubic-downsampled and attending also to the start token (``prefix_sees_start``; the official inference runs
prefix and start token through the KV cache together), inputs resized bicubically to 256x256, and evaluation
aligned by the median of per-pixel ratios (the official ``AlignerSIL1``). Load it with
:func:`~scalear.domains.depth.depthart_checkpoints.load_depthart_checkpoint`.

Example:
    >>> model = create_depthart("tiny").eval()
    >>> depth = model.predict_depth(torch.rand(1, 3, 40, 50), generator=torch.Generator().manual_seed(0))
    >>> tuple(depth.shape), bool((depth > 0).all())
    ((1, 1, 40, 50), True)
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from scalear.config_check import JSONConfig
from scalear.io import register_model_kind
from scalear.quant import map_to_tokens, tokens_to_map
from scalear.registry import register_presets
from scalear.sampling import SampleOutput, sample
from scalear.datasets.depth.data import depth_to_tokenizer_input
from scalear.transformer import (CONDITION_FIELDS, TOKENIZER_FIELDS, NextScaleTransformer, TransformerConfig,
                                 check_transformer_overrides, tokenizer_fields)
from scalear.vqvae import VQVAE, VQVAE_PRESETS, VQVAEConfig

TrainingMode = Literal["dynamic", "teacher_forcing"]
#: TransformerConfig fields DepthART derives from the tokenizer (not settable in a DepthART config)
_DERIVED = TOKENIZER_FIELDS | (CONDITION_FIELDS - {"num_classes"})  # set by the model itself


# ------------------------------------------------------------------------------------------- depth <-> tokens
def tokenizer_output_to_depth(x_B3HW: torch.Tensor, min_value: float = 1e-3) -> torch.Tensor:
    """Decoded depth ``(B, 3, H, W)`` in ``[-1, 1]`` -> relative depth ``(B, 1, H, W)`` in units of the image's
    98th percentile: ``mean_c (x + 1) / 2`` (the official order of operations), floored at ``min_value`` (depth
    is positive; the official code has no floor)."""
    return x_B3HW.add(1).mul(0.5).mean(dim=1, keepdim=True).clamp(min=min_value)


# ------------------------------------------------------------------------------------------- config
@dataclass
class DepthARTConfig(JSONConfig):
    """Hyper-parameters of :class:`DepthARTModel`.

    Args:
        tokenizer: :class:`~scalear.vqvae.VQVAEConfig` fields of the shared RGB tokenizer (3 input channels).
        transformer: :class:`~scalear.transformer.TransformerConfig` fields (depth, width, heads, ...);
            vocabulary, latent width, schedule and the image prefix come from the tokenizer. ``num_classes > 0``
            keeps VAR's class embedding (so VAR's weights load) and conditions on the null class.
        depth_quantile: the per-image percentile depth is normalised by (0.98).
        top_k, top_p, temperature, num_samples: inference sampling (paper: 900, 0.90, 1.0, 5 averaged).
        image_resize: how images of another size are resized to the tokenizer's (both antialiased; the official
            data loaders use PIL's bicubic).
        prefix_resize: how each scale's cumulative image latent is downsampled to that scale's map for the
            prefix (``area`` as VAR's residuals; the released code uses ``bicubic``).
        median_of_ratios: evaluation aligns a prediction by ``median(gt / pred)`` (the official ``AlignerSIL1``)
            instead of monodepth2's ``median(gt) / median(pred)``.
    """

    tokenizer: dict[str, Any] = field(default_factory=lambda: dict(VQVAE_PRESETS["tiny"]))
    transformer: dict[str, Any] = field(default_factory=lambda: dict(depth=4, width=128, num_heads=4, drop_path_rate=0.0))
    depth_quantile: float = 0.98
    top_k: int = 900
    top_p: float = 0.90
    temperature: float = 1.0
    num_samples: int = 5
    image_resize: Literal["bilinear", "bicubic"] = "bilinear"
    prefix_resize: Literal["area", "bicubic"] = "area"
    median_of_ratios: bool = False

    def __post_init__(self) -> None:
        self.tokenizer = VQVAEConfig.from_dict(dict(self.tokenizer)).to_dict()  # validates, JSON-able
        if self.tokenizer["in_channels"] != 3 or self.tokenizer["dims"] != 2:
            raise ValueError("DepthART's tokenizer is an RGB image tokenizer (in_channels=3, dims=2) used for both "
                             f"image and depth; got in_channels={self.tokenizer['in_channels']}, dims={self.tokenizer['dims']}")
        self.transformer = check_transformer_overrides(self.transformer, "DepthART transformer", _DERIVED)
        if not 0 < self.depth_quantile <= 1:
            raise ValueError(f"depth_quantile must be in (0, 1], got {self.depth_quantile}")
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {self.num_samples}")
        if self.image_resize not in ("bilinear", "bicubic") or self.prefix_resize not in ("area", "bicubic"):
            raise ValueError(f"image_resize must be 'bilinear' or 'bicubic' and prefix_resize 'area' or 'bicubic'; "
                             f"got {self.image_resize!r}, {self.prefix_resize!r}")

    def transformer_config(self, tokenizer: VQVAE) -> TransformerConfig:
        q = tokenizer.quantize
        return TransformerConfig(**{"cond_drop_rate": 0.0, **self.transformer}, **tokenizer_fields(q), prefix_dim=q.dim,
                                 max_prefix_len=q.schedule.total_tokens)

    label = "DepthART config"


#: Named presets. ``tiny``: 32 px, the ``tiny`` tokenizer (6 scales up to 8x8, 256 codes) and a 4-block
#: transformer, trainable on 2 CPU cores in minutes. ``small``: 64 px, 8 blocks. ``paper``: DepthART's setup,
#: VAR's tokenizer (256 px, 10 scales, 4096 codes) and VAR-d16 (310M), loadable from VAR's weights with
#: :func:`init_from_var`. ``official``: the released DepthART checkpoint's architecture and inference (see the
#: module docstring), loaded by :func:`~scalear.domains.depth.depthart_checkpoints.load_depthart_checkpoint`.
DEPTHART_PRESETS: dict[str, DepthARTConfig] = {
    "tiny": DepthARTConfig(),
    "small": DepthARTConfig(tokenizer=dict(VQVAE_PRESETS["small"]),
                            transformer=dict(depth=8, width=384, num_heads=6, drop_path_rate=0.0)),
    "paper": DepthARTConfig(tokenizer=dict(VQVAE_PRESETS["var-f16"]),
                            transformer=dict(depth=16, width=1024, num_heads=16, drop_path_rate=0.1 * 16 / 24,
                                             num_classes=1000, init_adaln_gamma=1e-3)),
    "official": DepthARTConfig(tokenizer=dict(VQVAE_PRESETS["var-f16"]),
                               transformer=dict(depth=16, width=1024, num_heads=16, drop_path_rate=0.1 * 16 / 24,
                                                num_classes=1000, init_adaln_gamma=1e-3, attn_l2_norm=False,
                                                prefix_sees_start=True),
                               image_resize="bicubic", prefix_resize="bicubic", median_of_ratios=True),
}


def preset_config(name: str = "tiny", **overrides: Any) -> DepthARTConfig:
    """The :data:`DEPTHART_PRESETS` config ``name`` with :class:`DepthARTConfig` ``overrides``; a ``transformer``
    override dict is merged into the preset's."""
    if name not in DEPTHART_PRESETS:
        raise KeyError(f"unknown DepthART preset {name!r}; available: {sorted(DEPTHART_PRESETS)}")
    d = DEPTHART_PRESETS[name].to_dict()
    if "transformer" in overrides:
        overrides["transformer"] = {**d["transformer"], **overrides["transformer"]}
    return DepthARTConfig.from_dict({**d, **overrides})


def create_depthart(name: str = "tiny", **overrides: Any) -> "DepthARTModel":
    """Build a preset of :data:`DEPTHART_PRESETS` with overrides (see :func:`preset_config`)."""
    return DepthARTModel(preset_config(name, **overrides))


# ------------------------------------------------------------------------------------------- model
@dataclass
class RefineOutput:
    """What :meth:`DepthARTModel.self_refine` produces, per scale ``k`` (coarse to fine)."""

    logits: list[torch.Tensor]  #: (B, n_k, V)
    targets: list[torch.Tensor]  #: (B, n_k) residual-token targets
    f_hat: torch.Tensor  #: (B, C, h, w) the final accumulated latent (soft last scale when requested)


class DepthARTModel(nn.Module):
    """DepthART (see the module docstring): a frozen shared tokenizer and the next-scale transformer.

    ``predict_depth`` returns *relative* depth (units of the image's 98th percentile; ``metric_depth`` is
    False), which ``scalear depth eval`` scores with per-image median scaling, as DepthART is evaluated.
    """

    scalear_kind = "depthart"
    metric_depth = False

    def __init__(self, cfg: DepthARTConfig, tokenizer: VQVAE | None = None):
        super().__init__()
        if tokenizer is not None:  # a copy: ``cfg`` may be a shared preset
            cfg = replace(cfg, tokenizer=tokenizer.config.to_dict())
        self.cfg = cfg
        self.tokenizer = tokenizer if tokenizer is not None else VQVAE(VQVAEConfig.from_dict(cfg.tokenizer))
        self.tokenizer.eval().requires_grad_(False)
        self.transformer = NextScaleTransformer(cfg.transformer_config(self.tokenizer))

    def train(self, mode: bool = True) -> "DepthARTModel":
        super().train(mode)
        self.tokenizer.eval()  # frozen: no dropout, no codebook statistics
        return self

    @property
    def schedule(self):
        return self.tokenizer.schedule

    @property
    def input_size(self) -> tuple[int, int]:
        return tuple(self.tokenizer.input_shape)

    @property
    def median_of_ratios(self) -> bool:
        """Whether evaluation aligns this model's relative depth by ``median(gt / pred)`` (the official
        DepthART's ``AlignerSIL1``) rather than ``median(gt) / median(pred)``."""
        return self.cfg.median_of_ratios

    # ------------------------------------------------------------------ inputs
    def _fit(self, x_BCHW: torch.Tensor, mode: str) -> torch.Tensor:
        if tuple(x_BCHW.shape[-2:]) == self.input_size:
            return x_BCHW
        if mode in ("bilinear", "bicubic"):
            return F.interpolate(x_BCHW, self.input_size, mode=mode, align_corners=False, antialias=True)
        return F.interpolate(x_BCHW, self.input_size, mode=mode)

    def image_input(self, image_B3HW: torch.Tensor) -> torch.Tensor:
        """Images in ``[0, 1]`` (any size) -> tokenizer input ``[-1, 1]`` at its size."""
        if image_B3HW.ndim != 4 or image_B3HW.shape[1] != 3:
            raise ValueError(f"expected images (B, 3, H, W) in [0, 1], got shape {tuple(image_B3HW.shape)}")
        return self._fit(image_B3HW.float(), self.cfg.image_resize).clamp(0, 1) * 2 - 1

    def depth_input(self, depth_B1HW: torch.Tensor, valid_B1HW: torch.Tensor | None = None) -> torch.Tensor:
        """Ground-truth depth (metres, any size) -> the tokenizer's 3-channel input (nearest resize, so depths
        are never blended across edges)."""
        valid = depth_B1HW > 0 if valid_B1HW is None else valid_B1HW.bool()
        d = self._fit(depth_B1HW.float(), "nearest")
        v = self._fit(valid.float(), "nearest") > 0.5
        return depth_to_tokenizer_input(d, v, self.cfg.depth_quantile)[0]

    @torch.no_grad()
    def image_prefix(self, image_B3HW: torch.Tensor) -> torch.Tensor:
        """The image's multi-scale tokens ``(B, L, C)``: its cumulative quantized latent after scale ``k``
        downsampled to scale ``k``'s map (``prefix_resize``), for every ``k`` (DepthVAR ``prepare_to_var``)."""
        q = self.tokenizer.quantize
        fhats = self.tokenizer.img_to_fhats(self.image_input(image_B3HW))
        if self.cfg.prefix_resize == "area":
            return torch.cat([q.downsample_tokens(f, k) for k, f in enumerate(fhats)], dim=1)
        return torch.cat([map_to_tokens(F.interpolate(f, size=self.schedule.shapes[k], mode="bicubic"))
                          for k, f in enumerate(fhats)], dim=1)

    def condition(self, batch_size: int, device: torch.device) -> torch.Tensor:
        """AdaLN condition ``(B, C)``: the unconditional (or null-class) embedding."""
        return self.transformer.condition(batch_size, **self._labels(batch_size, device))

    def _labels(self, batch_size: int, device: torch.device) -> dict[str, torch.Tensor]:
        n = self.transformer.cfg.num_classes
        return {"label_B": torch.full((batch_size,), n, device=device)} if n else {}

    # ------------------------------------------------------------------ training forwards
    def teacher_forcing_logits(self, prefix_BLC: torch.Tensor, indices: list[torch.Tensor]) -> torch.Tensor:
        """VAR's teacher-forced forward: ground-truth depth tokens in, logits ``(B, L, V)`` of every token."""
        x_in = self.tokenizer.quantize.teacher_forcing_input(indices)
        return self.transformer(x_in, prefix_BPD=prefix_BLC, **self._labels(prefix_BLC.shape[0], prefix_BLC.device))

    def self_refine(self, prefix_BLC: torch.Tensor, f_target: torch.Tensor, *,
                    forced_indices: list[torch.Tensor] | None = None, soft_last: bool = False,
                    gumbel_tau: float = 1.0) -> RefineOutput:
        """DepthART's dynamic-target pass, scale by scale with the KV cache (differentiable).

        At scale ``k`` the target is ``lookup(area_down(f_target - f_hat, k))``, the residual's tokens; then the
        model's argmax (or ``forced_indices[k]``) is added to ``f_hat`` and the next input is ``f_hat``
        area-downsampled to scale ``k + 1`` (detached). With ``soft_last`` the last scale adds the soft code
        ``gumbel_softmax(logits) @ codebook`` instead, so that a loss on ``RefineOutput.f_hat`` reaches the logits.

        With the ground-truth indices forced, the targets are the ground-truth indices and the logits those of
        :meth:`teacher_forcing_logits`: teacher forcing is the special case of feeding the truth back.
        """
        tr, q, sched = self.transformer, self.tokenizer.quantize, self.schedule
        B, K = prefix_BLC.shape[0], sched.num_scales
        cond_BC = self.condition(B, prefix_BLC.device)
        f_target = f_target.float().detach()
        f_hat = torch.zeros_like(f_target)
        logits_all, targets = [], []
        tr.kv_caching(True)
        try:
            x_BnC = tr.embed_scale(0, cond_BC)
            for k in range(K):
                logits_BnV = (tr.forward_first_scale(x_BnC, cond_BC, None, prefix_BLC) if k == 0
                              else tr.forward_scale(x_BnC, cond_BC, None))
                with torch.no_grad():
                    target_Bn = q.lookup(q.downsample_tokens(f_target - f_hat, k).reshape(-1, q.dim)).view(B, -1)
                logits_all.append(logits_BnV)
                targets.append(target_Bn)
                if soft_last and k == K - 1:
                    probs_BnV = F.gumbel_softmax(logits_BnV, tau=gumbel_tau, hard=False, dim=-1)
                    h = tokens_to_map(probs_BnV @ q.embedding.weight, sched.token_shape(k))
                    f_hat = q.add_scale(f_hat, h, k)
                    break
                with torch.no_grad():
                    idx_Bn = forced_indices[k] if forced_indices is not None else logits_BnV.argmax(dim=-1)
                    f_hat = q.add_scale(f_hat, q.embed(idx_Bn, k), k)
                if k < K - 1:
                    x_BnC = tr.embed_scale(k + 1, cond_BC, q.downsample_tokens(f_hat, k + 1).detach())
        finally:
            tr.kv_caching(False)
        return RefineOutput(logits_all, targets, f_hat)

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def sample(self, image_B3HW: torch.Tensor, generator: torch.Generator | None = None,
               forced_indices: list[torch.Tensor] | None = None, return_logits: bool = False,
               **sampling: Any) -> SampleOutput:
        """Sample the depth tokens of ``image`` (KV cache; :func:`scalear.sampling.sample`). ``sampling``
        overrides the config's ``top_k``, ``top_p``, ``temperature``, ``num_samples``; ``temperature=0`` is
        greedy; ``forced_indices`` (per scale ``(B, n_k)`` or ``(B, n_k, s)``) replace the draws."""
        c = self.cfg
        s = {"top_k": c.top_k, "top_p": c.top_p, "temperature": c.temperature, "num_samples": c.num_samples, **sampling}
        prefix = self.image_prefix(image_B3HW)
        return sample(self.transformer, self.tokenizer.quantize, prefix.shape[0], prefix_BPD=prefix,
                      top_k=s["top_k"], top_p=s["top_p"], temperature=s["temperature"], embed_samples=s["num_samples"],
                      generator=generator, forced_indices=forced_indices, return_logits=return_logits,
                      **self._labels(prefix.shape[0], prefix.device))

    @torch.no_grad()
    def sample_latent(self, image_B3HW: torch.Tensor, generator: torch.Generator | None = None,
                      **sampling: Any) -> torch.Tensor:
        """The depth latent ``f_hat`` sampled for ``image`` (see :meth:`sample`)."""
        return self.sample(image_B3HW, generator, **sampling).f_hat

    @torch.no_grad()
    def predict_from_latent(self, f_hat: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """A depth latent -> relative depth ``(B, 1, *size)``: decoded, ``mean_c (x + 1) / 2``, resized
        bicubically to ``size`` (the official ``VARFull``), floored at 1e-3."""
        rel = tokenizer_output_to_depth(self.tokenizer.fhat_to_img(f_hat))
        return F.interpolate(rel, size=tuple(size), mode="bicubic", align_corners=False).clamp(min=1e-3)

    @torch.no_grad()
    def predict_depth(self, image_B3HW: torch.Tensor, generator: torch.Generator | None = None,
                      **sampling: Any) -> torch.Tensor:
        """Relative depth ``(B, 1, H, W)`` at the input's size (units of the image's 98th percentile)."""
        return self.predict_from_latent(self.sample_latent(image_B3HW, generator, **sampling), image_B3HW.shape[-2:])

    def num_params(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def no_weight_decay_names(self) -> set[str]:
        return {f"transformer.{n}" for n in self.transformer.no_weight_decay_names()}


# ------------------------------------------------------------------------------------------- loss
def depthart_loss(model: DepthARTModel, image_B3HW: torch.Tensor, depth_B1HW: torch.Tensor,
                  valid_B1HW: torch.Tensor | None = None, mode: TrainingMode = "dynamic", mse_weight: float = 10.0,
                  gumbel_tau: float = 1.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The training loss of one batch.

    ``"teacher_forcing"``: cross-entropy over all ``L`` ground-truth tokens (VAR; DepthART's DepthVAR baseline).
    ``"dynamic"``: :meth:`DepthARTModel.self_refine`'s residual targets; cross-entropy over the tokens of the
    scales before the last and ``mse_weight * MSE(f_hat, f)`` on the final latent (``mse_weight = 0``: the last
    scale joins the cross-entropy instead). Returns the total and ``{"ce", "mse", "acc", "acc_s<k>"}``.
    """
    if mode not in ("dynamic", "teacher_forcing"):
        raise ValueError(f"training mode must be 'dynamic' or 'teacher_forcing', got {mode!r}")
    tok = model.tokenizer
    prefix = model.image_prefix(image_B3HW)
    with torch.no_grad():
        f_target = tok.encode_latent(model.depth_input(depth_B1HW, valid_B1HW))
    K = model.schedule.num_scales
    logs: dict[str, torch.Tensor] = {}
    if mode == "teacher_forcing":
        indices = tok.quantize.encode(f_target)
        logits = model.teacher_forcing_logits(prefix, indices).split(model.schedule.tokens_per_scale, dim=1)
        targets, ce_scales, mse = indices, K, None
    else:
        soft = mse_weight > 0
        out = model.self_refine(prefix, f_target, soft_last=soft, gumbel_tau=gumbel_tau)
        logits, targets = out.logits, out.targets
        ce_scales = K - 1 if soft else K
        mse = F.mse_loss(out.f_hat, f_target) if soft else None
    ce = F.cross_entropy(torch.cat(logits[:ce_scales], 1).transpose(1, 2), torch.cat(targets[:ce_scales], 1))
    total = ce if mse is None else ce + mse_weight * mse
    with torch.no_grad():
        hits = [(lg.argmax(-1) == t).float() for lg, t in zip(logits, targets)]
        logs = {"ce": ce.detach(), "acc": torch.cat(hits, 1).mean()}
        logs |= {f"acc_s{k}": h.mean() for k, h in enumerate(hits)}
        if mse is not None:
            logs["mse"] = mse.detach()
    return total, logs


# ------------------------------------------------------------------------------------------- VAR weights
@torch.no_grad()
def init_from_var(model: DepthARTModel, var_path: str | Path, vae_path: str | Path | None = None) -> DepthARTModel:
    """Start from VAR's released weights, as DepthART does (``var_d16.pth``, ``vae_ch160v4096z32.pth``).

    The transformer's weights load by VAR's key table (:func:`scalear.var_checkpoints.map_var_transformer_state_dict`);
    the image prefix, which VAR lacks, is initialised to VAR's own token embedding: ``prefix_proj`` = ``word_embed``
    and ``prefix_pos`` = ``pos_1LC + lvl_embed`` of each token's scale (DepthART embeds the image tokens this way).
    The model's transformer must have VAR's architecture (the ``paper`` preset for VAR-d16).
    """
    from scalear.var_checkpoints import (CheckpointMismatchError, _load_tensors, load_var_vqvae,
                                         map_var_transformer_state_dict)

    tr = model.transformer
    if vae_path is not None:
        vae = load_var_vqvae(vae_path)
        model.tokenizer.load_state_dict(vae.state_dict())
    sd = map_var_transformer_state_dict(_load_tensors(var_path), tr.cfg.schedule, source=str(var_path))
    own = tr.state_dict()
    prefix_keys = {k for k in own if k.startswith(("prefix_proj.", "prefix_pos"))}
    missing, unexpected = sorted(set(own) - set(sd) - prefix_keys), sorted(set(sd) - set(own))
    bad = [k for k in set(sd) & set(own) if sd[k].shape != own[k].shape]
    if missing or unexpected or bad:
        raise CheckpointMismatchError(f"{var_path} does not fit this DepthART transformer: missing {missing[:8]}, "
                                      f"unexpected {unexpected[:8]}, shape mismatches {sorted(bad)[:8]}")
    tr.load_state_dict({k: v.float() for k, v in sd.items()}, strict=False)
    tr.prefix_proj.load_state_dict(tr.word_embed.state_dict())
    tr.prefix_pos.copy_(tr.pos_1LC + tr.lvl_embed(tr.lvl_1L))
    return model


def _build(d: dict) -> DepthARTModel:
    return DepthARTModel(DepthARTConfig.from_dict(d))


register_model_kind("depthart", _build, lambda m: m.cfg.to_dict())
register_presets("depthart", DEPTHART_PRESETS, create_depthart)

__all__ = ["DepthARTConfig", "DEPTHART_PRESETS", "DepthARTModel", "RefineOutput", "create_depthart", "preset_config",
           "depthart_loss",
           "depth_to_tokenizer_input", "tokenizer_output_to_depth", "init_from_var"]
