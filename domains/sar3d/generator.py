"""SAR3D's generator: next-scale prediction over the multi-scale triplane tokens (Chen et al., CVPR 2025, Sec. 3.2).

The core :class:`~scalear.transformer.NextScaleTransformer` runs over the triplane schedule of
:class:`~scalear.domains.sar3d.tokenizer.TriplaneVQVAE`: scale ``k`` has ``3 s_k^2`` tokens (the three planes
concatenated, plane-major), the block-causal mask covers all scales (SAR3D ``paper``: 3 x 680 = 2040 tokens), and
the input of scale ``k + 1`` is the running triplane reconstruction area-downsampled per plane. SAR3D adds a
``plane_embed`` (``Embedding(3, C)``) to the level and positional embeddings; the core's learned embedding of
every token position (``pos_1LC``, 3 s^2 entries per scale) already tells the planes apart, so no separate plane
embedding is added.

Two conditions (``condition``):

* ``"class"``: a class label through the core's class embedding, used as the start token and the AdaLN
  condition (label ``num_classes`` is the null class of classifier-free guidance).
* ``"image"`` (SAR3D's single-image-to-3D): the 4-channel condition render (depth + normals, the data's
  ``"image"``) through :class:`~scalear.gen3d.conditioning.ImageEncoder`, whose patch tokens are the
  cross-attention context of every block (``context_dim``) and whose pooled feature is the start token and
  AdaLN condition (``cond_dim``). SAR3D uses frozen DINOv2-large patch tokens and ``pooler_output`` (1024-d);
  **deviation**: no pretrained weights can be downloaded here, so a small CNN is trained jointly with the
  transformer. SAR3D's block normalises before its cross-attention with RMSNorm; the core uses LayerNorm.

Classifier-free guidance: the condition (label, or pooled feature *and* context tokens) is dropped with
probability 0.1 in training (``cond_drop_rate``); sampling defaults are SAR3D's ``test.py``: cfg 4 with VAR's
linear ramp over the scales, top-k 10, top-p 0.5 (:func:`scalear.sampling.sample`).

Example:
    >>> from scalear.domains.sar3d.tokenizer import create_tokenizer
    >>> tok = create_tokenizer("tiny").eval()
    >>> gen = create_generator("tiny", tokenizer=tok, num_classes=3).eval()
    >>> idx = gen.generate(tok, labels=torch.tensor([0, 2]), seed=0)
    >>> [tuple(i.shape) for i in idx][-1]
    (2, 192)
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch

from scalear.domains.sar3d.mesh import EmptyFieldError, extract_mesh, sdf_to_grid
from scalear.domains.sar3d.tokenizer import TriplaneVQVAE
from scalear.gen3d.conditioning import ConditionalGenerator, ConditionalGeneratorConfig
from scalear.io import register_model_kind
from scalear.registry import register_presets
from scalear.schedules import ScaleSchedule


# ------------------------------------------------------------------------------------------- config
@dataclass
class SAR3DGeneratorConfig(ConditionalGeneratorConfig):
    """Hyper-parameters of :class:`SAR3DGenerator`: the shared fields of
    :class:`~scalear.gen3d.conditioning.ConditionalGeneratorConfig` with SAR3D's defaults (4-channel 64 px condition
    renders; sampling as SAR3D's ``test.py``: cfg 4, top-k 10, top-p 0.5); ``patch_nums`` are the tokenizer's plane
    sides per scale (triplane schedule)."""

    what = "SAR3D"
    renamed = {"sides": "patch_nums", "cfg": "guidance"}
    schedule_layout = staticmethod(ScaleSchedule.triplane)

    vocab_size: int = 512
    latent_dim: int = 8
    image_channels: int = 4
    guidance: float = 4.0
    top_k: int = 10
    top_p: float = 0.5
    patch_nums: tuple[int, ...] = (1, 2, 3, 4, 6, 8)


#: ``tiny``: 4 blocks of width 128 (~1M parameters with the image encoder), CPU-trainable in minutes. ``small``:
#: 8 blocks of width 384. ``paper``: SAR3D's inference model, depth 24 (width 1536, 16 heads, alng 1e-4, drop path
#: 0.1), with a 256 px image encoder giving 16 x 16 context tokens of width 1024 (DINOv2-large's width).
GENERATOR_PRESETS: dict[str, SAR3DGeneratorConfig] = {
    "tiny": SAR3DGeneratorConfig(),
    "small": SAR3DGeneratorConfig(patch_nums=(1, 2, 3, 4, 5, 6, 8, 10, 13, 16), vocab_size=4096,
                                  transformer=dict(depth=8, width=384, num_heads=6, drop_path_rate=0.0),
                                  encoder_channels=(32, 64, 128, 256)),
    "paper": SAR3DGeneratorConfig(patch_nums=(1, 2, 3, 4, 5, 6, 8, 10, 13, 16), vocab_size=16384,
                                  transformer=dict(depth=24, width=1536, num_heads=16, drop_path_rate=0.1,
                                                   init_adaln_gamma=1e-4),
                                  image_size=256, encoder_channels=(64, 128, 256, 1024)),
}


def generator_config(name: str = "tiny", tokenizer: TriplaneVQVAE | None = None, **overrides: Any) -> SAR3DGeneratorConfig:
    """The :data:`GENERATOR_PRESETS` config ``name`` with overrides (a ``transformer`` dict is merged into the
    preset's); ``tokenizer`` fixes ``vocab_size``, ``latent_dim`` and ``patch_nums``."""
    q = tokenizer.quantize if tokenizer is not None else None
    fixed = None if q is None else dict(vocab_size=q.vocab_size, latent_dim=q.dim, patch_nums=[s[0] for s in q.schedule.shapes])
    return SAR3DGeneratorConfig.from_preset(GENERATOR_PRESETS, name, fixed, **overrides)


def create_generator(name: str = "tiny", tokenizer: TriplaneVQVAE | None = None, **overrides: Any) -> "SAR3DGenerator":
    """Build a :data:`GENERATOR_PRESETS` generator matching ``tokenizer`` (see :func:`generator_config`)."""
    return SAR3DGenerator(generator_config(name, tokenizer, **overrides))


# ------------------------------------------------------------------------------------------- generator
class SAR3DGenerator(ConditionalGenerator):
    """The SAR3D generator (see the module docstring): image encoder (image condition) + next-scale transformer;
    conditions, sampling and CFG are :class:`~scalear.gen3d.conditioning.ConditionalGenerator`'s."""

    scalear_kind = "sar3d_generator"

    def __init__(self, cfg: SAR3DGeneratorConfig | None = None):
        super().__init__(cfg or SAR3DGeneratorConfig())

    def decode_meshes(self, tokenizer: TriplaneVQVAE, indices: list[torch.Tensor], resolution: int = 64) -> list:
        return indices_to_meshes(tokenizer, indices, resolution)


# ------------------------------------------------------------------------------------------- decoding
@torch.no_grad()
def indices_to_sdf_grids(tokenizer: TriplaneVQVAE, indices: list[torch.Tensor], resolution: int = 64,
                         chunk: int = 65536, upto: int | None = None) -> torch.Tensor:
    """Per-scale indices -> dense SDF grids (B, R, R, R) at voxel centres (first ``upto`` scales)."""
    f_hat = tokenizer.indices_to_fhat(indices, upto)
    return sdf_to_grid(tokenizer.sdf_fn(f_hat), resolution, chunk, f_hat.shape[0], f_hat.device)


@torch.no_grad()
def indices_to_meshes(tokenizer: TriplaneVQVAE, indices: list[torch.Tensor], resolution: int = 64,
                      chunk: int = 65536, upto: int | None = None) -> list:
    """Per-scale indices -> one mesh per object; ``None`` (with a warning) where the decoded field is empty/full."""
    meshes = []
    for b, grid in enumerate(indices_to_sdf_grids(tokenizer, indices, resolution, chunk, upto)):
        try:
            meshes.append(extract_mesh(grid))
        except EmptyFieldError as e:
            warnings.warn(f"object {b}: {e}; no mesh", stacklevel=2)
            meshes.append(None)
    return meshes


register_model_kind("sar3d_generator", lambda d: SAR3DGenerator(SAR3DGeneratorConfig.from_dict(d)),
                    lambda m: m.cfg.to_dict())
register_presets("sar3d_generator", GENERATOR_PRESETS, create_generator)
