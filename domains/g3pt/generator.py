"""G3PT's Cross-scale Querying Transformer: next-scale prediction over levels of detail of unordered tokens
(Zhang, Xiong, Xu, arXiv 2409.06322, "CAR" stage, Sec. 3).

The core :class:`~scalear.transformer.NextScaleTransformer` runs over the tokenizer's 1-D level schedule
(:class:`~scalear.domains.g3pt.tokenizer.CrossScaleQuantizer`; ``tiny``: 1 + 4 + 16 + 64 = 85 tokens, vocabulary
``2^d``). The tokens of level ``k`` attend to every token of their own and all coarser levels through the
block-causal mask, which is G3PT's "cross-scale querying": the level's input tokens are the cross-scale query
``down_k(f_hat_{k-1})`` of the running reconstruction by the tokenizer's learnable down-sampling queries, so the
transformer never needs an order of the points or tokens. The core's learned positional embedding of every
token position (``pos_1LC``) is the identity of a *slot* (one down-sampling query); there is no sequence order
inside a level. Everything else (AdaLN conditioning, start token, KV cache, sampling) is the core's.

Conditions (``condition``):

* ``"class"``: a class label (start token and AdaLN; label ``num_classes`` is the null class of CFG);
* ``"image"`` (G3PT's single-image-to-3D): an image ``(B, C, S, S)`` through :class:`ImageEncoder`, a small CNN
  whose patch tokens are the cross-attention context of every block and whose pooled feature is the start token
  and AdaLN condition. **Deviations**: G3PT uses a pretrained image encoder on RGB renders (details not given);
  no pretrained weights are available here, so the CNN is trained with the transformer, and the condition is the
  4-channel depth + normal render of the mesh (SAR3D's, ray-cast with open3d: the offscreen RGB renderer needs a
  display), from :class:`~scalear.datasets.pointclouds.PointCloudDataModule` with ``image_size``. Text
  conditioning is not implemented.

Classifier-free guidance: the condition is dropped with probability ``cond_drop_rate`` (0.1) in training;
sampling uses VAR's linear guidance ramp (:func:`scalear.sampling.sample`); the defaults (cfg 3, top-k 0,
top-p 0.9) are choices, G3PT does not report its own.

Example:
    >>> from scalear.domains.g3pt.tokenizer import create_tokenizer
    >>> tok = create_tokenizer("tiny").eval()
    >>> gen = create_generator("tiny", tokenizer=tok, num_classes=3).eval()
    >>> idx = gen.generate(tok, labels=torch.tensor([0, 2]), seed=0)
    >>> [tuple(i.shape) for i in idx]
    [(2, 1), (2, 4), (2, 16), (2, 64)]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from scalear.domains.g3pt.tokenizer import G3PTTokenizer
from scalear.gen3d.conditioning import ConditionalGenerator, ConditionalGeneratorConfig, ImageEncoder
from scalear.io import register_model_kind
from scalear.registry import register_presets
from scalear.schedules import ScaleSchedule


@dataclass
class G3PTGeneratorConfig(ConditionalGeneratorConfig):
    """Hyper-parameters of :class:`G3PTGenerator`: the shared fields of
    :class:`~scalear.gen3d.conditioning.ConditionalGeneratorConfig` (``class_names`` included) with G3PT's defaults
    (sampling cfg 3, top-k 0, top-p 0.9; condition images are the data's 4-channel depth + normal renders of 64 px);
    ``patch_nums`` are the tokenizer's tokens per level of detail (1D schedule)."""

    what = "G3PT"
    renamed = {"sizes": "patch_nums", "cfg": "guidance"}
    schedule_layout = staticmethod(ScaleSchedule.seq_1d)

    vocab_size: int = 1024
    latent_dim: int = 64
    guidance: float = 3.0
    top_k: int = 0
    top_p: float = 0.9
    patch_nums: tuple[int, ...] = (1, 4, 16, 64)


#: ``tiny``: 4 blocks of width 128 (CPU); ``small``: 8 x 384; ``paper``: a guess at G3PT's scale (its scaling study
#: trains a family of sizes; exact widths are not given), VAR-d24-like.
G3PT_GENERATOR_PRESETS: dict[str, G3PTGeneratorConfig] = {
    "tiny": G3PTGeneratorConfig(),
    "small": G3PTGeneratorConfig(vocab_size=4096, latent_dim=256, patch_nums=(1, 4, 16, 64, 256),
                                 transformer=dict(depth=8, width=384, num_heads=6, drop_path_rate=0.0),
                                 encoder_channels=(32, 64, 128, 256)),
    "paper": G3PTGeneratorConfig(vocab_size=65536, latent_dim=768, patch_nums=(1, 4, 16, 64, 256, 1024),
                                 transformer=dict(depth=24, width=1536, num_heads=16, drop_path_rate=0.1,
                                                  init_adaln_gamma=1e-4),
                                 image_size=256, encoder_channels=(64, 128, 256, 1024)),
}


def generator_config(name: str = "tiny", tokenizer: G3PTTokenizer | None = None, **overrides: Any) -> G3PTGeneratorConfig:
    """The preset ``name`` with overrides (a ``transformer`` dict is merged into the preset's); ``tokenizer`` fixes
    ``vocab_size``, ``latent_dim`` and ``patch_nums``."""
    q = tokenizer.quantize if tokenizer is not None else None
    fixed = None if q is None else dict(vocab_size=q.vocab_size, latent_dim=q.dim, patch_nums=list(q.patch_nums))
    return G3PTGeneratorConfig.from_preset(G3PT_GENERATOR_PRESETS, name, fixed, **overrides)


def create_generator(name: str = "tiny", tokenizer: G3PTTokenizer | None = None, **overrides: Any) -> "G3PTGenerator":
    """Build a :data:`G3PT_GENERATOR_PRESETS` generator matching ``tokenizer`` (see :func:`generator_config`)."""
    return G3PTGenerator(generator_config(name, tokenizer, **overrides))


class G3PTGenerator(ConditionalGenerator):
    """The Cross-scale Querying Transformer (see the module docstring); conditions, sampling and CFG are
    :class:`~scalear.gen3d.conditioning.ConditionalGenerator`'s."""

    scalear_kind = "g3pt_generator"

    def __init__(self, cfg: G3PTGeneratorConfig | None = None):
        super().__init__(cfg or G3PTGeneratorConfig())

    def loss(self, tokenizer: G3PTTokenizer, points_BN3: torch.Tensor, labels: torch.Tensor | None = None,
             images: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """Next-scale cross-entropy of the (frozen) tokenizer's tokens of ``points``; logs ``ce`` and ``acc``."""
        idx = tokenizer.points_to_indices(points_BN3)
        logits = self(tokenizer.quantize.teacher_forcing_input(idx), labels, images)
        target = torch.cat(idx, dim=1)
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))
        return ce, {"ce": float(ce.detach()), "acc": float((logits.argmax(-1) == target).float().mean())}

    def decode_meshes(self, tokenizer: G3PTTokenizer, indices: list[torch.Tensor], resolution: int = 64) -> list:
        return tokenizer.indices_to_meshes(indices, resolution)


register_model_kind("g3pt_generator", lambda d: G3PTGenerator(G3PTGeneratorConfig.from_dict(d)), lambda m: m.cfg.to_dict())
register_presets("g3pt_generator", G3PT_GENERATOR_PRESETS, create_generator)

__all__ = ["G3PT_GENERATOR_PRESETS", "G3PTGenerator", "G3PTGeneratorConfig", "ImageEncoder", "create_generator",
           "generator_config"]
