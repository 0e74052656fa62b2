"""DAR: autoregressive monocular depth, coarse to fine in resolution and granularity at once.

Wang et al., "Scalable Autoregressive Monocular Depth Estimation", CVPR 2025 (arXiv 2411.11361). No code is
public; this follows the paper's abstract, Sec. 3 overview and Fig. 3 and
documents every choice the paper leaves open. Section numbers ("DAR Sec. 3.x") are our best reading of the
paper's layout (resolution AR ~ Sec. 3.2, granularity AR / MTBin / bin injection ~ Sec. 3.3).

Per image, ``K`` steps ``k = 0..K-1``, one per scale of a 2D :class:`~scalear.schedules.ScaleSchedule`:

1. **Image encoder** (paper: a pretrained ViT backbone; here :class:`ConvEncoder`, trainable from scratch on
   CPU, or any ``nn.Module`` passed as ``encoder``): a feature map ``F`` at the finest token resolution and
   "global image feature tokens" (``F`` area-pooled to ``prefix_grid x prefix_grid``) used as the prefix.
2. **Resolution autoregression** (DAR Sec. 3.2): scalear's :class:`~scalear.transformer.NextScaleTransformer`
   with the image tokens as a prefix and the block-causal ("patch-wise causal") mask. The input token map of
   step ``k`` is the previous step's output map, the ConvGRU hidden state ``h_{k-1}``, *upsampled* (bilinear)
   to scale ``k`` and fed as continuous vectors through ``word_embed`` (not quantized); step 0 reads the start
   tokens built from the pooled image feature (AdaLN condition). The head outputs a ``token_dim`` latent per
   token. Training and inference run the same scale-by-scale KV-cached path (each step's input depends on the
   previous step's output), which is exactly the block-causal mask.
3. **Granularity autoregression** (DAR Sec. 3.3, MTBin; :mod:`scalear.domains.depth.bins`): bin candidates
   ``c_k`` refined around the previous prediction ``D_{k-1}`` (upsampled to scale ``k``).
4. **Bin injection** (DAR Sec. 3.3): a ConvGRU cell takes the transformer's output tokens (as a map), an
   embedding of the new candidates ``c_k`` and the image feature map at scale ``k``, updates the hidden state
   (``h_{k-1}`` upsampled; zeros at step 0) and outputs logits ``r_k`` over the ``N`` candidates;
   ``D_k = sum_i softmax(r_k)_i c_{k,i}``.

The output of step ``k`` is continuous depth at scale ``k``'s token resolution; :meth:`DARModel.predict_depth`
upsamples the last one bilinearly to the input size. The model runs on a square (its schedule is square): by
default ``predict_depth`` letterboxes a non-square image (:func:`letterbox`: aspect kept, edges repeated into the
padding) and crops the prediction back, as Depth Anything keeps the aspect ratio (it predicts at the native
aspect, which a square schedule cannot); ``keep_aspect=False`` and training stretch to the square instead.

Deviations (paper silent or out of reach here): a small conv encoder instead of the paper's pretrained
backbone (see the ``encoder`` hook); one granularity step per resolution step; the bin tree of
:mod:`~scalear.domains.depth.bins` (width ``/ shrink`` per step, nested intervals); one ConvGRU cell shared by
all steps, with layer-normalised gates (see :class:`ConvGRUCell`: a plain one saturates early in training);
candidates built from the *detached* previous prediction; presets stop far below the paper's 2B parameters.

Example:
    >>> model = create_dar("tiny")
    >>> depths = model(torch.rand(2, 3, 32, 32))
    >>> [tuple(d.shape) for d in depths]
    [(2, 1, 1, 1), (2, 1, 2, 2), (2, 1, 4, 4), (2, 1, 8, 8)]
    >>> model.predict_depth(torch.rand(1, 3, 50, 70)).shape
    torch.Size([1, 1, 50, 70])
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from scalear.config_check import JSONConfig
from scalear.domains.depth.bins import DepthBins
from scalear.io import load_torch_file, register_model_kind
from scalear.registry import register_presets
from scalear.schedules import ScaleSchedule
from scalear.transformer import NextScaleTransformer, TransformerConfig


# ------------------------------------------------------------------------------------------- config
@dataclass
class DARConfig(JSONConfig):
    """Hyper-parameters of :class:`DARModel`.

    Args:
        image_size: side of the square image the model runs at (inputs are resized to it).
        patch_nums: token-map side per scale, coarse to fine (the finest must divide ``image_size``).
        min_depth, max_depth: metres covered by the bins.
        num_bins: bin candidates per step ``N``; log_space: bins uniform in ``ln d``; shrink: interval width
            ratio between steps (see :class:`~scalear.domains.depth.bins.DepthBins`).
        enc_channels: channels of the from-scratch encoder's stages (one stride-2 stage per channel entry
            after the stem; their count must equal ``log2(image_size / patch_nums[-1])``).
        prefix_grid: the prefix holds ``prefix_grid**2`` global image tokens.
        depth, width, num_heads, mlp_ratio, drop_path_rate: the transformer.
        token_dim: width of the transformer's per-token output latent (its ``vocab_size``).
        hidden_dim: ConvGRU hidden channels (also the transformer's ``latent_dim``: the next step's input).
        bin_embed_dim: channels of the embedding of the bin candidates.
    """

    image_size: int = 32
    patch_nums: tuple[int, ...] = (1, 2, 4, 8)
    min_depth: float = 0.1
    max_depth: float = 10.0
    num_bins: int = 16
    log_space: bool = True
    shrink: float = 2.0
    enc_channels: tuple[int, ...] = (32, 64)
    prefix_grid: int = 4
    depth: int = 2
    width: int = 64
    num_heads: int = 2
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.0
    token_dim: int = 32
    hidden_dim: int = 32
    bin_embed_dim: int = 16

    def __post_init__(self) -> None:
        self.patch_nums = tuple(int(p) for p in self.patch_nums)
        self.enc_channels = tuple(int(c) for c in self.enc_channels)
        ratio = self.image_size / self.patch_nums[-1]
        if ratio != int(ratio) or int(ratio) & (int(ratio) - 1):
            raise ValueError(f"image_size {self.image_size} / finest patch number {self.patch_nums[-1]} must be a power of two")
        if len(self.enc_channels) != int(math.log2(ratio)):
            raise ValueError(f"enc_channels needs log2({int(ratio)}) = {int(math.log2(ratio))} entries "
                             f"(one stride-2 stage each), got {self.enc_channels}")
        DepthBins(self.min_depth, self.max_depth, self.num_bins, self.log_space, self.shrink)  # validates the bins

    @property
    def schedule(self) -> ScaleSchedule:
        return ScaleSchedule.square(self.patch_nums)

    label = "DAR config"


#: Named presets. ``tiny`` trains on 2 CPU cores in minutes; ``base`` is a paper-like layout at 256 px with a
#: VAR-d16-sized transformer (~0.3B). Deviation: the paper scales DAR up to 2.0B parameters with a
#: pretrained backbone.
DAR_PRESETS: dict[str, DARConfig] = {
    "tiny": DARConfig(),
    "small": DARConfig(image_size=128, patch_nums=(1, 2, 3, 4, 6, 8, 12, 16), enc_channels=(64, 128, 192),
                       prefix_grid=8, depth=6, width=384, num_heads=6, token_dim=64, hidden_dim=64, num_bins=32,
                       bin_embed_dim=32, drop_path_rate=0.05),
    "base": DARConfig(image_size=256, patch_nums=(1, 2, 3, 4, 5, 6, 8, 10, 13, 16), enc_channels=(64, 128, 256, 384),
                      prefix_grid=16, depth=16, width=1024, num_heads=16, token_dim=128, hidden_dim=128, num_bins=64,
                      bin_embed_dim=64, drop_path_rate=0.1 * 16 / 24),
}


def create_dar(name: str = "tiny", encoder: nn.Module | None = None, **overrides) -> "DARModel":
    """Build a preset from :data:`DAR_PRESETS` with ``overrides`` applied (timm-style)."""
    if name not in DAR_PRESETS:
        raise KeyError(f"unknown DAR preset {name!r}; available: {sorted(DAR_PRESETS)}")
    return DARModel(replace(DAR_PRESETS[name], **overrides), encoder=encoder)


def letterbox(image_B3HW: torch.Tensor, size: int) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """Fit an image into a ``size x size`` square without distorting it: resized (bilinear, antialiased) so the
    longer side is ``size``, the shorter side padded symmetrically by repeating its edge pixels. Returns the square
    ``(B, 3, size, size)`` and the image's box in it, ``(top, left, height, width)``; e.g. 375x1242 into 32:
    rows 11..21 (10 rows), all 32 columns."""
    H, W = image_B3HW.shape[-2:]
    h, w = max(1, round(H * size / max(H, W))), max(1, round(W * size / max(H, W)))
    x = image_B3HW if (h, w) == (H, W) else F.interpolate(image_B3HW, size=(h, w), mode="bilinear",
                                                            align_corners=False, antialias=True)
    top, left = (size - h) // 2, (size - w) // 2
    return F.pad(x, (left, size - w - left, top, size - h - top), mode="replicate"), (top, left, h, w)


# ------------------------------------------------------------------------------------------- encoder
def _conv_block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1), nn.GroupNorm(min(8, c_out), c_out), nn.GELU())


class ConvEncoder(nn.Module):
    """From-scratch image encoder: a stem and one stride-2 residual stage per ``channels`` entry, so the output
    ``(B, channels[-1], H / 2**n, W / 2**n)`` is at the finest token resolution. Input in ``[0, 1]``."""

    def __init__(self, channels: tuple[int, ...]):
        super().__init__()
        self.stem = _conv_block(3, channels[0], 1)
        stages, c_prev = [], channels[0]
        for c in channels:
            stages.append(nn.Sequential(_conv_block(c_prev, c, 2), _conv_block(c, c, 1)))
            c_prev = c
        self.stages = nn.ModuleList(stages)
        self.out_channels = c_prev
        self.register_buffer("mean_3", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std_3", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def forward(self, image_B3HW: torch.Tensor) -> torch.Tensor:
        x = self.stem((image_B3HW - self.mean_3) / self.std_3)
        for stage in self.stages:
            x = stage[0](x)
            x = x + stage[1](x)
        return x


def timm_backbone(name: str, weights_path: str | None = None, out_index: int = -1) -> nn.Module:
    """Hook for a pretrained backbone: a timm ``features_only`` model (feature map ``out_index``) with weights
    from a local file. timm is optional and imported only here; nothing is downloaded.

    Pass the result as ``DARModel(cfg, encoder=..., encoder_channels=...)``; its feature map is resampled to
    the finest token resolution. Such a model is not restored by ``from_pretrained`` on its own: rebuild it
    with the same ``encoder`` and load the state dict.
    """
    try:
        import timm
    except ImportError as e:
        raise ImportError("timm_backbone needs timm (pip install timm); the default ConvEncoder needs nothing") from e
    model = timm.create_model(name, pretrained=False, features_only=True)
    if weights_path is not None:
        state = load_torch_file(weights_path)
        state = state.get("state_dict", state.get("model", state)) if isinstance(state, dict) else state
        model.load_state_dict(state, strict=False)

    class _Pick(nn.Module):
        def __init__(self, m: nn.Module):
            super().__init__()
            self.m, self.out_channels = m, m.feature_info.channels()[out_index]

        def forward(self, image_B3HW: torch.Tensor) -> torch.Tensor:
            return self.m(image_B3HW)[out_index]

    return _Pick(model)


# ------------------------------------------------------------------------------------------- bin injection
class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of every pixel of a ``(B, C, h, w)`` map (as ConvNeXt's)."""

    def forward(self, x_BChw: torch.Tensor) -> torch.Tensor:
        return super().forward(x_BChw.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvGRUCell(nn.Module):
    """Convolutional GRU (3x3 gates) as in RAFT, ``h' = (1 - z) h + z tanh(W_q [r h, x])``, with every gate's
    pre-activation layer-normalised per pixel (the layer-normalised GRU of Ba et al., 2016).

    The normalisation is our choice (DAR does not describe its ConvGRU's internals): trained from scratch with
    AdamW, a plain ConvGRU here drove its gate pre-activations to |.| ~ 50 within ~40 steps at lr 2e-3 (and
    kept growing at 2.5e-4); sigmoid and tanh saturate, no gradient reaches the transformer or the encoder
    again, and only the logits head keeps learning (tiny quickstart: held-out AbsRel 0.23, with the finest
    scale no better than the previous one; 0.14 and falling at every scale with the norms). Normalised
    pre-activations can only grow through the norms' gains.
    """

    def __init__(self, hidden_dim: int, input_dim: int):
        super().__init__()
        self.convz = nn.Conv2d(hidden_dim + input_dim, hidden_dim, 3, padding=1)
        self.convr = nn.Conv2d(hidden_dim + input_dim, hidden_dim, 3, padding=1)
        self.convq = nn.Conv2d(hidden_dim + input_dim, hidden_dim, 3, padding=1)
        self.norm_z, self.norm_r, self.norm_q = (LayerNorm2d(hidden_dim) for _ in range(3))

    def forward(self, h_BChw: torch.Tensor, x_BDhw: torch.Tensor) -> torch.Tensor:
        hx = torch.cat((h_BChw, x_BDhw), dim=1)
        z, r = torch.sigmoid(self.norm_z(self.convz(hx))), torch.sigmoid(self.norm_r(self.convr(hx)))
        q = torch.tanh(self.norm_q(self.convq(torch.cat((r * h_BChw, x_BDhw), dim=1))))
        return (1 - z) * h_BChw + z * q


class BinInjection(nn.Module):
    """DAR Sec. 3.3 bin injection: transformer tokens + embedded candidates + image features -> ConvGRU ->
    logits ``r_k`` over the ``N`` candidates."""

    def __init__(self, token_dim: int, feat_dim: int, num_bins: int, hidden_dim: int, bin_embed_dim: int):
        super().__init__()
        self.bin_embed = nn.Sequential(nn.Conv2d(num_bins, bin_embed_dim, 1), nn.GELU(), nn.Conv2d(bin_embed_dim, bin_embed_dim, 1))
        self.feat_proj = nn.Conv2d(feat_dim, hidden_dim, 1)
        self.gru = ConvGRUCell(hidden_dim, token_dim + bin_embed_dim + hidden_dim)
        self.logits = nn.Sequential(nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1), nn.GELU(), nn.Conv2d(hidden_dim, num_bins, 1))
        nn.init.zeros_(self.logits[-1].weight)  # uniform softmax at init: each step starts at its interval's centre
        nn.init.zeros_(self.logits[-1].bias)

    def forward(self, h_BChw: torch.Tensor, tokens_BThw: torch.Tensor, centers01_BNhw: torch.Tensor,
                feat_BFhw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the new hidden state ``(B, hidden, h, w)`` and the logits ``(B, N, h, w)``."""
        x = torch.cat((tokens_BThw, self.bin_embed(centers01_BNhw), self.feat_proj(feat_BFhw)), dim=1)
        h_BChw = self.gru(h_BChw, x)
        return h_BChw, self.logits(h_BChw)


# ------------------------------------------------------------------------------------------- model
@dataclass
class DAROutput:
    """Everything one forward pass produces, per step ``k`` (coarse to fine)."""

    depth: list[torch.Tensor]  #: (B, 1, h_k, w_k) metres
    logits: list[torch.Tensor]  #: (B, N, h_k, w_k) bin logits r_k
    centers: list[torch.Tensor]  #: (B, N, h_k, w_k) bin candidates c_k in bin space
    tokens: list[torch.Tensor]  #: (B, h_k * w_k, token_dim) transformer outputs


class DARModel(nn.Module):
    """DAR (see the module docstring).

    Args:
        cfg: :class:`DARConfig`.
        encoder: optional image encoder ``(B, 3, H, W) in [0, 1] -> (B, C, h, w)`` replacing :class:`ConvEncoder`
            (e.g. :func:`timm_backbone`); ``encoder_channels`` is its ``C`` (default: ``encoder.out_channels``).
    """

    scalear_kind = "dar"

    def __init__(self, cfg: DARConfig, encoder: nn.Module | None = None, encoder_channels: int | None = None):
        super().__init__()
        self.cfg = cfg
        self.bins = DepthBins(cfg.min_depth, cfg.max_depth, cfg.num_bins, cfg.log_space, cfg.shrink)
        self.encoder = encoder if encoder is not None else ConvEncoder(cfg.enc_channels)
        feat_dim = encoder_channels or self.encoder.out_channels
        self.feat_dim = feat_dim
        self.transformer = NextScaleTransformer(TransformerConfig(
            vocab_size=cfg.token_dim, latent_dim=cfg.hidden_dim, schedule=cfg.schedule, depth=cfg.depth,
            width=cfg.width, num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_ratio, drop_path_rate=cfg.drop_path_rate,
            cond_dim=feat_dim, cond_drop_rate=0.0, prefix_dim=feat_dim, max_prefix_len=cfg.prefix_grid**2,
            init_head=1.0,
        ))
        self.inject = BinInjection(cfg.token_dim, feat_dim, cfg.num_bins, cfg.hidden_dim, cfg.bin_embed_dim)

    @property
    def num_scales(self) -> int:
        return len(self.cfg.patch_nums)

    @property
    def depth_range(self) -> tuple[float, float]:
        """The metres its bins cover: nothing outside can be predicted (``scalear depth eval`` warns when the
        evaluation counts ground truth beyond it)."""
        return self.cfg.min_depth, self.cfg.max_depth

    # ------------------------------------------------------------------ pieces
    def encode(self, image_B3HW: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Image -> (feature map at the finest token resolution ``(B, F, p, p)``, prefix tokens ``(B, P, F)``,
        AdaLN condition vector ``(B, F)``)."""
        p = self.cfg.patch_nums[-1]
        feat_BFhw = self.encoder(image_B3HW)
        if feat_BFhw.shape[-2:] != (p, p):
            feat_BFhw = F.interpolate(feat_BFhw, size=(p, p), mode="bilinear", align_corners=False)
        g = self.cfg.prefix_grid
        prefix_BPF = F.adaptive_avg_pool2d(feat_BFhw, (g, g)).flatten(2).transpose(1, 2)
        return feat_BFhw, prefix_BPF, feat_BFhw.mean(dim=(2, 3))

    def _check_image(self, image_B3HW: torch.Tensor) -> None:
        if image_B3HW.dim() != 4 or image_B3HW.shape[1] != 3:
            raise ValueError(f"expected images (B, 3, H, W) in [0, 1], got shape {tuple(image_B3HW.shape)}")

    def _resize(self, image_B3HW: torch.Tensor) -> torch.Tensor:
        s = self.cfg.image_size
        if image_B3HW.shape[-2:] == (s, s):
            return image_B3HW
        return F.interpolate(image_B3HW, size=(s, s), mode="bilinear", align_corners=False, antialias=True)

    # ------------------------------------------------------------------ forward
    def forward_all(self, image_B3HW: torch.Tensor) -> DAROutput:
        """All ``K`` steps of DAR (resized to ``image_size`` first); see the module docstring."""
        self._check_image(image_B3HW)
        image_B3HW = self._resize(image_B3HW.float())
        B, tr, bins = image_B3HW.shape[0], self.transformer, self.bins
        feat_BFhw, prefix_BPF, cond_BF = self.encode(image_B3HW)
        cond_BC = tr.condition(B, cond_BD=cond_BF)
        out = DAROutput([], [], [], [])
        h_BChw = lo_B1hw = t_B1hw = None
        tr.kv_caching(True)
        try:
            tr.prefill_prefix(prefix_BPF, cond_BC, None)
            for k, pn in enumerate(self.cfg.patch_nums):
                hw = (pn, pn)
                # resolution AR: input tokens = previous output map (hidden state) upsampled to scale k
                if k == 0:
                    x_BnC = tr.embed_scale(0, cond_BC)
                    h_BChw = feat_BFhw.new_zeros(B, self.cfg.hidden_dim, *hw)
                    lo_B1hw = bins.initial_interval(B, hw, feat_BFhw.device, feat_BFhw.dtype)
                else:
                    h_BChw = F.interpolate(h_BChw, size=hw, mode="bilinear", align_corners=False)
                    x_BnC = tr.embed_scale(k, cond_BC, h_BChw.flatten(2).transpose(1, 2))
                tokens_BnT = tr.forward_scale(x_BnC, cond_BC, None)
                # granularity AR: refine the bins around the previous prediction (upsampled, detached)
                if k > 0:
                    lo_up = F.interpolate(lo_B1hw, size=hw, mode="bilinear", align_corners=False)
                    t_up = F.interpolate(t_B1hw.detach(), size=hw, mode="bilinear", align_corners=False)
                    lo_B1hw = bins.refine_interval(lo_up, t_up, k)
                centers_BNhw = bins.centers(lo_B1hw, k)
                feat_k = F.interpolate(feat_BFhw, size=hw, mode="area")
                tokens_BThw = tokens_BnT.transpose(1, 2).reshape(B, -1, *hw)
                h_BChw, logits_BNhw = self.inject(h_BChw, tokens_BThw, bins.normalize(centers_BNhw), feat_k)
                t_B1hw = bins.expectation(logits_BNhw, centers_BNhw)
                out.depth.append(bins.to_depth(t_B1hw))
                out.logits.append(logits_BNhw)
                out.centers.append(centers_BNhw)
                out.tokens.append(tokens_BnT)
        finally:
            tr.kv_caching(False)
        return out

    def forward(self, image_B3HW: torch.Tensor) -> list[torch.Tensor]:
        """Images ``(B, 3, H, W)`` in ``[0, 1]`` -> per-scale depth maps ``[(B, 1, p_k, p_k)]`` in metres."""
        return self.forward_all(image_B3HW).depth

    @torch.no_grad()
    def predict_depth(self, image_B3HW: torch.Tensor, keep_aspect: bool = True) -> torch.Tensor:
        """Depth ``(B, 1, H, W)`` in metres at the input's own size (any size).

        ``keep_aspect`` (default): a non-square image is letterboxed (:func:`letterbox`) so the model sees it
        undistorted, and the prediction of the image's box is resized back to ``H x W``; otherwise the image is
        stretched to the square ``image_size`` and the prediction stretched back.
        """
        self._check_image(image_B3HW)
        H, W = image_B3HW.shape[-2:]
        if not keep_aspect or H == W:
            return F.interpolate(self.forward(image_B3HW)[-1], size=(H, W), mode="bilinear", align_corners=False)
        s = self.cfg.image_size
        square_B3ss, (top, left, h, w) = letterbox(image_B3HW.float(), s)
        depth_B1ss = F.interpolate(self.forward(square_B3ss)[-1], size=(s, s), mode="bilinear", align_corners=False)
        box_B1hw = depth_B1ss[..., top : top + h, left : left + w]
        return F.interpolate(box_B1hw, size=(H, W), mode="bilinear", align_corners=False)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def no_weight_decay_names(self) -> set[str]:
        return {f"transformer.{n}" for n in self.transformer.no_weight_decay_names()}


# ------------------------------------------------------------------------------------------- loss
def valid_area_pool(depth_B1HW: torch.Tensor, valid_B1HW: torch.Tensor, hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """GT depth area-averaged over its valid pixels only, to ``hw``: ``(depth (B,1,h,w), valid (B,1,h,w))``; a
    cell is valid if at least one valid pixel falls in it."""
    v = valid_B1HW.to(depth_B1HW.dtype)
    num = F.adaptive_avg_pool2d(depth_B1HW * v, hw)
    den = F.adaptive_avg_pool2d(v, hw)
    ok = den > 0
    return torch.where(ok, num / den.clamp(min=1e-12), torch.zeros_like(num)), ok


def silog_loss(pred_B1hw: torch.Tensor, gt_B1hw: torch.Tensor, valid_B1hw: torch.Tensor, lam: float = 0.5,
               eps: float = 1e-6) -> torch.Tensor:
    """``sqrt(mean(e^2) - lam * mean(e)^2)`` with ``e = ln pred - ln gt`` over the valid pixels of the batch
    (``lam = 0.5`` as Depth Anything V2; AdaBins uses 0.85 and x10)."""
    e = (pred_B1hw.clamp(min=eps).log() - gt_B1hw.clamp(min=eps).log())[valid_B1hw]
    if e.numel() == 0:
        return pred_B1hw.sum() * 0.0
    return (e.pow(2).mean() - lam * e.mean().pow(2)).clamp(min=eps).sqrt()


def scale_weights(num_scales: int, gamma: float = 0.6) -> list[float]:
    """Loss weight of scale ``k``: ``gamma**(K-1-k)``, normalised to sum 1 (increasing toward fine scales)."""
    w = [gamma ** (num_scales - 1 - k) for k in range(num_scales)]
    return [x / sum(w) for x in w]


def bin_targets(centers_BNhw: torch.Tensor, t_gt_B1hw: torch.Tensor) -> torch.Tensor:
    """Index of the candidate nearest to the GT (bin space), ``(B, h, w)``: the bin holding the GT, or the
    interval's end bin when the GT lies outside the interval."""
    return (centers_BNhw - t_gt_B1hw).abs().argmin(dim=1)


def dar_loss(out: DAROutput, gt_B1HW: torch.Tensor, valid_B1HW: torch.Tensor, bins: DepthBins, lam: float = 0.5,
             gamma: float = 0.6, ce_weight: float = 0.1) -> tuple[torch.Tensor, dict[str, list[torch.Tensor]]]:
    """DAR's training loss (the paper's is not public; a documented choice), summed over scales with the
    weights of :func:`scale_weights` (increasing toward fine scales):

    * SILog of ``D_k`` against the GT area-pooled over its valid pixels to scale ``k``;
    * ``ce_weight`` x cross-entropy of ``r_k`` against the candidate nearest to the pooled GT (the ordinal
      bin classification; it keeps gradients alive where the softmax saturates on a wrong end bin, which
      the expectation alone does not).

    Returns the total and ``{"silog": [...], "ce": [...]}`` per scale.
    """
    terms: dict[str, list[torch.Tensor]] = {"silog": [], "ce": []}
    for d_B1hw, logits_BNhw, centers_BNhw in zip(out.depth, out.logits, out.centers):
        gt, ok_B1hw = valid_area_pool(gt_B1HW, valid_B1HW, tuple(d_B1hw.shape[-2:]))
        terms["silog"].append(silog_loss(d_B1hw, gt, ok_B1hw, lam))
        t_gt = bins.to_bin_space(gt.clamp(bins.min_depth, bins.max_depth))
        ce_Bhw = F.cross_entropy(logits_BNhw, bin_targets(centers_BNhw.detach(), t_gt), reduction="none")
        ok_Bhw = ok_B1hw[:, 0]
        terms["ce"].append(ce_Bhw[ok_Bhw].mean() if ok_Bhw.any() else ce_Bhw.sum() * 0.0)
    w = scale_weights(len(out.depth), gamma)
    total = sum(wk * (s + ce_weight * c) for wk, s, c in zip(w, terms["silog"], terms["ce"]))
    return total, terms


register_model_kind("dar", lambda d: DARModel(DARConfig.from_dict(d)), lambda m: m.cfg.to_dict())
register_presets("dar", DAR_PRESETS, create_dar)

__all__ = ["DARConfig", "DAR_PRESETS", "DARModel", "DAROutput", "ConvEncoder", "letterbox", "BinInjection", "ConvGRUCell",
           "LayerNorm2d", "create_dar", "timm_backbone", "dar_loss", "bin_targets", "silog_loss", "valid_area_pool",
           "scale_weights"]
