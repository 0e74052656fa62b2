"""Recursive ordinal depth bins: DAR's multiway-tree bins (MTBin) for the granularity autoregression.

DAR (Wang et al., CVPR 2025, Sec. 3.3 "granularity autoregression", Fig. 3) "recursively discretizes the
entire depth range into more compact intervals": at step ``k`` every pixel has ``N`` bin candidates
``c_k`` inside an interval around the previous prediction, and the depth is the softmax-weighted sum
``D_k = sum_i softmax(r_k)_i * c_{k,i}`` (AdaBins-style). The paper's exact branching factor and interval
formula are not public; this module makes the following documented choice:

* Bins live in a *bin space* ``t``: ``t = ln d`` (``log_space=True``) or ``t = d``; the range is
  ``[t_min, t_max] = [t(min_depth), t(max_depth)]``.
* Step 0: one interval, the whole range, split into ``N`` uniform bins (centres ``c_{0,i}``).
* Step ``k > 0``: the interval width shrinks by ``shrink`` (``W_k = W_{k-1} / shrink``); the new interval
  is centred on the previous prediction and then shifted (clipped) to lie inside the previous interval, so
  intervals nest like the nodes of a tree: every candidate of step ``k`` lies inside step ``k-1``'s interval.
  It is split into ``N`` uniform bins.
* The expectation is taken in bin space (``t_k = sum_i p_i c_{k,i}``, ``d_k = exp(t_k)`` in log space), so the
  prediction always lies inside its interval, which keeps the nesting valid after bilinear upsampling too (a
  convex combination of per-pixel intervals of equal width contains the same convex combination of
  predictions).

Tensors: ``lo_B1hw`` is the lower end of each pixel's interval in bin space; every pixel of a step shares the
width ``W_k`` (a Python float), so an interval is ``[lo, lo + W_k]``.

Example:
    >>> bins = DepthBins(min_depth=1.0, max_depth=5.0, num_bins=4, log_space=False, shrink=2.0)
    >>> lo_B1hw = bins.initial_interval(1, (1, 1))
    >>> bins.centers(lo_B1hw, 0)[0, :, 0, 0].tolist()
    [1.5, 2.5, 3.5, 4.5]
"""

from __future__ import annotations

import math

import torch


class DepthBins:
    """The MTBin interval tree of one depth range (no parameters).

    Args:
        min_depth, max_depth: metres, the range the bins cover.
        num_bins: candidates per step ``N``.
        log_space: bins uniform in ``ln d`` (True) or in ``d`` (False).
        shrink: interval width ratio between consecutive steps (``>= 1``; 1 keeps the width).
    """

    def __init__(self, min_depth: float, max_depth: float, num_bins: int, log_space: bool = True, shrink: float = 2.0):
        if not 0 < min_depth < max_depth:
            raise ValueError(f"need 0 < min_depth < max_depth, got {min_depth}, {max_depth}")
        if num_bins < 2:
            raise ValueError(f"need at least 2 bins per step, got {num_bins}")
        if shrink < 1:
            raise ValueError(f"shrink must be >= 1 (intervals may not grow), got {shrink}")
        self.min_depth, self.max_depth, self.num_bins = float(min_depth), float(max_depth), int(num_bins)
        self.log_space, self.shrink = bool(log_space), float(shrink)
        self.t_min, self.t_max = self.to_bin_space(self.min_depth), self.to_bin_space(self.max_depth)

    # ---------------------------------------------------------------- spaces
    def to_bin_space(self, depth):
        """Depth (metres; float or tensor) -> bin space ``t``."""
        if self.log_space:
            return math.log(depth) if isinstance(depth, (int, float)) else torch.log(depth)
        return depth

    def to_depth(self, t):
        """Bin space ``t`` -> depth in metres."""
        if self.log_space:
            return math.exp(t) if isinstance(t, (int, float)) else torch.exp(t)
        return t

    def width(self, step: int) -> float:
        """Interval width ``W_k = (t_max - t_min) / shrink**k`` of step ``k`` in bin space."""
        return (self.t_max - self.t_min) / self.shrink**step

    # ---------------------------------------------------------------- intervals
    def initial_interval(self, batch_size: int, hw: tuple[int, int], device=None, dtype=torch.float32) -> torch.Tensor:
        """Step 0: ``lo`` of the whole range, ``(B, 1, h, w)``."""
        return torch.full((batch_size, 1, *hw), self.t_min, device=device, dtype=dtype)

    def refine_interval(self, lo_prev_B1hw: torch.Tensor, t_prev_B1hw: torch.Tensor, step: int) -> torch.Tensor:
        """Step ``k >= 1``: ``lo_k`` of the interval of width ``W_k`` centred on the previous prediction
        ``t_prev`` and clipped into the previous interval ``[lo_prev, lo_prev + W_{k-1}]``."""
        if step < 1:
            raise ValueError("refine_interval is for steps >= 1; step 0 uses initial_interval")
        w_prev, w = self.width(step - 1), self.width(step)
        lo_B1hw = t_prev_B1hw - w / 2
        return torch.minimum(torch.maximum(lo_B1hw, lo_prev_B1hw), lo_prev_B1hw + (w_prev - w))

    def centers(self, lo_B1hw: torch.Tensor, step: int) -> torch.Tensor:
        """Bin-space centres ``c_{k,i} = lo + (i + 1/2) W_k / N`` of step ``k``: ``(B, N, h, w)``."""
        frac_N = (torch.arange(self.num_bins, device=lo_B1hw.device, dtype=lo_B1hw.dtype) + 0.5) / self.num_bins
        return lo_B1hw + self.width(step) * frac_N.view(1, -1, 1, 1)

    def expectation(self, logits_BNhw: torch.Tensor, centers_BNhw: torch.Tensor) -> torch.Tensor:
        """``t = sum_i softmax(r)_i c_i`` in bin space, ``(B, 1, h, w)`` (DAR's ``D_k``, before ``to_depth``)."""
        return (logits_BNhw.softmax(dim=1) * centers_BNhw).sum(dim=1, keepdim=True)

    def normalize(self, t: torch.Tensor) -> torch.Tensor:
        """Bin-space values mapped to ``[0, 1]`` over the range (features for the bin embedding)."""
        return (t - self.t_min) / (self.t_max - self.t_min)
