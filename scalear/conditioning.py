"""What the conditional 3D generators share (SAR3D, G3PT): the image encoder of their image condition and the
checks and transformer conditions of their configs.

The papers condition on frozen pretrained features (SAR3D: DINOv2-large patch tokens + ``pooler_output``);
no pretrained weights can be downloaded here, so :class:`ImageEncoder` is a small CNN trained jointly with the
generator: its patch tokens are the transformer's cross-attention context (``context_dim``) and its pooled
feature the start token and AdaLN condition (``cond_dim``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from scalear.transformer import TransformerConfig


class ImageEncoder(nn.Module):
    """A small CNN over the condition image (B, C, S, S) -> patch tokens (B, T, D) and a pooled feature (B, D)."""

    def __init__(self, in_channels: int = 4, channels: tuple[int, ...] = (32, 64, 128), image_size: int = 64):
        super().__init__()
        self.in_channels, self.image_size = in_channels, image_size
        layers: list[nn.Module] = []
        cin = in_channels
        for c in channels:
            layers += [nn.Conv2d(cin, c, 3, stride=2, padding=1), nn.GroupNorm(min(8, c), c), nn.SiLU(),
                       nn.Conv2d(c, c, 3, padding=1), nn.GroupNorm(min(8, c), c), nn.SiLU()]
            cin = c
        self.body = nn.Sequential(*layers)
        side = image_size // 2 ** len(channels)
        self.num_tokens, self.dim = side * side, channels[-1]
        self.pos = nn.Parameter(torch.randn(1, self.num_tokens, self.dim) * 0.02)
        self.norm, self.pool_norm = nn.LayerNorm(self.dim), nn.LayerNorm(self.dim)

    def forward(self, image_BCSS: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        want = (self.in_channels, self.image_size, self.image_size)
        if image_BCSS.ndim != 4 or tuple(image_BCSS.shape[1:]) != want:
            raise ValueError(f"expected condition images (B, {', '.join(map(str, want))}), "
                             f"got shape {tuple(image_BCSS.shape)}")
        h = self.body(image_BCSS.float()).flatten(2).transpose(1, 2)  # (B, T, D)
        return self.norm(h + self.pos), self.pool_norm(h.mean(dim=1))


def check_generator_config(what: str, condition: str, num_classes: int, transformer: dict[str, Any],
                           derived: set[str], image_size: int, encoder_channels: tuple[int, ...]) -> None:
    """Refuse a conditional generator config that cannot be built (``what`` names the model in the errors)."""
    if condition not in ("class", "image"):
        raise ValueError(f"condition must be 'class' or 'image', got {condition!r}")
    if condition == "class" and num_classes < 1:
        raise ValueError("a class-conditional generator needs num_classes >= 1")
    if unknown := sorted(set(transformer) - (set(TransformerConfig.__dataclass_fields__) - derived)):
        raise ValueError(f"unknown or derived {what} transformer keys {unknown}")
    if image_size % 2 ** len(encoder_channels):
        raise ValueError(f"image_size {image_size} must be divisible by 2^{len(encoder_channels)}")


def condition_fields(condition: str, num_classes: int, encoder_channels: tuple[int, ...]) -> dict[str, int]:
    """The :class:`~scalear.transformer.TransformerConfig` condition fields: a class embedding, or the image
    encoder's pooled feature (AdaLN, start token) and patch tokens (cross-attention)."""
    if condition == "class":
        return {"num_classes": num_classes}
    return {"cond_dim": encoder_channels[-1], "context_dim": encoder_channels[-1]}


__all__ = ["ImageEncoder", "check_generator_config", "condition_fields"]
