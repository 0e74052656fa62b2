"""SAR3D's multi-scale 3D VQ-VAE over a triplane latent (Chen et al., CVPR 2025, arXiv 2411.16856, Sec. 3.1).

The object is encoded to a continuous **triplane** latent ``(B, Cvae, 3, H, W)`` (planes xy, xz, yz), which the
core's :class:`~scalear.quant.MultiScaleVQ` (``kind="triplane"``) quantizes coarse to fine with VAR's residual
scheme: at scale ``k`` each plane's residual is area-downsampled to ``s_k x s_k``, every token is replaced by its
nearest code (**cosine** lookup, SAR3D's ``using_znorm``), the code maps are upsampled bicubically per plane,
refined by ``phi`` (``phi_ratio`` 0.5, ``phi_share`` 4, VAR's ``quant_resi`` / ``share_quant_resi``) and accumulated. **One codebook** serves all
scales and all three planes; scale ``k`` has ``3 s_k^2`` tokens, plane-major. Reference (``paper`` preset):
8 channels per plane, 16,384 codes, plane sides (VAR's patch numbers, `patch_nums`) 1..16, i.e. 3 x 680 = 2040 tokens.

Deviations from the paper (scalear has no multi-view renders, ViT weights or volume renderer on CPU):

* **Encoder.** SAR3D encodes multi-view RGB-D renders with Plücker rays through a ViT (LN3Diff). scalear encodes
  the object's **SDF grid** ``(B, 1, R, R, R)``: a 3D conv encoder down to ``latent_side^3``, then projection
  to the three axis-aligned planes by pooling (mean and max) over the orthogonal axis, then 2D residual convs
  shared by the planes plus a learned plane embedding, and a 3x3 ``quant_conv`` to ``Cvae`` channels.
* **Decoder.** SAR3D decodes the triplane with a ViT + conv super-resolution and renders it (NeRF or
  FlexiCubes). scalear's decoder is 2D convs per plane (``post_quant_conv``, residual blocks, optional 2x
  up-sampling) giving triplane *features*; the signed distance at a 3D point is a small MLP of the bilinear
  features sampled from the three planes (summed or concatenated) and the point's coordinates
  (:meth:`TriplaneVQVAE.query_sdf`). Meshes come from marching cubes (:mod:`.mesh`).
* **Loss.** SAR3D: LPIPS + L1 + depth on renders, PatchGAN. scalear: L1 between *truncated* predicted and true
  SDF at sampled points plus the VQ loss (commitment ``beta = 0.25`` as VAR) (:meth:`TriplaneVQVAE.loss`).
* Dead codes are restarted (``restart_every``), as the core quantizer offers, to keep the small CPU codebooks used.

Coordinates: the unit cube ``[-0.5, 0.5]^3``; ``grid[b, 0, i, j, k]`` is the SDF at the voxel centre
``(x_i, y_j, z_k)``, ``x_i = -0.5 + (i + 0.5) / R``; negative inside. Plane xy is indexed ``[x, y]``, xz ``[x, z]``,
yz ``[y, z]``.

Example:
    >>> tok = create_tokenizer("tiny").eval()
    >>> grid = torch.randn(2, 1, 32, 32, 32)
    >>> idx = tok.grid_to_indices(grid)
    >>> [tuple(i.shape) for i in idx][:3], tok.schedule.total_tokens
    ([(2, 3), (2, 12), (2, 27)], 390)
    >>> tok.query_sdf(tok.decode_triplane(tok.indices_to_fhat(idx)), torch.rand(2, 100, 3) - 0.5).shape
    torch.Size([2, 100])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from scalear.config_check import JSONConfig, with_overrides
from scalear.io import register_model_kind
from scalear.quant import MultiScaleVQ, QuantOutput
from scalear.registry import register_presets
from scalear.schedules import ScaleSchedule

PLANES = ("xy", "xz", "yz")


# ------------------------------------------------------------------------------------------- config
@dataclass
class TriplaneVQVAEConfig(JSONConfig):
    """Hyper-parameters of :class:`TriplaneVQVAE`.

    Args:
        grid_resolution: side R of the input SDF grid; ``R / latent_side`` must be a power of two.
        patch_nums: plane side of every scale, coarse to fine; the last is the latent side (SAR3D: 1..16).
        latent_dim: Cvae, channels per plane (SAR3D: 8).
        vocab_size: codebook size (SAR3D: 16,384), one codebook for all scales and planes.
        enc_channels: widths of the 3D encoder: a stem at full resolution, then one stride-2 stage per entry.
        plane_channels: width of the 2D plane convs (encoder and decoder).
        enc_blocks, dec_blocks: residual blocks of the plane encoder / decoder.
        decoder_upsample: 2x up-samplings of the decoded planes before the SDF MLP.
        feature_dim: channels of the decoded triplane features.
        aggregate: ``"sum"`` or ``"concat"`` of the three planes' features at a point.
        mlp_hidden, mlp_layers: the SDF MLP.
        truncation: SDF values are compared after clamping to ``[-truncation, truncation]``.
        beta, phi_ratio, phi_share: VAR / SAR3D quantizer settings (0.25, 0.5, 4).
        use_cosine: cosine code lookup (SAR3D: True).
        restart_every: re-seed dead codes every this many training forwards (0 = never).
    """

    grid_resolution: int = 32
    patch_nums: tuple[int, ...] = (1, 2, 3, 4, 6, 8)
    latent_dim: int = 8
    vocab_size: int = 512
    enc_channels: tuple[int, ...] = (8, 16, 32)
    plane_channels: int = 32
    enc_blocks: int = 1
    dec_blocks: int = 1
    decoder_upsample: int = 1
    feature_dim: int = 16
    aggregate: Literal["sum", "concat"] = "concat"
    mlp_hidden: int = 64
    mlp_layers: int = 2
    truncation: float = 0.1
    beta: float = 0.25
    phi_ratio: float = 0.5
    phi_share: int = 4
    use_cosine: bool = True
    restart_every: int = 20

    def __post_init__(self) -> None:
        self.patch_nums, self.enc_channels = tuple(int(s) for s in self.patch_nums), tuple(int(c) for c in self.enc_channels)
        ScaleSchedule.triplane(self.patch_nums)  # validates growth
        down = 2 ** (len(self.enc_channels) - 1)
        if self.grid_resolution != self.latent_side * down:
            raise ValueError(f"grid_resolution {self.grid_resolution} must be latent_side {self.latent_side} x "
                             f"2^(len(enc_channels) - 1) = {self.latent_side * down}")
        if self.aggregate not in ("sum", "concat"):
            raise ValueError(f"aggregate must be 'sum' or 'concat', got {self.aggregate!r}")
        if self.truncation <= 0:
            raise ValueError(f"truncation must be positive, got {self.truncation}")

    @property
    def latent_side(self) -> int:
        return self.patch_nums[-1]

    @property
    def schedule(self) -> ScaleSchedule:
        return ScaleSchedule.triplane(self.patch_nums)

    renamed = {"sides": "patch_nums"}  # the name in files written before the rename

    label = "triplane tokenizer"


#: ``tiny``: 32^3 grids, 8x8 planes, 6 scales (390 tokens), 512 codes, 0.14M parameters, trains on one CPU core
#: in minutes. ``small``: 64^3, 16x16 planes, SAR3D's 10 scales (2040 tokens), 4096 codes. ``paper``: SAR3D's
#: quantizer (Cvae 8, 16,384 codes, plane sides 1..16, 2040 tokens) on 64^3 grids with wider convs.
TRIPLANE_PRESETS: dict[str, TriplaneVQVAEConfig] = {
    "tiny": TriplaneVQVAEConfig(),
    "small": TriplaneVQVAEConfig(grid_resolution=64, patch_nums=(1, 2, 3, 4, 5, 6, 8, 10, 13, 16), vocab_size=4096,
                                 enc_channels=(16, 32, 64), plane_channels=64, enc_blocks=2, dec_blocks=2,
                                 feature_dim=32, mlp_hidden=128),
    "paper": TriplaneVQVAEConfig(grid_resolution=64, patch_nums=(1, 2, 3, 4, 5, 6, 8, 10, 13, 16), vocab_size=16384,
                                 enc_channels=(32, 64, 128), plane_channels=128, enc_blocks=2, dec_blocks=3,
                                 feature_dim=32, mlp_hidden=128, mlp_layers=3),
}


def tokenizer_config(name: str = "tiny", **overrides: Any) -> TriplaneVQVAEConfig:
    """The :data:`TRIPLANE_PRESETS` config ``name`` with field ``overrides``."""
    if name not in TRIPLANE_PRESETS:
        raise KeyError(f"unknown SAR3D tokenizer preset {name!r}; available: {sorted(TRIPLANE_PRESETS)}")
    return TriplaneVQVAEConfig.from_dict({**TRIPLANE_PRESETS[name].to_dict(), **overrides})


def create_tokenizer(name: str = "tiny", **overrides: Any) -> "TriplaneVQVAE":
    """Build a :data:`TRIPLANE_PRESETS` tokenizer with overrides (timm-style)."""
    return TriplaneVQVAE(tokenizer_config(name, **overrides))


# ------------------------------------------------------------------------------------------- blocks
def _gn(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, c), c, eps=1e-6)


class ResBlock2d(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(_gn(c), nn.SiLU(), nn.Conv2d(c, c, 3, padding=1),
                                  _gn(c), nn.SiLU(), nn.Conv2d(c, c, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def planes_to_batch(f_BC3HW: torch.Tensor) -> torch.Tensor:
    B, C, P, H, W = f_BC3HW.shape
    return f_BC3HW.permute(0, 2, 1, 3, 4).reshape(B * P, C, H, W)


def batch_to_planes(f_PCHW: torch.Tensor) -> torch.Tensor:
    BP, C, H, W = f_PCHW.shape
    return f_PCHW.reshape(BP // 3, 3, C, H, W).permute(0, 2, 1, 3, 4)


def project_to_planes(v_BCXYZ: torch.Tensor) -> torch.Tensor:
    """Volume features -> triplane (B, 2C, 3, S, S): mean and max over the axis orthogonal to each plane
    (xy: over z, xz: over y, yz: over x)."""
    planes = [torch.cat((v_BCXYZ.mean(d), v_BCXYZ.amax(d)), dim=1) for d in (4, 3, 2)]
    return torch.stack(planes, dim=2)


def sample_triplane(feat_BF3HW: torch.Tensor, points_BN3: torch.Tensor) -> torch.Tensor:
    """Bilinear features of the three planes at points in [-0.5, 0.5]^3: (B, N, 3, F) in plane order xy, xz, yz.

    Plane (a, b) is indexed ``[a, b]`` over the cube's extent (``align_corners=False``: the first texel's centre
    is the first voxel centre), so ``grid_sample``'s (x, y) = (b, a)."""
    B, Fc, _, H, W = feat_BF3HW.shape
    p = points_BN3.to(feat_BF3HW.dtype) * 2  # [-1, 1]
    x, y, z = p.unbind(-1)
    uv = torch.stack([torch.stack((y, x), -1), torch.stack((z, x), -1), torch.stack((z, y), -1)], dim=1)  # (B, 3, N, 2)
    out = F.grid_sample(planes_to_batch(feat_BF3HW), uv.reshape(B * 3, 1, -1, 2), mode="bilinear",
                        padding_mode="border", align_corners=False)  # (B*3, F, 1, N)
    return out.reshape(B, 3, Fc, -1).permute(0, 3, 1, 2)


# ------------------------------------------------------------------------------------------- model
class TriplaneVQVAE(nn.Module):
    """Multi-scale triplane VQ-VAE of SDF grids (see the module docstring)."""

    scalear_kind = "sar3d_tokenizer"

    def __init__(self, config: TriplaneVQVAEConfig | None = None, **overrides: Any):
        super().__init__()
        self.config = cfg = with_overrides(config or TriplaneVQVAEConfig(), overrides)
        ch, Cp = cfg.enc_channels, cfg.plane_channels
        enc = [nn.Conv3d(1, ch[0], 3, padding=1), nn.SiLU()]
        for cin, cout in zip(ch[:-1], ch[1:]):
            enc += [nn.Conv3d(cin, cout, 3, stride=2, padding=1), nn.GroupNorm(min(8, cout), cout, eps=1e-6), nn.SiLU(),
                    nn.Conv3d(cout, cout, 3, padding=1), nn.SiLU()]
        self.encoder3d = nn.Sequential(*enc)
        self.plane_in = nn.Conv2d(2 * ch[-1], Cp, 1)
        self.enc_plane_embed = nn.Parameter(torch.zeros(1, 3, Cp, 1, 1))
        self.plane_encoder = nn.Sequential(*[ResBlock2d(Cp) for _ in range(cfg.enc_blocks)], _gn(Cp), nn.SiLU())
        self.quant_conv = nn.Conv2d(Cp, cfg.latent_dim, 3, padding=1)
        self.quantize = MultiScaleVQ(cfg.vocab_size, cfg.latent_dim, cfg.schedule, beta=cfg.beta, use_cosine=cfg.use_cosine,
                                     phi_ratio=cfg.phi_ratio, phi_share=cfg.phi_share, restart_every=cfg.restart_every)
        self.post_quant_conv = nn.Conv2d(cfg.latent_dim, Cp, 3, padding=1)
        self.dec_plane_embed = nn.Parameter(torch.zeros(1, 3, Cp, 1, 1))
        dec: list[nn.Module] = [ResBlock2d(Cp) for _ in range(cfg.dec_blocks)]
        for _ in range(cfg.decoder_upsample):
            dec += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(Cp, Cp, 3, padding=1), ResBlock2d(Cp)]
        dec += [_gn(Cp), nn.SiLU(), nn.Conv2d(Cp, cfg.feature_dim, 3, padding=1)]
        self.plane_decoder = nn.Sequential(*dec)
        fin = cfg.feature_dim * (3 if cfg.aggregate == "concat" else 1) + 3
        mlp: list[nn.Module] = []
        for _ in range(cfg.mlp_layers):
            mlp += [nn.Linear(fin, cfg.mlp_hidden), nn.SiLU()]
            fin = cfg.mlp_hidden
        self.sdf_mlp = nn.Sequential(*mlp, nn.Linear(fin, 1))

    # ------------------------------------------------------------------ properties
    @property
    def schedule(self) -> ScaleSchedule:
        return self.quantize.schedule

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def check_grid(self, grid: torch.Tensor) -> None:
        R = self.config.grid_resolution
        if grid.ndim != 5 or tuple(grid.shape[1:]) != (1, R, R, R):
            raise ValueError(f"expected SDF grids (B, 1, {R}, {R}, {R}), got shape {tuple(grid.shape)}")

    # ------------------------------------------------------------------ encode / quantize
    def encode_latent(self, grid: torch.Tensor) -> torch.Tensor:
        """SDF grid (B, 1, R, R, R) -> continuous triplane latent (B, Cvae, 3, S, S)."""
        self.check_grid(grid)
        v = self.encoder3d(grid.float())
        h = self.plane_in(planes_to_batch(project_to_planes(v)))  # (B*3, Cp, S, S)
        h = h + self.enc_plane_embed.expand(grid.shape[0], -1, -1, -1, -1).reshape(-1, h.shape[1], 1, 1)
        return batch_to_planes(self.quant_conv(self.plane_encoder(h)))

    def forward(self, grid: torch.Tensor) -> tuple[torch.Tensor, QuantOutput]:
        """Encode and quantize: straight-through ``f_hat`` (B, Cvae, 3, S, S) and the quantizer's output."""
        q = self.quantize(self.encode_latent(grid))
        return q.f_hat, q

    @torch.no_grad()
    def grid_to_indices(self, grid: torch.Tensor) -> list[torch.Tensor]:
        """Per-scale token indices ``[(B, 3 s_k^2)]`` (plane-major within a scale)."""
        return self.quantize.encode(self.encode_latent(grid))

    img_to_indices = grid_to_indices  #: the name :class:`~scalear.training.nextscale.TeacherForcedModule` calls

    @torch.no_grad()
    def grid_to_fhats(self, grid: torch.Tensor) -> list[torch.Tensor]:
        """Cumulative quantized latent after each scale."""
        return self.quantize.encode_fhats(self.encode_latent(grid))

    @torch.no_grad()
    def indices_to_fhat(self, indices: list[torch.Tensor], upto: int | None = None) -> torch.Tensor:
        """Per-scale indices -> ``f_hat`` from the first ``upto`` scales (all by default)."""
        return self.quantize.decode(indices, upto)

    # ------------------------------------------------------------------ decode
    def decode_triplane(self, f_hat: torch.Tensor) -> torch.Tensor:
        """Quantized latent (B, Cvae, 3, S, S) -> triplane features (B, F, 3, S', S')."""
        h = self.post_quant_conv(planes_to_batch(f_hat.float()))
        h = h + self.dec_plane_embed.expand(f_hat.shape[0], -1, -1, -1, -1).reshape(-1, h.shape[1], 1, 1)
        return batch_to_planes(self.plane_decoder(h))

    def query_sdf(self, features: torch.Tensor, points_BN3: torch.Tensor) -> torch.Tensor:
        """Signed distance (B, N) at points (B, N, 3) in [-0.5, 0.5]^3 from decoded triplane features."""
        if points_BN3.ndim != 3 or points_BN3.shape[-1] != 3 or points_BN3.shape[0] != features.shape[0]:
            raise ValueError(f"expected points (B={features.shape[0]}, N, 3), got shape {tuple(points_BN3.shape)}")
        f_BN3F = sample_triplane(features, points_BN3)
        f = f_BN3F.flatten(2) if self.config.aggregate == "concat" else f_BN3F.sum(2)
        return self.sdf_mlp(torch.cat((f, points_BN3.to(f.dtype)), dim=-1)).squeeze(-1)

    def sdf_fn(self, f_hat: torch.Tensor):
        """A function points (B, N, 3) -> SDF (B, N) for the latent ``f_hat`` (decoded once), for :mod:`.mesh`."""
        feats = self.decode_triplane(f_hat)
        return lambda pts: self.query_sdf(feats, pts)

    @torch.no_grad()
    def reconstruct_sdf(self, grid: torch.Tensor, points_BN3: torch.Tensor, upto: int | None = None) -> torch.Tensor:
        """SDF at ``points`` of the object reconstructed from the first ``upto`` scales of its tokens."""
        f_hat = self.indices_to_fhat(self.grid_to_indices(grid), upto)
        return self.query_sdf(self.decode_triplane(f_hat), points_BN3)

    # ------------------------------------------------------------------ loss
    def loss(self, batch: dict[str, torch.Tensor], vq_weight: float = 1.0) -> tuple[torch.Tensor, dict[str, Any]]:
        """L1 between truncated predicted and true SDF at ``batch["points"]`` plus ``vq_weight`` x the VQ loss
        (the truncation of the prediction passes gradients straight through).

        Returns ``(total, logs)`` with ``sdf_l1`` (truncated), ``sdf_l1_raw``, ``vq`` and per-scale ``usage``."""
        t = self.config.truncation
        f_hat, q = self(batch["grid"])
        pred = self.query_sdf(self.decode_triplane(f_hat), batch["points"])
        target = batch["sdf"].to(pred.dtype)
        # clamp with a straight-through gradient: a prediction beyond the truncation on the wrong side of the
        # surface is still pulled back (a plain clamp has zero gradient there and leaves sign errors in place)
        pred_t = pred - (pred - pred.clamp(-t, t)).detach()
        l1 = (pred_t - target.clamp(-t, t)).abs().mean()
        total = l1 + vq_weight * q.loss
        logs = {"sdf_l1": l1.detach(), "sdf_l1_raw": (pred - target).abs().mean().detach(), "vq": q.loss.detach(),
                "usage": q.usage}
        return total, logs


register_model_kind("sar3d_tokenizer", lambda d: TriplaneVQVAE(TriplaneVQVAEConfig.from_dict(d)),
                    lambda m: m.config.to_dict())
register_presets("sar3d_tokenizer", TRIPLANE_PRESETS, create_tokenizer)
