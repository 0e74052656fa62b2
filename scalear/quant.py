"""Multi-scale residual vector quantization (VAR, Tian et al. 2024, Sec. 3.2 and Algorithms 1-2).

One codebook is shared by every scale. Encoding walks the scales coarse to fine: the residual ``f - f_hat`` is
area-downsampled to the scale's token map, each token is replaced by its nearest code (L2, or cosine when
``use_cosine``), the code map is upsampled back to full resolution (linear in 1D, bicubic in 2D and per
triplane plane, trilinear in 3D), passed through the residual convolution ``phi`` and added to ``f_hat``.

``phi`` follows VAR's ``Phi``: ``h * (1 - r) + conv(h) * r`` with ``r = 0.5``; ``phi_share`` picks VAR's
variants: 0 = one conv per scale, 1 = one shared conv, ``K > 1`` = K convs partially shared across scales
(VAR's default, K = 4), each scale using the conv whose tick is nearest to ``k / (num_scales - 1)``.

Beyond VAR's code this module restarts dead codes (codes unused for a while are re-seeded from current
residuals), one of the fixes for the codebook collapse users report at the smallest scales. The replacements are
drawn from the global batch (gathered from every process under DDP) with a generator seeded by the forward-call
count, so restarts are the same in a one-process and a multi-process run of the same global batch, and again
after a resume (the call count is a buffer, saved with the weights).

Tensor names carry shape suffixes: ``f_BC*`` latent maps, ``idx_Bn`` token indices, ``x_BnC`` token vectors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from scalear.schedules import ScaleSchedule

def gather_batches(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (batch first) of every process in rank order; ``x`` itself outside distributed runs.
    Processes may hold batches of different sizes."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    world = dist.get_world_size()
    sizes = torch.tensor([x.shape[0]], device=x.device)
    all_sizes = [torch.zeros_like(sizes) for _ in range(world)]
    dist.all_gather(all_sizes, sizes)
    most = int(max(s.item() for s in all_sizes))
    padded = torch.cat([x, x.new_zeros(most - x.shape[0], *x.shape[1:])]) if x.shape[0] < most else x
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(s.item())] for p, s in zip(parts, all_sizes)])


_UP_MODE = {"1d": "linear", "2d": "bicubic", "3d": "trilinear", "triplane": "bicubic"}
_CONV = {"1d": nn.Conv1d, "2d": nn.Conv2d, "3d": nn.Conv3d, "triplane": nn.Conv2d}


# ------------------------------------------------------------------------------ layout helpers
def _planes_to_batch(f: torch.Tensor) -> torch.Tensor:
    """(B, C, 3, H, W) -> (B*3, C, H, W)."""
    B, C, P, H, W = f.shape
    return f.permute(0, 2, 1, 3, 4).reshape(B * P, C, H, W)


def _batch_to_planes(f: torch.Tensor, planes: int = 3) -> torch.Tensor:
    """(B*3, C, H, W) -> (B, C, 3, H, W)."""
    BP, C, H, W = f.shape
    return f.reshape(BP // planes, planes, C, H, W).permute(0, 2, 1, 3, 4)


def resize(f: torch.Tensor, shape: tuple[int, ...], kind: str, up: bool) -> torch.Tensor:
    """Area-downsample (``up=False``) or upsample (``up=True``) a latent to spatial ``shape`` of one scale."""
    if kind == "triplane":
        return _batch_to_planes(resize(_planes_to_batch(f), shape, "2d", up))
    if tuple(f.shape[2:]) == tuple(shape):
        return f
    if up:
        return F.interpolate(f, size=shape, mode=_UP_MODE[kind])
    return F.interpolate(f, size=shape, mode="area")


def map_to_tokens(f: torch.Tensor) -> torch.Tensor:
    """Latent map (B, C, *spatial) -> token vectors (B, n, C) in row-major (plane-major) order."""
    return f.flatten(2).transpose(1, 2)


def tokens_to_map(x_BnC: torch.Tensor, token_shape: tuple[int, ...]) -> torch.Tensor:
    """Token vectors (B, n, C) -> latent map (B, C, *token_shape)."""
    return x_BnC.transpose(1, 2).reshape(x_BnC.shape[0], x_BnC.shape[2], *token_shape)


# ------------------------------------------------------------------------------ phi
class Phi(nn.Module):
    """VAR's residual refinement ``h * (1 - r) + conv(h) * r`` (models/quant.py ``Phi``)."""

    def __init__(self, dim: int, kind: str, ratio: float = 0.5, kernel_size: int = 3):
        super().__init__()
        self.kind, self.ratio = kind, abs(ratio)
        self.conv = _CONV[kind](dim, dim, kernel_size, padding=kernel_size // 2)

    @property
    def weight(self) -> torch.Tensor:
        return self.conv.weight

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.ratio == 0:
            return h
        if self.kind == "triplane":
            return _batch_to_planes(self._mix(_planes_to_batch(h)))
        return self._mix(h)

    def _mix(self, h: torch.Tensor) -> torch.Tensor:
        return h.mul(1 - self.ratio) + self.conv(h).mul_(self.ratio)


class PhiStack(nn.Module):
    """``share`` = 0: one ``Phi`` per scale; 1: one shared; K > 1: K partially shared (VAR's default K = 4)."""

    def __init__(self, dim: int, kind: str, num_scales: int, share: int = 4, ratio: float = 0.5, kernel_size: int = 3):
        super().__init__()
        k = num_scales if share == 0 else share
        self.qresi_ls = nn.ModuleList(Phi(dim, kind, ratio, kernel_size) for _ in range(k))
        if share == 0:
            self.scale_to_phi = list(range(num_scales))
        else:  # VAR's PhiPartiallyShared: nearest tick to k/(SN-1), computed in float64 like numpy in VAR
            ticks = np.linspace(1 / 3 / k, 1 - 1 / 3 / k, k) if k == 4 else np.linspace(1 / 2 / k, 1 - 1 / 2 / k, k)
            denom = max(num_scales - 1, 1)
            self.scale_to_phi = [int(np.argmin(np.abs(ticks - si / denom))) for si in range(num_scales)]

    def forward(self, h: torch.Tensor, scale: int) -> torch.Tensor:
        return self.qresi_ls[self.scale_to_phi[scale]](h)


# ------------------------------------------------------------------------------ the contract
@runtime_checkable
class MultiScaleQuantizer(Protocol):
    """What next-scale sampling (:func:`scalear.sampling.sample`) and teacher-forced training
    (:class:`~scalear.training.nextscale.TeacherForcedModule`) ask of a tokenizer's quantizer, which every tokenizer
    holds as its ``quantize`` attribute: :class:`MultiScaleVQ` (VAR's residual VQ, images, triplanes, grids) and
    G3PT's cross-scale quantizer implement it. ``f_hat`` is the running reconstruction in the quantizer's latent
    space; token maps have the shapes of ``schedule``."""

    schedule: ScaleSchedule
    vocab_size: int
    dim: int  #: width of a code vector (the transformer's ``latent_dim``)

    def embedding(self, idx: torch.Tensor) -> torch.Tensor:
        """Code vectors of token indices: ``(...,)`` -> ``(..., dim)``."""
        ...

    def empty_fhat(self, batch: int, device=None, dtype=None) -> torch.Tensor:
        """The reconstruction before any scale (zeros)."""
        ...

    def next_input(self, k: int, f_hat: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Add scale ``k``'s code map ``h`` to ``f_hat``; returns it and the next scale's input tokens (None after
        the last scale)."""
        ...

    def teacher_forcing_input(self, indices: list[torch.Tensor]) -> torch.Tensor:
        """The transformer's inputs for scales 1.. from the ground-truth indices of every scale, concatenated."""
        ...


# ------------------------------------------------------------------------------ VAR's quantizer
@dataclass
class QuantOutput:
    f_hat: torch.Tensor  #: quantized latent with straight-through gradients to the encoder
    loss: torch.Tensor  #: VQ loss (commitment * beta + codebook), averaged over scales
    usage: list[float]  #: per scale, % of the codebook in use (EMA of hits, VAR's statistic)
    indices: list[torch.Tensor]  #: per scale, (B, n_k) token indices


class MultiScaleVQ(nn.Module):
    """VAR's multi-scale residual quantizer, generic over 1D/2D/3D/triplane schedules.

    Args:
        vocab_size: codebook size V (VAR: 4096).
        dim: latent channels C (VAR: 32).
        schedule: token-map shape of every scale.
        beta: commitment weight (VAR: 0.25).
        use_cosine: cosine instead of L2 nearest-neighbour search (VAR's ``using_znorm``; SAR3D uses it).
        phi_ratio: mixing ratio of ``phi`` (VAR: 0.5; 0 disables phi).
        phi_share: 0 non-shared, 1 shared, K > 1 partially shared with K convs (VAR: 4).
        restart_every: in training, every this many forward calls re-seed dead codes (0 = never).
        dead_threshold: a code is dead when its EMA hit count per forward call is below this.

    Example:
        >>> q = MultiScaleVQ(64, 8, ScaleSchedule.square((1, 2, 4)))
        >>> f = torch.randn(2, 8, 4, 4)
        >>> idx = q.encode(f)
        >>> [i.shape for i in idx]
        [torch.Size([2, 1]), torch.Size([2, 4]), torch.Size([2, 16])]
        >>> q.decode(idx).shape
        torch.Size([2, 8, 4, 4])
    """

    def __init__(
        self,
        vocab_size: int,
        dim: int,
        schedule: ScaleSchedule,
        beta: float = 0.25,
        use_cosine: bool = False,
        phi_ratio: float = 0.5,
        phi_share: int = 4,
        phi_kernel: int = 3,
        restart_every: int = 0,
        dead_threshold: float = 0.03,
    ):
        super().__init__()
        self.vocab_size, self.dim, self.schedule = vocab_size, dim, schedule
        self.beta, self.use_cosine = beta, use_cosine
        self.restart_every, self.dead_threshold = restart_every, dead_threshold
        self.embedding = nn.Embedding(vocab_size, dim)
        nn.init.uniform_(self.embedding.weight, -1 / vocab_size, 1 / vocab_size)
        # VAR's module name, so that VAR's files load key for key
        self.quant_resi = PhiStack(dim, schedule.kind, schedule.num_scales, phi_share, phi_ratio, phi_kernel)
        # VAR's per-scale EMA of code hits (same name and shape, so VAR checkpoints load into it).
        self.register_buffer("ema_vocab_hit_SV", torch.zeros(schedule.num_scales, vocab_size))
        self.register_buffer("record_hit", torch.zeros((), dtype=torch.long))
        self.register_buffer("code_ema_hits_V", torch.zeros(vocab_size))  # EMA of hits per call, all scales

    # ------------------------------------------------------------------ basic ops
    @property
    def kind(self) -> str:
        return self.schedule.kind

    def lookup(self, x_NC: torch.Tensor) -> torch.Tensor:
        """Nearest code of each row of ``x_NC`` (L2 or cosine)."""
        w = self.embedding.weight.float()
        x = x_NC.float()
        if self.use_cosine:
            return (F.normalize(x, dim=-1) @ F.normalize(w, dim=-1).T).argmax(dim=-1)
        d = (x * x).sum(1, keepdim=True) + (w * w).sum(1) - 2 * (x @ w.T)
        return d.argmin(dim=-1)

    def embed(self, idx_Bn: torch.Tensor, k: int) -> torch.Tensor:
        """Codebook vectors of scale ``k``'s indices as a token map (B, C, *token_shape(k))."""
        return tokens_to_map(self.embedding(idx_Bn), self.schedule.token_shape(k))

    def add_scale(self, f_hat: torch.Tensor, h: torch.Tensor, k: int) -> torch.Tensor:
        """``f_hat + phi_k(upsample(h))``: the contribution of scale ``k``'s code map ``h``."""
        h = resize(h, self.schedule.final_shape, self.kind, up=True)
        return f_hat + self.quant_resi(h, k)

    def downsample_tokens(self, f_hat: torch.Tensor, k: int) -> torch.Tensor:
        """Area-downsample ``f_hat`` to scale ``k`` and flatten: (B, n_k, C)."""
        return map_to_tokens(resize(f_hat, self.schedule.shapes[k], self.kind, up=False))

    def empty_fhat(self, batch: int, device=None, dtype=torch.float32) -> torch.Tensor:
        return torch.zeros(batch, self.dim, *self.schedule.latent_shape, device=device, dtype=dtype)

    def _check_latent(self, f: torch.Tensor) -> None:
        want = (self.dim, *self.schedule.latent_shape)
        if tuple(f.shape[1:]) != want:
            raise ValueError(f"latent has shape {tuple(f.shape)}; this quantizer expects (B, {', '.join(map(str, want))})")

    # ------------------------------------------------------------------ training forward
    def forward(self, f: torch.Tensor) -> QuantOutput:
        """Quantize ``f`` at every scale; returns straight-through ``f_hat``, VQ loss and usage (VAR Alg. 1)."""
        self._check_latent(f)
        dtype = f.dtype
        with torch.autocast(f.device.type, enabled=False):
            f = f.float()
            f_no_grad = f.detach()
            f_rest = f_no_grad.clone()
            f_hat = torch.zeros_like(f)
            loss = f.new_zeros(())
            indices, pool = [], []
            calls = int(self.record_hit) if self.training else 0  # one host sync per step
            for k, shape in enumerate(self.schedule.shapes):
                z_BnC = map_to_tokens(resize(f_rest, shape, self.kind, up=False))
                idx = self.lookup(z_BnC.reshape(-1, self.dim)).view(z_BnC.shape[:2])
                h = self.quant_resi(resize(self.embed(idx, k), self.schedule.final_shape, self.kind, up=True), k)
                f_hat = f_hat + h
                f_rest = f_rest - h.detach()
                loss = loss + F.mse_loss(f_hat.data, f).mul(self.beta) + F.mse_loss(f_hat, f_no_grad)
                indices.append(idx)
                if self.training:
                    self._record_hits(k, idx, calls)
                    pool.append(z_BnC)
            loss = loss / self.schedule.num_scales
            f_hat = (f_hat.data - f_no_grad) + f  # straight-through estimator
            if self.training:
                self.record_hit += 1
                if self.restart_every and (calls + 1) % self.restart_every == 0:
                    self.restart_dead_codes(torch.cat(pool, dim=1), calls)
        return QuantOutput(f_hat.to(dtype), loss, self.usage_percent(), indices)

    # ------------------------------------------------------------------ usage and restarts
    @torch.no_grad()
    def _record_hits(self, k: int, idx: torch.Tensor, calls: int) -> None:
        hits = torch.bincount(idx.flatten(), minlength=self.vocab_size).float()
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(hits)
        first = calls == 0
        m = 0.9 if calls < 100 else 0.99  # VAR's schedule
        self.ema_vocab_hit_SV[k] = hits if first else self.ema_vocab_hit_SV[k] * m + hits * (1 - m)
        if k == 0:
            self._step_hits = hits.clone()
        else:
            self._step_hits += hits
        if k == self.schedule.num_scales - 1:
            self.code_ema_hits_V.copy_(self._step_hits if first else self.code_ema_hits_V * 0.9 + self._step_hits * 0.1)

    def usage_percent(self) -> list[float]:
        """Per scale, the % of codes hit at least 8% as often as under uniform use of that scale's tokens.

        VAR's margin uses the full-resolution token count at every scale, which makes small scales look
        collapsed by construction; relative to each scale's own count, collapse there is visible for real."""
        out = []
        for k in range(self.schedule.num_scales):
            hits = self.ema_vocab_hit_SV[k]
            margin = hits.sum() / self.vocab_size * 0.08
            out.append(float((hits >= margin).float().mean() * 100) if hits.sum() > 0 else 0.0)
        return out

    @torch.no_grad()
    def restart_dead_codes(self, pool_BTC: torch.Tensor, seed: int = 0) -> int:
        """Re-seed codes whose EMA hits fall below ``dead_threshold`` with random token vectors of the global batch.

        ``pool_BTC`` holds this process's samples (B, tokens, C); under DDP the pools of all processes are gathered
        in rank order, which is the order of the global batch (see :class:`~scalear.training.loader.ResumableSampler`).
        Picks and jitter come from a generator seeded by ``seed`` (the forward-call count), identical on every
        process. Returns how many codes were restarted.
        """
        dead = self.code_ema_hits_V < self.dead_threshold
        n = int(dead.sum())
        if n == 0 or pool_BTC.numel() == 0:
            return 0
        pool_NC = gather_batches(pool_BTC.float().contiguous()).reshape(-1, pool_BTC.shape[-1])
        g = torch.Generator(device=pool_NC.device).manual_seed(0x5CA1EA4 + seed)
        pick = torch.randint(0, pool_NC.shape[0], (n,), device=pool_NC.device, generator=g)
        new = pool_NC[pick]
        new = new + 0.01 * new.std() * torch.randn(new.shape, device=new.device, generator=g)
        self.embedding.weight.data[dead] = new.to(self.embedding.weight.dtype)
        self.code_ema_hits_V[dead] = 1.0  # give restarted codes time to be picked
        return n

    # ------------------------------------------------------------------ inference API
    @torch.no_grad()
    def encode(self, f: torch.Tensor) -> list[torch.Tensor]:
        """Latent -> per-scale token indices ``[(B, n_k)]`` (VAR ``f_to_idxBl_or_fhat``)."""
        return self._encode(f)[0]

    @torch.no_grad()
    def encode_fhats(self, f: torch.Tensor) -> list[torch.Tensor]:
        """Latent -> cumulative ``f_hat`` after each scale (the last one is the full reconstruction)."""
        return self._encode(f)[1]

    def _encode(self, f: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        self._check_latent(f)
        f = f.float()
        f_rest, f_hat = f.clone(), torch.zeros_like(f)
        indices, fhats = [], []
        for k, shape in enumerate(self.schedule.shapes):
            z_BnC = map_to_tokens(resize(f_rest, shape, self.kind, up=False))
            idx = self.lookup(z_BnC.reshape(-1, self.dim)).view(z_BnC.shape[:2])
            h = self.quant_resi(resize(self.embed(idx, k), self.schedule.final_shape, self.kind, up=True), k)
            f_hat, f_rest = f_hat + h, f_rest - h
            indices.append(idx)
            fhats.append(f_hat.clone())
        return indices, fhats

    @torch.no_grad()
    def decode(self, indices: list[torch.Tensor], upto: int | None = None) -> torch.Tensor:
        """Per-scale indices -> ``f_hat``, summing the first ``upto`` scales (all by default)."""
        if len(indices) > self.schedule.num_scales:
            raise ValueError(f"got {len(indices)} scales of indices; the schedule has {self.schedule.num_scales}")
        f_hat = self.empty_fhat(indices[0].shape[0], indices[0].device)
        for k, idx in enumerate(indices[:upto]):
            f_hat = self.add_scale(f_hat, self.embed(idx, k), k)
        return f_hat

    @torch.no_grad()
    def teacher_forcing_input(self, indices: list[torch.Tensor]) -> torch.Tensor:
        """Transformer inputs for scales 1..K-1 from ground-truth indices: (B, L - n_0, C) (VAR
        ``idxBl_to_var_input``). The input of scale k+1 is the running ``f_hat`` area-downsampled to it."""
        f_hat = self.empty_fhat(indices[0].shape[0], indices[0].device)
        out = []
        for k in range(self.schedule.num_scales - 1):
            f_hat = self.add_scale(f_hat, self.embed(indices[k], k), k)
            out.append(self.downsample_tokens(f_hat, k + 1))
        if not out:
            return f_hat.new_zeros(f_hat.shape[0], 0, self.dim)
        return torch.cat(out, dim=1)

    def next_input(self, k: int, f_hat: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One sampling step (VAR ``get_next_autoregressive_input``): add scale ``k``'s code map ``h`` to
        ``f_hat`` and return ``(f_hat, input tokens of scale k+1)``; the second is None after the last scale."""
        f_hat = self.add_scale(f_hat, h, k)
        if k == self.schedule.num_scales - 1:
            return f_hat, None
        return f_hat, self.downsample_tokens(f_hat, k + 1)
