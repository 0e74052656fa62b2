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
  ``"image"``) through :class:`ImageEncoder`, whose patch tokens are the cross-attention context of every block
  (``context_dim``) and whose pooled feature is the start token and AdaLN condition (``cond_dim``). SAR3D uses
  frozen DINOv2-large patch tokens and ``pooler_output`` (1024-d); **deviation**: no pretrained weights can be
  downloaded here, so a small CNN is trained jointly with the transformer. SAR3D's block normalises before its
  cross-attention with RMSNorm; the core uses LayerNorm.

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

import copy
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from scalear.domains.sar3d.mesh import EmptyFieldError, extract_mesh, sdf_to_grid
from scalear.domains.sar3d.tokenizer import TriplaneVQVAE
from scalear.conditioning import ImageEncoder, check_generator_config, condition_fields
from scalear.io import register_model_kind
from scalear.sampling import SampleOutput, sample
from scalear.schedules import ScaleSchedule
from scalear.transformer import NextScaleTransformer, TransformerConfig

Condition = Literal["class", "image"]
#: TransformerConfig fields the generator sets itself
_DERIVED = {"vocab_size", "latent_dim", "schedule", "num_classes", "cond_dim", "context_dim", "prefix_dim",
            "max_prefix_len", "cond_drop_rate"}


# ------------------------------------------------------------------------------------------- config
@dataclass
class SAR3DGeneratorConfig:
    """Hyper-parameters of :class:`SAR3DGenerator`.

    Args:
        condition: ``"class"`` or ``"image"``.
        num_classes: number of classes (``condition="class"``).
        class_names: the name of each class label (the data's ``classes``; empty: labels are unnamed).
        vocab_size, latent_dim, sides: the tokenizer's codebook size, Cvae and plane sides (set from the
            tokenizer by :func:`create_generator`).
        transformer: :class:`~scalear.transformer.TransformerConfig` fields (depth, width, heads, ...).
        image_channels, image_size: the condition render (data: 4 channels, 64 px).
        encoder_channels: widths of :class:`ImageEncoder`, one stride-2 stage each; the last is the context width.
        cond_drop_rate: condition dropout for classifier-free guidance (SAR3D: 0.1).
        cfg, top_k, top_p, temperature: sampling defaults (SAR3D: 4, 10, 0.5, 1).
    """

    condition: Condition = "class"
    num_classes: int = 4
    class_names: tuple[str, ...] = ()
    vocab_size: int = 512
    latent_dim: int = 8
    sides: tuple[int, ...] = (1, 2, 3, 4, 6, 8)
    transformer: dict[str, Any] = field(default_factory=lambda: dict(depth=4, width=128, num_heads=4, drop_path_rate=0.0))
    image_channels: int = 4
    image_size: int = 64
    encoder_channels: tuple[int, ...] = (32, 64, 128)
    cond_drop_rate: float = 0.1
    cfg: float = 4.0
    top_k: int = 10
    top_p: float = 0.5
    temperature: float = 1.0

    def __post_init__(self) -> None:
        self.sides, self.encoder_channels = tuple(int(s) for s in self.sides), tuple(int(c) for c in self.encoder_channels)
        self.class_names = tuple(str(c) for c in self.class_names)
        if self.class_names and (self.condition != "class" or len(self.class_names) != self.num_classes):
            raise ValueError(f"class_names {list(self.class_names)} need a class-conditional generator with as many "
                             f"classes (num_classes={self.num_classes})")
        check_generator_config("SAR3D", self.condition, self.num_classes, self.transformer, _DERIVED, self.image_size,
                               self.encoder_channels)
        self.transformer = dict(self.transformer)

    @property
    def schedule(self) -> ScaleSchedule:
        return ScaleSchedule.triplane(self.sides)

    def transformer_config(self) -> TransformerConfig:
        cond = condition_fields(self.condition, self.num_classes, self.encoder_channels)
        return TransformerConfig(**self.transformer, vocab_size=self.vocab_size, latent_dim=self.latent_dim,
                                 schedule=self.schedule, cond_drop_rate=self.cond_drop_rate, **cond)

    def to_dict(self) -> dict[str, Any]:
        d = copy.deepcopy(asdict(self))
        d["sides"], d["encoder_channels"] = list(self.sides), list(self.encoder_channels)
        d["class_names"] = list(self.class_names)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SAR3DGeneratorConfig":
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown SAR3D generator keys {sorted(unknown)}; allowed: {sorted(cls.__dataclass_fields__)}")
        return cls(**copy.deepcopy(d))


#: ``tiny``: 4 blocks of width 128 (~1M parameters with the image encoder), CPU-trainable in minutes. ``small``:
#: 8 blocks of width 384. ``paper``: SAR3D's inference model, depth 24 (width 1536, 16 heads, alng 1e-4, drop path
#: 0.1), with a 256 px image encoder giving 16 x 16 context tokens of width 1024 (DINOv2-large's width).
GENERATOR_PRESETS: dict[str, SAR3DGeneratorConfig] = {
    "tiny": SAR3DGeneratorConfig(),
    "small": SAR3DGeneratorConfig(sides=(1, 2, 3, 4, 5, 6, 8, 10, 13, 16), vocab_size=4096,
                                  transformer=dict(depth=8, width=384, num_heads=6, drop_path_rate=0.0),
                                  encoder_channels=(32, 64, 128, 256)),
    "paper": SAR3DGeneratorConfig(sides=(1, 2, 3, 4, 5, 6, 8, 10, 13, 16), vocab_size=16384,
                                  transformer=dict(depth=24, width=1536, num_heads=16, drop_path_rate=0.1,
                                                   init_adaln_gamma=1e-4),
                                  image_size=256, encoder_channels=(64, 128, 256, 1024)),
}


def generator_config(name: str = "tiny", tokenizer: TriplaneVQVAE | None = None, **overrides: Any) -> SAR3DGeneratorConfig:
    """The :data:`GENERATOR_PRESETS` config ``name`` with overrides (a ``transformer`` dict is merged into the
    preset's); ``tokenizer`` fixes ``vocab_size``, ``latent_dim`` and ``sides``."""
    if name not in GENERATOR_PRESETS:
        raise KeyError(f"unknown SAR3D generator preset {name!r}; available: {sorted(GENERATOR_PRESETS)}")
    d = GENERATOR_PRESETS[name].to_dict()
    if "transformer" in overrides:
        overrides["transformer"] = {**d["transformer"], **overrides["transformer"]}
    if tokenizer is not None:
        q = tokenizer.quantize
        overrides.update(vocab_size=q.vocab_size, latent_dim=q.dim, sides=[s[0] for s in q.schedule.shapes])
    return SAR3DGeneratorConfig.from_dict({**d, **overrides})


def create_generator(name: str = "tiny", tokenizer: TriplaneVQVAE | None = None, **overrides: Any) -> "SAR3DGenerator":
    """Build a :data:`GENERATOR_PRESETS` generator matching ``tokenizer`` (see :func:`generator_config`)."""
    return SAR3DGenerator(generator_config(name, tokenizer, **overrides))


# ------------------------------------------------------------------------------------------- generator
class SAR3DGenerator(nn.Module):
    """The SAR3D generator (see the module docstring): image encoder (image condition) + next-scale transformer."""

    scalear_kind = "sar3d_generator"

    def __init__(self, cfg: SAR3DGeneratorConfig | None = None):
        super().__init__()
        self.cfg = cfg or SAR3DGeneratorConfig()
        c = self.cfg
        self.image_encoder = (ImageEncoder(c.image_channels, c.encoder_channels, c.image_size)
                              if c.condition == "image" else None)
        self.transformer = NextScaleTransformer(c.transformer_config())

    @property
    def schedule(self) -> ScaleSchedule:
        return self.transformer.cfg.schedule

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def no_weight_decay_names(self) -> set[str]:
        names = {f"transformer.{n}" for n in self.transformer.no_weight_decay_names()}
        if self.image_encoder is not None:
            names |= {f"image_encoder.{n}" for n, p in self.image_encoder.named_parameters() if p.ndim <= 1 or n == "pos"}
        return names

    def check_tokenizer(self, tokenizer: TriplaneVQVAE) -> None:
        q = tokenizer.quantize
        if q.schedule != self.schedule or q.vocab_size != self.cfg.vocab_size or q.dim != self.cfg.latent_dim:
            raise ValueError(f"tokenizer ({q.schedule}, V={q.vocab_size}, C={q.dim}) does not match the generator "
                             f"({self.schedule}, V={self.cfg.vocab_size}, C={self.cfg.latent_dim})")

    # ------------------------------------------------------------------ conditions
    def condition_kwargs(self, labels: torch.Tensor | None = None,
                         images: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Transformer keyword conditions: ``label_B`` (class) or ``cond_BD`` + ``context_BTD`` (image)."""
        if self.cfg.condition == "class":
            if labels is None:
                raise ValueError("this generator is class-conditional: pass labels (B,) int64")
            labels = torch.as_tensor(labels, device=self.transformer.pos_1LC.device).long().view(-1)
            if labels.min() < 0 or labels.max() >= self.cfg.num_classes:
                raise ValueError(f"labels must be in [0, {self.cfg.num_classes}), got {labels.tolist()}")
            return {"label_B": labels}
        if images is None:
            raise ValueError("this generator is image-conditional: pass images (B, C, S, S)")
        tokens, pooled = self.image_encoder(images.to(self.transformer.pos_1LC.device))
        return {"cond_BD": pooled, "context_BTD": tokens}

    def forward(self, x_BlCvae: torch.Tensor, labels: torch.Tensor | None = None, images: torch.Tensor | None = None,
                drop_B: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced logits (B, L, V) from the inputs of scales 1..K-1 (``teacher_forcing_input``)."""
        return self.transformer(x_BlCvae, drop_B=drop_B, **self.condition_kwargs(labels, images))

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample(self, tokenizer: TriplaneVQVAE, labels: torch.Tensor | None = None, images: torch.Tensor | None = None, *,
               seed: int | None = None, generator: torch.Generator | None = None, cfg: float | None = None,
               top_k: int | None = None, top_p: float | None = None, temperature: float | None = None,
               **kwargs: Any) -> SampleOutput:
        """KV-cached sampling (:func:`scalear.sampling.sample`); ``None`` arguments take the config's defaults
        (SAR3D: cfg 4, top-k 10, top-p 0.5); ``seed`` makes a fresh seeded generator on the model's device."""
        self.check_tokenizer(tokenizer)
        c = self.cfg
        cond = self.condition_kwargs(labels, images)
        B = next(iter(cond.values())).shape[0]
        device = self.transformer.pos_1LC.device
        if generator is None and seed is not None:
            generator = torch.Generator(device=device).manual_seed(seed)
        return sample(self.transformer, tokenizer.quantize, B, cfg=c.cfg if cfg is None else cfg,
                      top_k=c.top_k if top_k is None else top_k, top_p=c.top_p if top_p is None else top_p,
                      temperature=c.temperature if temperature is None else temperature, generator=generator,
                      **cond, **kwargs)

    @torch.no_grad()
    def generate(self, tokenizer: TriplaneVQVAE, labels: torch.Tensor | None = None, images: torch.Tensor | None = None,
                 **kwargs: Any) -> list[torch.Tensor]:
        """Per-scale token indices ``[(B, 3 s_k^2)]`` of generated objects (arguments as :meth:`sample`)."""
        return self.sample(tokenizer, labels, images, **kwargs).indices

    @torch.no_grad()
    def generate_meshes(self, tokenizer: TriplaneVQVAE, labels: torch.Tensor | None = None,
                        images: torch.Tensor | None = None, resolution: int = 64, chunk: int = 65536,
                        **kwargs: Any) -> list:
        """Generated objects as meshes (``trimesh.Trimesh``; ``None`` where the field has no surface)."""
        return indices_to_meshes(tokenizer, self.generate(tokenizer, labels, images, **kwargs), resolution, chunk)


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
