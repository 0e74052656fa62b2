"""What the conditional 3D generators share (SAR3D, G3PT): a next-scale transformer over a frozen tokenizer's
token schedule, conditioned on a class label or on an image, sampled with classifier-free guidance.

* :class:`ImageEncoder`: the papers condition on frozen pretrained features (SAR3D: DINOv2-large patch tokens +
  ``pooler_output``); no pretrained weights can be downloaded here, so a small CNN is trained jointly with the
  generator: its patch tokens are the transformer's cross-attention context (``context_dim``) and its pooled
  feature the start token and AdaLN condition (``cond_dim``).
* :class:`ConditionalGeneratorConfig` / :class:`ConditionalGenerator`: the config fields, checks, conditions
  and KV-cached sampling (:func:`scalear.sampling.sample`) of both generators. A domain subclasses them with its
  token schedule (:meth:`ConditionalGeneratorConfig.schedule`), its tokenizer type and the attribute holding the
  tokenizer's quantizer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Literal, Sequence

import torch
from torch import nn

from scalear.config_check import JSONConfig
from scalear.quant import MultiScaleQuantizer
from scalear.sampling import SampleOutput, sample
from scalear.schedules import ScaleSchedule
from scalear.transformer import (CONDITION_FIELDS, TOKENIZER_FIELDS, NextScaleTransformer, TransformerConfig,
                                 check_transformer_overrides)

Condition = Literal["class", "image"]
#: TransformerConfig fields a conditional generator sets itself
DERIVED_TRANSFORMER_FIELDS = TOKENIZER_FIELDS | CONDITION_FIELDS | {"cond_drop_rate"}


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


# ------------------------------------------------------------------------------------------- config
@dataclass
class ConditionalGeneratorConfig(JSONConfig):
    """Fields shared by the conditional generators (a domain subclass adds its schedule's fields and defaults).

    Args:
        condition: ``"class"`` or ``"image"``.
        num_classes: number of classes (``condition="class"``).
        class_names: the name of each class label (the data's ``classes``; empty: labels are unnamed).
        vocab_size, latent_dim: the tokenizer's vocabulary and the width of its transformer inputs (set from the
            tokenizer by the domain's ``generator_config``).
        transformer: :class:`~scalear.transformer.TransformerConfig` fields (depth, width, heads, ...).
        image_channels, image_size: the condition image.
        encoder_channels: widths of :class:`ImageEncoder`, one stride-2 stage each; the last is the context width.
        cond_drop_rate: condition dropout for classifier-free guidance.
        guidance, top_k, top_p, temperature: sampling defaults (``guidance``: classifier-free guidance, VAR's
            "cfg").
        patch_nums: the tokenizer's scales, in the layout of :attr:`schedule_layout` (set from the tokenizer by the
            domain's ``generator_config``).
    """

    #: the model's name in error messages
    what: ClassVar[str] = "generator"
    #: config keys renamed since files were written: old name -> new name
    renamed: ClassVar[dict[str, str]] = {"cfg": "guidance"}
    #: the :class:`~scalear.schedules.ScaleSchedule` constructor ``patch_nums`` are given to (the domain's layout)
    schedule_layout: ClassVar[Callable[[Sequence[int]], ScaleSchedule]] = staticmethod(ScaleSchedule.square)

    condition: Condition = "class"
    num_classes: int = 4
    class_names: tuple[str, ...] = ()
    vocab_size: int = 512
    latent_dim: int = 8
    transformer: dict[str, Any] = field(default_factory=lambda: dict(depth=4, width=128, num_heads=4, drop_path_rate=0.0))
    image_channels: int = 4
    image_size: int = 64
    encoder_channels: tuple[int, ...] = (32, 64, 128)
    cond_drop_rate: float = 0.1
    guidance: float = 4.0
    top_k: int = 0
    top_p: float = 0.0
    temperature: float = 1.0
    patch_nums: tuple[int, ...] = (1, 2, 3, 4)

    def __post_init__(self) -> None:
        self.patch_nums = tuple(int(s) for s in self.patch_nums)
        self.encoder_channels = tuple(int(c) for c in self.encoder_channels)
        self.class_names = tuple(str(c) for c in self.class_names)
        self.transformer = dict(self.transformer)
        if self.condition not in ("class", "image"):
            raise ValueError(f"condition must be 'class' or 'image', got {self.condition!r}")
        if self.condition == "class" and self.num_classes < 1:
            raise ValueError("a class-conditional generator needs num_classes >= 1")
        if self.class_names and (self.condition != "class" or len(self.class_names) != self.num_classes):
            raise ValueError(f"class_names {list(self.class_names)} need a class-conditional generator with as many "
                             f"classes (num_classes={self.num_classes})")
        self.transformer = check_transformer_overrides(self.transformer, f"{self.what} transformer",
                                                       DERIVED_TRANSFORMER_FIELDS)
        if self.image_size % 2 ** len(self.encoder_channels):
            raise ValueError(f"image_size {self.image_size} must be divisible by 2^{len(self.encoder_channels)}")

    @property
    def schedule(self) -> ScaleSchedule:
        """The tokenizer's token schedule: ``patch_nums`` in the domain's :attr:`schedule_layout`."""
        return self.schedule_layout(self.patch_nums)

    def transformer_config(self) -> TransformerConfig:
        """The transformer's config: class embedding, or the image encoder's pooled feature (AdaLN, start token)
        and patch tokens (cross-attention)."""
        cond = ({"num_classes": self.num_classes} if self.condition == "class" else
                {"cond_dim": self.encoder_channels[-1], "context_dim": self.encoder_channels[-1]})
        return TransformerConfig(**self.transformer, vocab_size=self.vocab_size, latent_dim=self.latent_dim,
                                 schedule=self.schedule, cond_drop_rate=self.cond_drop_rate, **cond)

    @classmethod
    def config_name(cls) -> str:
        return f"{cls.what} generator"

    @classmethod
    def from_preset(cls, presets: dict[str, "ConditionalGeneratorConfig"], name: str,
                    tokenizer_fields: dict[str, Any] | None = None, **overrides: Any):
        """The preset ``name`` with overrides (a ``transformer`` dict is merged into the preset's) and the fields
        that the tokenizer fixes (``vocab_size``, ``latent_dim``, the schedule's)."""
        if name not in presets:
            raise KeyError(f"unknown {cls.what} generator preset {name!r}; available: {sorted(presets)}")
        d = presets[name].to_dict()
        if "transformer" in overrides:
            overrides["transformer"] = {**d["transformer"], **overrides["transformer"]}
        return cls.from_dict({**d, **overrides, **(tokenizer_fields or {})})


# ------------------------------------------------------------------------------------------- generator
class ConditionalGenerator(nn.Module):
    """Image encoder (image condition) + :class:`~scalear.transformer.NextScaleTransformer` over a tokenizer's
    schedule; the tokenizer's ``quantize`` attribute is its :class:`~scalear.quant.MultiScaleQuantizer`."""

    def __init__(self, cfg: ConditionalGeneratorConfig):
        super().__init__()
        self.cfg = cfg
        self.image_encoder = (ImageEncoder(cfg.image_channels, cfg.encoder_channels, cfg.image_size)
                              if cfg.condition == "image" else None)
        self.transformer = NextScaleTransformer(cfg.transformer_config())

    @property
    def schedule(self) -> ScaleSchedule:
        return self.transformer.cfg.schedule

    @property
    def device(self) -> torch.device:
        return self.transformer.pos_1LC.device

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def no_weight_decay_names(self) -> set[str]:
        names = {f"transformer.{n}" for n in self.transformer.no_weight_decay_names()}
        if self.image_encoder is not None:
            names |= {f"image_encoder.{n}" for n, p in self.image_encoder.named_parameters() if p.ndim <= 1 or n == "pos"}
        return names

    def check_tokenizer(self, tokenizer: nn.Module) -> None:
        q: MultiScaleQuantizer = tokenizer.quantize
        if q.schedule != self.schedule or q.vocab_size != self.cfg.vocab_size or q.dim != self.cfg.latent_dim:
            raise ValueError(f"tokenizer ({q.schedule}, V={q.vocab_size}, C={q.dim}) does not match the generator "
                             f"({self.schedule}, V={self.cfg.vocab_size}, C={self.cfg.latent_dim})")

    def class_labels(self, names: Sequence[str] | None = None) -> list[tuple[int, str]]:
        """``(label, name)`` of the requested classes, given by name (``class_names``) or by index; ``None``: all."""
        known = list(self.cfg.class_names) or [str(i) for i in range(self.cfg.num_classes)]
        if names is None:
            return list(enumerate(known))
        out = []
        for n in names:
            if n in known:
                out.append((known.index(n), n))
            elif n.isdigit() and int(n) < self.cfg.num_classes:
                out.append((int(n), known[int(n)]))
            else:
                raise ValueError(f"unknown class {n!r}; this generator knows {known}")
        return out

    def condition_jobs(self, n: int, classes: Sequence[str] | None = None, images: Sequence[str | Path] | None = None,
                       load_image: Callable[[Path, int], torch.Tensor] | None = None) -> list[tuple[str, dict]]:
        """``(name, condition)`` per class (class-conditional: ``classes`` names or indices, default all) or per
        image file (image-conditional: ``load_image(path, image_size) -> (C, S, S)``), each condition holding
        ``n`` copies (the keywords of :meth:`generate`)."""
        if self.cfg.condition == "class":
            if images:
                raise ValueError("this generator is class-conditional: give classes, not images")
            return [(name, {"labels": torch.full((n,), label, dtype=torch.long, device=self.device)})
                    for label, name in self.class_labels(classes)]
        if not images:
            raise ValueError("this generator is image-conditional: give one or more images (--image)")
        if load_image is None:
            raise ValueError("image conditions need a load_image function")
        return [(Path(p).stem, {"images": load_image(Path(p), self.cfg.image_size).to(self.device)[None].expand(n, -1, -1, -1)})
                for p in images]

    def condition_kwargs(self, labels: torch.Tensor | None = None,
                         images: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Transformer keyword conditions: ``label_B`` (class) or ``cond_BD`` + ``context_BTD`` (image)."""
        if self.cfg.condition == "class":
            if labels is None:
                raise ValueError("this generator is class-conditional: pass labels (B,) int64")
            labels = torch.as_tensor(labels, device=self.device).long().view(-1)
            if labels.min() < 0 or labels.max() >= self.cfg.num_classes:
                raise ValueError(f"labels must be in [0, {self.cfg.num_classes}), got {labels.tolist()}")
            return {"label_B": labels}
        if images is None:
            raise ValueError("this generator is image-conditional: pass images (B, C, S, S)")
        tokens, pooled = self.image_encoder(images.to(self.device))
        return {"cond_BD": pooled, "context_BTD": tokens}

    def forward(self, x_BlC: torch.Tensor, labels: torch.Tensor | None = None, images: torch.Tensor | None = None,
                drop_B: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced logits (B, L, V) from the inputs of scales 2..K (the quantizer's ``teacher_forcing_input``)."""
        return self.transformer(x_BlC, drop_B=drop_B, **self.condition_kwargs(labels, images))

    @torch.no_grad()
    def sample(self, tokenizer: nn.Module, labels: torch.Tensor | None = None, images: torch.Tensor | None = None, *,
               seed: int | None = None, generator: torch.Generator | None = None, guidance: float | None = None,
               top_k: int | None = None, top_p: float | None = None, temperature: float | None = None,
               **kwargs: Any) -> SampleOutput:
        """KV-cached sampling (:func:`scalear.sampling.sample`); ``None`` arguments take the config's defaults;
        ``seed`` makes a fresh seeded generator on the model's device."""
        self.check_tokenizer(tokenizer)
        c = self.cfg
        cond = self.condition_kwargs(labels, images)
        B = next(iter(cond.values())).shape[0]
        if generator is None and seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(seed)
        return sample(self.transformer, tokenizer.quantize, B, guidance=c.guidance if guidance is None else guidance,
                      top_k=c.top_k if top_k is None else top_k, top_p=c.top_p if top_p is None else top_p,
                      temperature=c.temperature if temperature is None else temperature, generator=generator,
                      **cond, **kwargs)

    @torch.no_grad()
    def generate(self, tokenizer: nn.Module, labels: torch.Tensor | None = None, images: torch.Tensor | None = None,
                 **kwargs: Any) -> list[torch.Tensor]:
        """Per-scale token indices of generated samples (arguments as :meth:`sample`)."""
        return self.sample(tokenizer, labels, images, **kwargs).indices

    def decode_meshes(self, tokenizer: nn.Module, indices: list[torch.Tensor], resolution: int = 64) -> list:
        """Per-scale indices -> one ``trimesh.Trimesh`` per sample (``None`` where the decoded field has no
        surface): each domain decodes its own field."""
        raise NotImplementedError(f"{type(self).__name__} must define decode_meshes")

    @torch.no_grad()
    def generate_meshes(self, tokenizer: nn.Module, labels: torch.Tensor | None = None,
                        images: torch.Tensor | None = None, resolution: int = 64, **kwargs: Any) -> list:
        """Generated samples as meshes, marching cubes at ``resolution^3`` (arguments as :meth:`sample`)."""
        return self.decode_meshes(tokenizer, self.generate(tokenizer, labels, images, **kwargs), resolution)


def load_generator_export(folder: str | Path, generator_type: type[ConditionalGenerator], tokenizer_type: type[nn.Module],
                          what: str, config: str, device: torch.device | str = "cpu"):
    """The generator and tokenizer of an export folder (``generator/`` + ``tokenizer/``, as
    :class:`~scalear.gen3d.training.ConditionalGeneratorModule` exports them), checked against each other,
    in eval mode on ``device``; errors name the folder, ``what`` the model and ``config`` the config to train with."""
    from scalear.io import from_pretrained

    folder = Path(folder)
    for name in ("generator", "tokenizer"):
        if not (folder / name / "config.json").is_file():
            raise FileNotFoundError(f"{folder} is not a {what} export folder: {folder / name / 'config.json'} is "
                                    f"missing (train with {config}; it exports generator/ and tokenizer/)")
    gen, tok = from_pretrained(folder / "generator"), from_pretrained(folder / "tokenizer")
    if not isinstance(gen, generator_type) or not isinstance(tok, tokenizer_type):
        raise ValueError(f"{folder}: expected a {what} generator and tokenizer, found "
                         f"{type(gen).__name__} and {type(tok).__name__}")
    gen.check_tokenizer(tok)
    return gen.to(device).eval(), tok.to(device).eval()


__all__ = ["Condition", "DERIVED_TRANSFORMER_FIELDS", "ImageEncoder", "ConditionalGeneratorConfig",
           "ConditionalGenerator",
           "load_generator_export"]
