"""Lookup-free quantization (LFQ; Yu et al., "Language Model Beats Diffusion", MAGVIT-v2, ICLR 2024, Sec. 3.1).

LFQ has no codebook to search: a ``d``-channel latent is quantized channel by channel to its sign, so the implicit
codebook is the ``2^d`` corners of a hypercube and a token's index is its bit pattern,

    ``q_i = s * sign(z_i)`` with ``sign(z) = +1 if z > 0 else -1``,    ``index = sum_i [q_i > 0] * 2^i``

(bit ``i`` of the index is channel ``i``, least significant first). ``s`` is ``code_scale``: 1 as in MAGVIT-v2
(the default), or ``1 / sqrt(d)`` with ``normalize=True``, which puts every code on the unit sphere like
Infinity's BSQ (Han et al., "Infinity: Scaling Bitwise AutoRegressive Modeling for High-Resolution Image Synthesis", CVPR 2025). Gradients pass straight through (``z + sg(q - z)``).

Losses (returned by :meth:`LookupFreeQuantizer.forward`, unweighted):

* **commitment** ``mean((z - sg(q))^2)`` (MAGVIT-v2 / VQ-VAE's beta term; there is no codebook term since the
  codes are fixed);
* **entropy** ``E_z[H(p(.|z))] - gamma * H(E_z[p(.|z)])`` (MAGVIT-v2 Eq. 5) with the soft code assignment
  ``p(c|z) ∝ exp(-||z - c||^2 / tau)``. Confident per-token assignments lower the first term; spreading the
  tokens over the whole codebook raises the second (the codebook entropy), so the loss is minimal, ``-gamma d
  log 2``, when every token sits firmly on one code and all codes are used equally, and about 0 when all tokens
  share one code. Because the codes are the corners of a hypercube, ``p(.|z)`` factorises over channels:
  ``p(bit_i = 1 | z) = sigmoid(4 s z_i / tau)``, which makes the per-sample entropy an exact sum of binary
  entropies. The codebook entropy is computed exactly over all ``2^d`` codes when ``d <= exact_entropy_bits``
  (the mean of the product distributions, in chunks), and otherwise with the factorised upper bound
  ``sum_i H(mean_z p(bit_i | z))`` (as BSQ does for large ``d``).

Tensor names carry shape suffixes: ``z_NC`` rows of ``C = dim`` channels, ``idx_N`` indices.

Example:
    >>> q = LookupFreeQuantizer(4)
    >>> z = torch.tensor([[0.3, -2.0, 0.1, -0.5]])
    >>> out = q(z)
    >>> out.codes.tolist(), out.indices.tolist()
    ([[1.0, -1.0, 1.0, -1.0]], [5])
    >>> q.indices_to_codes(out.indices).tolist()
    [[1.0, -1.0, 1.0, -1.0]]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def binary_entropy(p: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Elementwise entropy (nats) of a Bernoulli(p)."""
    return -(p * (p + eps).log() + (1 - p) * (1 - p + eps).log())


@dataclass
class LFQOutput:
    codes: torch.Tensor  #: quantized values ``±code_scale``, same shape as the input, straight-through gradients
    indices: torch.Tensor  #: integer indices in ``[0, 2^dim)``, the input's shape without the channel axis
    commit_loss: torch.Tensor  #: ``mean((z - sg(q))^2)``
    entropy_loss: torch.Tensor  #: per-sample entropy minus ``gamma`` x codebook entropy (nats)
    per_sample_entropy: torch.Tensor  #: mean over tokens of H(p(.|z)) (nats)
    codebook_entropy: torch.Tensor  #: H(mean over tokens of p(.|z)) (nats; factorised bound for large dim)


class LookupFreeQuantizer(nn.Module):
    """Sign quantization of the last axis with ``dim`` channels into ``2^dim`` implicit codes (module docstring).

    Args:
        dim: channels (bits) per token, d; the vocabulary is ``2^d``.
        normalize: scale codes by ``1/sqrt(d)`` (BSQ-style unit-norm codes) instead of ``±1`` (MAGVIT-v2).
        tau: temperature of the soft assignment used by the entropy loss (MAGVIT-v2 uses 0.01 on ±1 codes; the
            default 1.0 keeps gradients alive for small untrained latents).
        gamma: weight of the codebook-entropy term inside the entropy loss (MAGVIT-v2: 1).
        exact_entropy_bits: compute the codebook entropy exactly up to this many bits, factorised above.
    """

    def __init__(self, dim: int, normalize: bool = False, tau: float = 1.0, gamma: float = 1.0,
                 exact_entropy_bits: int = 12):
        super().__init__()
        if not 1 <= dim <= 62:
            raise ValueError(f"LFQ needs 1 <= dim <= 62 bits (int64 indices), got {dim}")
        if tau <= 0:
            raise ValueError(f"tau must be positive, got {tau}")
        self.dim, self.normalize, self.tau, self.gamma = dim, normalize, tau, gamma
        self.exact_entropy_bits = exact_entropy_bits
        self.code_scale = 1.0 / math.sqrt(dim) if normalize else 1.0
        self.register_buffer("bit_weights", 2 ** torch.arange(dim, dtype=torch.long), persistent=False)

    @property
    def vocab_size(self) -> int:
        return 2**self.dim

    # ------------------------------------------------------------------ codes <-> indices
    def _check(self, z: torch.Tensor) -> None:
        if z.shape[-1] != self.dim:
            raise ValueError(f"LFQ over {self.dim} channels expects (..., {self.dim}), got {tuple(z.shape)}")

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """``s * sign(z)`` with zero mapped to ``-s`` (no gradient; see :meth:`forward` for the straight-through)."""
        self._check(z)
        return torch.where(z > 0, self.code_scale, -self.code_scale).to(z.dtype)

    def codes_to_indices(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (or any latent: its signs count) (..., d) -> indices (...) with bit i = channel i > 0."""
        self._check(codes)
        return ((codes > 0).long() * self.bit_weights.to(codes.device)).sum(-1)

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """Indices (...) -> codes (..., d) of ``±code_scale``, float32."""
        if indices.dtype.is_floating_point:
            raise TypeError(f"indices must be integers, got {indices.dtype}")
        bits = (indices.long().unsqueeze(-1) // self.bit_weights.to(indices.device)) % 2
        return (bits.float() * 2 - 1) * self.code_scale

    def embedding(self, indices: torch.Tensor) -> torch.Tensor:
        """Code vectors of ``indices`` (alias of :meth:`indices_to_codes`, so LFQ can stand where an
        ``nn.Embedding`` codebook is called, e.g. ``quantizer.embedding(idx)`` in :func:`scalear.sampling.sample`)."""
        return self.indices_to_codes(indices)

    def all_codes(self) -> torch.Tensor:
        """Every code, (2^d, d), row ``i`` the code of index ``i`` (only sensible for small d)."""
        return self.indices_to_codes(torch.arange(self.vocab_size, device=self.bit_weights.device))

    # ------------------------------------------------------------------ losses
    def bit_probs(self, z: torch.Tensor) -> torch.Tensor:
        """Soft probability that each bit is 1, ``sigmoid(4 s z / tau)`` (the exact factorisation of
        ``softmax_c(-||z - c||^2 / tau)`` over the hypercube codes)."""
        return torch.sigmoid(4 * self.code_scale * z.float() / self.tau)

    def entropy_terms(self, z: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
        """(per-sample entropy, codebook entropy) in nats for latents ``z`` (..., d)."""
        self._check(z)
        p_Nd = self.bit_probs(z.reshape(-1, self.dim))
        per_sample = binary_entropy(p_Nd).sum(-1).mean()
        if self.dim > self.exact_entropy_bits:
            return per_sample, binary_entropy(p_Nd.mean(0)).sum()
        bits_Vd = (self.all_codes() > 0).float()  # (V, d)
        avg_V = p_Nd.new_zeros(self.vocab_size)
        logp1, logp0 = (p_Nd + 1e-8).log(), (1 - p_Nd + 1e-8).log()
        for s in range(0, p_Nd.shape[0], chunk):  # log p(c|z) = sum_i bit_i log p_i + (1 - bit_i) log(1 - p_i)
            logp_NV = logp1[s : s + chunk] @ bits_Vd.T + logp0[s : s + chunk] @ (1 - bits_Vd).T
            avg_V = avg_V + logp_NV.exp().sum(0)
        avg_V = avg_V / p_Nd.shape[0]
        codebook = -(avg_V * (avg_V + 1e-8).log()).sum()
        return per_sample, codebook

    # ------------------------------------------------------------------ forward
    def forward(self, z: torch.Tensor) -> LFQOutput:
        """Quantize ``z`` (..., d): straight-through codes, indices and the (unweighted) losses."""
        q = self.quantize(z)
        codes = z + (q - z).detach()
        commit = F.mse_loss(z.float(), q.float())
        per_sample, codebook = self.entropy_terms(z)
        return LFQOutput(codes, self.codes_to_indices(q), commit, per_sample - self.gamma * codebook, per_sample, codebook)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, vocab={self.vocab_size}, code_scale={self.code_scale:.4g}, tau={self.tau}"


__all__ = ["LFQOutput", "LookupFreeQuantizer", "binary_entropy"]
