"""G3PT's Cross-scale Querying Transformer: next-scale prediction over levels of detail of unordered tokens
(Zhang, Xiong, Xu, arXiv 2409.06322, "CAR" stage; anchors.md Sec. 6).

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
  and AdaLN condition. **Deviation**: G3PT uses a pretrained image encoder (details not given); no pretrained
  weights are available here, so the CNN is trained with the transformer. Text conditioning is not implemented.

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

import copy
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from scalear.domains.g3pt.tokenizer import G3PTTokenizer
from scalear.conditioning import ImageEncoder, check_generator_config, condition_fields
from scalear.io import register_model_kind
from scalear.sampling import SampleOutput, sample
from scalear.schedules import ScaleSchedule
from scalear.transformer import NextScaleTransformer, TransformerConfig

Condition = Literal["class", "image"]
#: TransformerConfig fields the generator sets itself
_DERIVED = {"vocab_size", "latent_dim", "schedule", "num_classes", "cond_dim", "context_dim", "prefix_dim",
            "max_prefix_len", "cond_drop_rate"}


@dataclass
class G3PTGeneratorConfig:
    """Hyper-parameters of :class:`G3PTGenerator`.

    Args:
        condition: ``"class"`` or ``"image"``.
        num_classes: number of classes (``condition="class"``).
        vocab_size, latent_dim, sizes: the tokenizer's ``2^d``, token width C and level sizes (set from the
            tokenizer by :func:`create_generator`).
        transformer: :class:`~scalear.transformer.TransformerConfig` fields (depth, width, heads, ...).
        image_channels, image_size, encoder_channels: the condition image and :class:`ImageEncoder` widths.
        cond_drop_rate: condition dropout for classifier-free guidance.
        cfg, top_k, top_p, temperature: sampling defaults.
    """

    condition: Condition = "class"
    num_classes: int = 4
    vocab_size: int = 1024
    latent_dim: int = 64
    sizes: tuple[int, ...] = (1, 4, 16, 64)
    transformer: dict[str, Any] = field(default_factory=lambda: dict(depth=4, width=128, num_heads=4, drop_path_rate=0.0))
    image_channels: int = 3
    image_size: int = 64
    encoder_channels: tuple[int, ...] = (32, 64, 128)
    cond_drop_rate: float = 0.1
    cfg: float = 3.0
    top_k: int = 0
    top_p: float = 0.9
    temperature: float = 1.0

    def __post_init__(self) -> None:
        self.sizes, self.encoder_channels = tuple(int(s) for s in self.sizes), tuple(int(c) for c in self.encoder_channels)
        check_generator_config("G3PT", self.condition, self.num_classes, self.transformer, _DERIVED, self.image_size,
                               self.encoder_channels)
        self.transformer = dict(self.transformer)

    @property
    def schedule(self) -> ScaleSchedule:
        return ScaleSchedule.seq_1d(self.sizes)

    def transformer_config(self) -> TransformerConfig:
        cond = condition_fields(self.condition, self.num_classes, self.encoder_channels)
        return TransformerConfig(**self.transformer, vocab_size=self.vocab_size, latent_dim=self.latent_dim,
                                 schedule=self.schedule, cond_drop_rate=self.cond_drop_rate, **cond)

    def to_dict(self) -> dict[str, Any]:
        d = copy.deepcopy(asdict(self))
        d["sizes"], d["encoder_channels"] = list(self.sizes), list(self.encoder_channels)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "G3PTGeneratorConfig":
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown G3PT generator keys {sorted(unknown)}; allowed: {sorted(cls.__dataclass_fields__)}")
        return cls(**copy.deepcopy(d))


#: ``tiny``: 4 blocks of width 128 (CPU); ``small``: 8 x 384; ``paper``: a guess at G3PT's scale (its scaling study
#: trains a family of sizes; exact widths are not given), VAR-d24-like.
G3PT_GENERATOR_PRESETS: dict[str, G3PTGeneratorConfig] = {
    "tiny": G3PTGeneratorConfig(),
    "small": G3PTGeneratorConfig(vocab_size=4096, latent_dim=256, sizes=(1, 4, 16, 64, 256),
                                 transformer=dict(depth=8, width=384, num_heads=6, drop_path_rate=0.0),
                                 encoder_channels=(32, 64, 128, 256)),
    "paper": G3PTGeneratorConfig(vocab_size=65536, latent_dim=768, sizes=(1, 4, 16, 64, 256, 1024),
                                 transformer=dict(depth=24, width=1536, num_heads=16, drop_path_rate=0.1,
                                                  init_adaln_gamma=1e-4),
                                 image_size=256, encoder_channels=(64, 128, 256, 1024)),
}


def generator_config(name: str = "tiny", tokenizer: G3PTTokenizer | None = None, **overrides: Any) -> G3PTGeneratorConfig:
    """The preset ``name`` with overrides (a ``transformer`` dict is merged into the preset's); ``tokenizer`` fixes
    ``vocab_size``, ``latent_dim`` and ``sizes``."""
    if name not in G3PT_GENERATOR_PRESETS:
        raise KeyError(f"unknown G3PT generator preset {name!r}; available: {sorted(G3PT_GENERATOR_PRESETS)}")
    d = G3PT_GENERATOR_PRESETS[name].to_dict()
    if "transformer" in overrides:
        overrides["transformer"] = {**d["transformer"], **overrides["transformer"]}
    if tokenizer is not None:
        q = tokenizer.quantizer
        overrides.update(vocab_size=q.vocab_size, latent_dim=q.dim, sizes=list(q.sizes))
    return G3PTGeneratorConfig.from_dict({**d, **overrides})


def create_generator(name: str = "tiny", tokenizer: G3PTTokenizer | None = None, **overrides: Any) -> "G3PTGenerator":
    """Build a :data:`G3PT_GENERATOR_PRESETS` generator matching ``tokenizer`` (see :func:`generator_config`)."""
    return G3PTGenerator(generator_config(name, tokenizer, **overrides))


class G3PTGenerator(nn.Module):
    """The Cross-scale Querying Transformer (see the module docstring)."""

    scalear_kind = "g3pt_generator"

    def __init__(self, cfg: G3PTGeneratorConfig | None = None):
        super().__init__()
        self.cfg = cfg or G3PTGeneratorConfig()
        c = self.cfg
        self.image_encoder = ImageEncoder(c.image_channels, c.encoder_channels, c.image_size) if c.condition == "image" else None
        self.transformer = NextScaleTransformer(c.transformer_config())

    @property
    def schedule(self) -> ScaleSchedule:
        return self.transformer.cfg.schedule

    def check_tokenizer(self, tokenizer: G3PTTokenizer) -> None:
        q = tokenizer.quantizer
        if q.schedule != self.schedule or q.vocab_size != self.cfg.vocab_size or q.dim != self.cfg.latent_dim:
            raise ValueError(f"tokenizer ({q.schedule}, V={q.vocab_size}, C={q.dim}) does not match the generator "
                             f"({self.schedule}, V={self.cfg.vocab_size}, C={self.cfg.latent_dim})")

    def condition_kwargs(self, labels: torch.Tensor | None = None, images: torch.Tensor | None = None) -> dict:
        """Transformer keyword conditions: ``label_B`` (class) or ``cond_BD`` + ``context_BTD`` (image)."""
        device = self.transformer.pos_1LC.device
        if self.cfg.condition == "class":
            if labels is None:
                raise ValueError("this generator is class-conditional: pass labels (B,) int64")
            labels = torch.as_tensor(labels, device=device).long().view(-1)
            if labels.min() < 0 or labels.max() >= self.cfg.num_classes:
                raise ValueError(f"labels must be in [0, {self.cfg.num_classes}), got {labels.tolist()}")
            return {"label_B": labels}
        if images is None:
            raise ValueError("this generator is image-conditional: pass images (B, C, S, S)")
        tokens, pooled = self.image_encoder(images.to(device))
        return {"cond_BD": pooled, "context_BTD": tokens}

    def forward(self, x_BlC: torch.Tensor, labels: torch.Tensor | None = None, images: torch.Tensor | None = None,
                drop_B: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced logits (B, L, V) from the inputs of levels 2..K (``teacher_forcing_input``)."""
        return self.transformer(x_BlC, drop_B=drop_B, **self.condition_kwargs(labels, images))

    def loss(self, tokenizer: G3PTTokenizer, points_BN3: torch.Tensor, labels: torch.Tensor | None = None,
             images: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """Next-scale cross-entropy of the (frozen) tokenizer's tokens of ``points``; logs ``ce`` and ``acc``."""
        idx = tokenizer.points_to_indices(points_BN3)
        logits = self(tokenizer.quantizer.teacher_forcing_input(idx), labels, images)
        target = torch.cat(idx, dim=1)
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))
        return ce, {"ce": float(ce.detach()), "acc": float((logits.argmax(-1) == target).float().mean())}

    @torch.no_grad()
    def sample(self, tokenizer: G3PTTokenizer, labels: torch.Tensor | None = None, images: torch.Tensor | None = None, *,
               seed: int | None = None, generator: torch.Generator | None = None, cfg: float | None = None,
               top_k: int | None = None, top_p: float | None = None, temperature: float | None = None,
               **kwargs: Any) -> SampleOutput:
        """KV-cached sampling (:func:`scalear.sampling.sample`); ``None`` arguments take the config's defaults."""
        self.check_tokenizer(tokenizer)
        c = self.cfg
        cond = self.condition_kwargs(labels, images)
        B = next(iter(cond.values())).shape[0]
        if generator is None and seed is not None:
            generator = torch.Generator(device=self.transformer.pos_1LC.device).manual_seed(seed)
        return sample(self.transformer, tokenizer.quantizer, B, cfg=c.cfg if cfg is None else cfg,
                      top_k=c.top_k if top_k is None else top_k, top_p=c.top_p if top_p is None else top_p,
                      temperature=c.temperature if temperature is None else temperature, generator=generator,
                      **cond, **kwargs)

    @torch.no_grad()
    def generate(self, tokenizer: G3PTTokenizer, labels: torch.Tensor | None = None, images: torch.Tensor | None = None,
                 **kwargs: Any) -> list[torch.Tensor]:
        """Per-level token indices ``[(B, M_k)]`` of generated shapes (arguments as :meth:`sample`)."""
        return self.sample(tokenizer, labels, images, **kwargs).indices

    @torch.no_grad()
    def generate_meshes(self, tokenizer: G3PTTokenizer, labels: torch.Tensor | None = None,
                        images: torch.Tensor | None = None, resolution: int = 64, **kwargs: Any) -> list:
        """Generated shapes as meshes (``trimesh.Trimesh``; ``None`` where the decoded field has no surface)."""
        return tokenizer.indices_to_meshes(self.generate(tokenizer, labels, images, **kwargs), resolution)


register_model_kind("g3pt_generator", lambda d: G3PTGenerator(G3PTGeneratorConfig.from_dict(d)), lambda m: m.cfg.to_dict())

__all__ = ["G3PT_GENERATOR_PRESETS", "G3PTGenerator", "G3PTGeneratorConfig", "ImageEncoder", "create_generator",
           "generator_config"]
