"""Scale schedules: the token-map shape of every scale, coarse to fine (VAR, Tian et al. 2024, Sec. 3.2).

A schedule fixes how a latent is cut into scales and how the scales are laid out in the flattened token
sequence that the next-scale transformer reads. Four layouts are supported; latents have these shapes:

========== ======================= ======================== ===========================
kind       scale shape             latent tensor            tokens per scale
========== ======================= ======================== ===========================
``1d``     ``(n,)``                ``(B, C, N)``            ``n``
``2d``     ``(h, w)``              ``(B, C, H, W)``         ``h * w``
``3d``     ``(d, h, w)``           ``(B, C, D, H, W)``      ``d * h * w``
``triplane`` ``(h, w)`` per plane  ``(B, C, 3, H, W)``      ``3 * h * w`` (plane-major)
========== ======================= ======================== ===========================

The last scale equals the full latent resolution. Within a scale, tokens are flattened in row-major order
(plane first for triplanes, as SAR3D concatenates its three planes).

Example:
    >>> s = ScaleSchedule.var_2d(256)
    >>> s.num_scales, s.total_tokens, s.offsets[-1]
    (10, 680, 424)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Sequence

import torch

Kind = Literal["1d", "2d", "3d", "triplane"]
_NDIM: dict[str, int] = {"1d": 1, "2d": 2, "3d": 3, "triplane": 2}

#: VAR's released schedules (utils/arg_util.py `--pn`), keyed by image resolution at patch size 16.
VAR_PATCH_NUMS: dict[int, tuple[int, ...]] = {
    256: (1, 2, 3, 4, 5, 6, 8, 10, 13, 16),
    512: (1, 2, 3, 4, 6, 9, 13, 18, 24, 32),
    1024: (1, 2, 3, 4, 5, 7, 9, 12, 16, 21, 27, 36, 48, 64),
}


@dataclass(frozen=True)
class ScaleSchedule:
    """Token-map shapes per scale for one latent layout.

    Args:
        kind: ``"1d"``, ``"2d"``, ``"3d"`` or ``"triplane"``.
        shapes: one spatial shape per scale, coarse to fine; each must be no larger than the next along every
            axis, and the last is the latent's own resolution.
    """

    kind: Kind
    shapes: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        if self.kind not in _NDIM:
            raise ValueError(f"unknown schedule kind {self.kind!r}; expected one of {sorted(_NDIM)}")
        shapes = tuple(tuple(int(v) for v in s) for s in self.shapes)
        object.__setattr__(self, "shapes", shapes)
        if not shapes:
            raise ValueError("a scale schedule needs at least one scale")
        nd = _NDIM[self.kind]
        for k, s in enumerate(shapes):
            if len(s) != nd or min(s) < 1:
                raise ValueError(f"scale {k} has shape {s}; a {self.kind} schedule needs {nd} positive sizes")
            if k and any(a < b for a, b in zip(s, shapes[k - 1])):
                raise ValueError(f"scale {k} {s} is smaller than scale {k - 1} {shapes[k - 1]}: scales must grow")

    # ---------------------------------------------------------------- constructors
    @classmethod
    def var_2d(cls, resolution: int = 256) -> "ScaleSchedule":
        """VAR's released square schedule for ``resolution`` px images (256, 512 or 1024)."""
        if resolution not in VAR_PATCH_NUMS:
            raise ValueError(f"VAR has schedules for {sorted(VAR_PATCH_NUMS)} px, not {resolution}")
        return cls.square(VAR_PATCH_NUMS[resolution])

    @classmethod
    def square(cls, patch_nums: Sequence[int]) -> "ScaleSchedule":
        """Square 2D maps ``(p, p)`` for each ``p`` in ``patch_nums``."""
        return cls("2d", tuple((p, p) for p in patch_nums))

    @classmethod
    def grid_2d(cls, final_hw: tuple[int, int], patch_nums: Sequence[int]) -> "ScaleSchedule":
        """Non-square 2D maps: the longer side follows ``patch_nums``, the shorter keeps the aspect ratio.

        >>> ScaleSchedule.grid_2d((8, 16), (1, 2, 4, 8, 16)).shapes
        ((1, 1), (1, 2), (2, 4), (4, 8), (8, 16))
        """
        h, w = final_hw
        if max(patch_nums) != max(h, w):
            raise ValueError(f"the finest patch number {max(patch_nums)} must equal the longer side of {final_hw}")
        long = max(h, w)
        shapes = [(max(1, round(p * h / long)), max(1, round(p * w / long))) for p in patch_nums]
        shapes[-1] = (h, w)
        return cls("2d", tuple(shapes))

    @classmethod
    def seq_1d(cls, patch_nums: Sequence[int]) -> "ScaleSchedule":
        """1D sequences, e.g. point-cloud levels of detail of ``patch_nums`` tokens."""
        return cls("1d", tuple((n,) for n in patch_nums))

    @classmethod
    def volume_3d(cls, patch_nums: Sequence[int]) -> "ScaleSchedule":
        """Cubic 3D volumes ``(s, s, s)``."""
        return cls("3d", tuple((s, s, s) for s in patch_nums))

    @classmethod
    def triplane(cls, patch_nums: Sequence[int]) -> "ScaleSchedule":
        """Three square planes ``(s, s)`` per scale (SAR3D's triplane latent)."""
        return cls("triplane", tuple((s, s) for s in patch_nums))

    @classmethod
    def from_dict(cls, d: dict) -> "ScaleSchedule":
        return cls(d["kind"], tuple(tuple(s) for s in d["shapes"]))

    def to_dict(self) -> dict:
        return {"kind": self.kind, "shapes": [list(s) for s in self.shapes]}

    # ---------------------------------------------------------------- layout
    @property
    def spatial_ndim(self) -> int:
        """Number of spatial axes of one map (triplanes: 2, per plane)."""
        return _NDIM[self.kind]

    @property
    def num_scales(self) -> int:
        return len(self.shapes)

    @property
    def final_shape(self) -> tuple[int, ...]:
        return self.shapes[-1]

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """Spatial shape of the full latent (triplanes include the plane axis: ``(3, H, W)``)."""
        return (3, *self.final_shape) if self.kind == "triplane" else self.final_shape

    @property
    def tokens_per_scale(self) -> tuple[int, ...]:
        planes = 3 if self.kind == "triplane" else 1
        return tuple(planes * math.prod(s) for s in self.shapes)

    @property
    def total_tokens(self) -> int:
        return sum(self.tokens_per_scale)

    @property
    def offsets(self) -> tuple[int, ...]:
        """Start of each scale in the flattened sequence (length ``num_scales``)."""
        out, acc = [], 0
        for n in self.tokens_per_scale:
            out.append(acc)
            acc += n
        return tuple(out)

    def scale_slice(self, k: int) -> slice:
        return slice(self.offsets[k], self.offsets[k] + self.tokens_per_scale[k])

    def level_ids(self, device: torch.device | str | None = None) -> torch.Tensor:
        """Scale index of every token in the flattened sequence, shape ``(L,)``."""
        counts = torch.tensor(self.tokens_per_scale, device=device)
        return torch.repeat_interleave(torch.arange(self.num_scales, device=device), counts, output_size=self.total_tokens)

    def token_shape(self, k: int) -> tuple[int, ...]:
        """Shape of scale ``k``'s token map as a tensor (triplanes: ``(3, h, w)``)."""
        return (3, *self.shapes[k]) if self.kind == "triplane" else self.shapes[k]

    def __len__(self) -> int:
        return self.num_scales

    def __repr__(self) -> str:
        shapes = ",".join("x".join(map(str, s)) for s in self.shapes)
        return f"ScaleSchedule({self.kind}: {shapes}; L={self.total_tokens})"
