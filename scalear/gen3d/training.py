"""Training a class- or image-conditional generator (:class:`~scalear.gen3d.conditioning.ConditionalGenerator`) on a
frozen tokenizer: the :class:`~scalear.training.nextscale.TeacherForcedModule` recipe (VAR's teacher-forced
cross-entropy over all tokens, condition dropout for classifier-free guidance), shared by SAR3D and G3PT.

A domain subclasses :class:`ConditionalGeneratorModule` with its tokenizer type and generator builder
(:attr:`~ConditionalGeneratorModule.tokenizer_type`, :attr:`~ConditionalGeneratorModule.create_generator`), the
batch key it tokenizes (:attr:`~ConditionalGeneratorModule.default_input_key`) and, unless its tokenizer has VAR's
``img_to_indices``, :meth:`~scalear.training.nextscale.TeacherForcedModule.target_indices`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from scalear.gen3d.conditioning import Condition, ConditionalGenerator
from scalear.io import from_pretrained
from scalear.training.base import OptimizerConfig
from scalear.training.nextscale import TeacherForcedModule


class ConditionalGeneratorModule(TeacherForcedModule):
    """LightningModule training a conditional generator on a frozen, exported tokenizer.

    Args:
        tokenizer: folder of an exported tokenizer of :attr:`tokenizer_type`.
        preset: a generator preset name of the domain.
        condition: ``"class"`` (labels under ``label_key``) or ``"image"`` (condition images under ``image_key``).
        num_classes: classes of a class-conditional model (checked against the data module's ``classes``, whose
            names are exported with the generator).
        generator: overrides of the domain's generator config fields (``transformer`` is merged into the preset's).
        input_key: the batch key the tokenizer reads (default: the domain's :attr:`default_input_key`).
        Other arguments: see :class:`~scalear.training.nextscale.TeacherForcedModule`.
    """

    #: the tokenizer class this module trains on, its name in errors, and the batch key it tokenizes by default
    tokenizer_type: ClassVar[type[nn.Module]] = nn.Module
    tokenizer_name: ClassVar[str] = "tokenizer"
    default_input_key: ClassVar[str] = "image"
    #: the domain's ``create_generator(preset, tokenizer, **overrides)``: its preset generator matching the tokenizer
    create_generator: ClassVar[Callable[..., ConditionalGenerator]]
    trained = "generator"

    def __init__(
        self,
        tokenizer: str,
        preset: str = "tiny",
        condition: Condition = "class",
        num_classes: int = 4,
        generator: dict[str, Any] | None = None,
        label_smoothing: float = 0.0,
        input_key: str | None = None,
        label_key: str = "label",
        image_key: str = "image",
        optimizer: OptimizerConfig = OptimizerConfig(lr=1e-3),
        export_dir: str | None = "export",
    ):
        super().__init__(label_smoothing, input_key or self.default_input_key, label_key, optimizer, export_dir)
        self.save_hyperparameters()
        tok = from_pretrained(tokenizer)
        if not isinstance(tok, self.tokenizer_type):
            raise ValueError(f"{tokenizer} holds a {type(tok).__name__}, not a {self.tokenizer_name}")
        self.tokenizer = tok.eval().requires_grad_(False)
        self.generator: ConditionalGenerator = self.create_generator(
            preset, self.tokenizer, condition=condition, num_classes=num_classes, **dict(generator or {}))
        self.transformer = self.generator.transformer
        self.image_key = image_key
        self.register_levels(self.generator.schedule)

    def setup(self, stage: str) -> None:
        """Name the classes after the data module's ``classes`` (exported with the generator), checking their
        number against ``num_classes``."""
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        names = list(getattr(dm, "classes", None) or [])
        cfg = self.generator.cfg
        if cfg.condition != "class" or not names or list(cfg.class_names) == names:
            return
        if len(names) != cfg.num_classes:
            raise ValueError(f"the data has {len(names)} classes {names} but the generator num_classes={cfg.num_classes}; "
                             f"set --model.init_args.num_classes {len(names)}")
        self.generator.cfg = replace(cfg, class_names=tuple(names))  # a copy: never write into a shared config

    def condition(self, batch: dict) -> dict[str, torch.Tensor]:
        if self.generator.cfg.condition == "class":
            return self.generator.condition_kwargs(labels=batch[self.label_key])
        if self.image_key not in batch:
            raise ValueError(f"an image-conditional generator needs condition images under batch key {self.image_key!r}")
        return self.generator.condition_kwargs(images=batch[self.image_key])

    @torch.no_grad()
    def generate(self, labels: torch.Tensor | None = None, images: torch.Tensor | None = None,
                 resolution: int = 64, **kwargs: Any) -> tuple[list, list[torch.Tensor]]:
        """Sample (:meth:`ConditionalGenerator.generate` keywords) -> (meshes or None, per-scale indices)."""
        self.generator.eval()
        indices = self.generator.generate(self.tokenizer, labels, images, **kwargs)
        return self.generator.decode_meshes(self.tokenizer, indices, resolution), indices


__all__ = ["ConditionalGeneratorModule"]
