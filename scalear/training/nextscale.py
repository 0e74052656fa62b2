"""Training of the next-scale transformer on a frozen tokenizer (VAR Sec. 3.3 and 4; train.py / trainer.py).

Each batch is tokenized into per-scale indices, the transformer reads the teacher-forcing inputs (the running
reconstruction area-downsampled to each next scale) and is trained with cross-entropy over all L tokens,
weighted uniformly, with optional label smoothing (VAR's released recipes use none). The AdaLN condition is
dropped with probability ``cond_drop_rate`` for classifier-free guidance. :class:`TeacherForcedModule` holds
the recipe; :class:`NextScaleModule` applies it to a VQVAE tokenizer (VAR), and other stage-2 modules (the 3D
generators of :mod:`scalear.gen3d.training`) to theirs, overriding :meth:`TeacherForcedModule.condition` (what
conditions the model) and :meth:`TeacherForcedModule.target_indices`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from scalear.io import from_pretrained
from scalear.quant import MultiScaleQuantizer
from scalear.sampling import SampleOutput, sample
from scalear.training.base import OptimizerConfig, ScalearModule
from scalear.transformer import (TRANSFORMER_PRESETS, NextScaleTransformer, check_transformer_overrides,
                                 create_transformer, tokenizer_fields)
from scalear.vqvae import VQVAE

def per_scale_metrics(logits_BLV: torch.Tensor, target_BL: torch.Tensor, level_L: torch.Tensor, num_scales: int) -> dict[str, torch.Tensor]:
    """Unsmoothed cross-entropy and accuracy over all tokens, on the last scale ("tail", VAR's L_tail /
    acc_tail) and per scale."""
    ce_BL = F.cross_entropy(logits_BLV.transpose(1, 2), target_BL, reduction="none")
    hit_BL = (logits_BLV.argmax(-1) == target_BL).float()
    out = {"ce": ce_BL.mean(), "acc": hit_BL.mean()}
    for k in range(num_scales):
        sel = level_L == k
        out[f"acc_s{k}"] = hit_BL[:, sel].mean()
    last = level_L == num_scales - 1
    out["ce_tail"], out["acc_tail"] = ce_BL[:, last].mean(), hit_BL[:, last].mean()
    return out


class TeacherForcedModule(ScalearModule):
    """What every next-scale training module shares (VAR Sec. 3.3): a frozen ``tokenizer`` turns a batch into
    per-scale indices, the ``transformer`` reads the teacher-forcing inputs of :attr:`quantizer` and is trained
    with cross-entropy over all tokens; validation logs per-scale accuracy and the last scale's ("tail") loss.

    A subclass builds ``self.tokenizer`` and ``self.transformer`` in its ``__init__`` (after this one), then calls
    :meth:`register_levels`; it may override :meth:`condition`, :meth:`target_indices` and :attr:`quantizer`.

    Args:
        label_smoothing: cross-entropy label smoothing (VAR: 0).
        input_key: batch key of the inputs to tokenize; label_key: batch key of class labels.
        optimizer, export_dir: see :class:`~scalear.training.base.ScalearModule`.
    """

    tokenizer: nn.Module
    transformer: NextScaleTransformer
    #: the attribute holding the trained model (the transformer, or a generator wrapping it), also its name among the
    #: exported models
    trained: ClassVar[str] = "transformer"

    def __init__(self, label_smoothing: float, input_key: str, label_key: str, optimizer: OptimizerConfig,
                 export_dir: str | None):
        super().__init__(optimizer, export_dir)
        self.label_smoothing, self.input_key, self.label_key = label_smoothing, input_key, label_key

    def register_levels(self, schedule) -> None:
        """The scale index of every token (``level_L``), for the per-scale metrics."""
        self.register_buffer("level_L", schedule.level_ids(), persistent=False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.tokenizer.eval()  # frozen: no dropout, no codebook statistics
        return self

    def trainable(self) -> nn.Module:
        return getattr(self, self.trained)

    def no_weight_decay(self) -> set[str]:
        return self.trainable().no_weight_decay_names()

    def exported_models(self) -> dict[str, nn.Module]:
        return {self.trained: self.trainable(), "tokenizer": self.tokenizer}

    # ------------------------------------------------------------------ hooks
    @property
    def quantizer(self) -> MultiScaleQuantizer:
        """The multi-scale quantizer whose teacher-forcing inputs the transformer reads."""
        return self.tokenizer.quantize

    def condition(self, batch: dict) -> dict[str, torch.Tensor]:
        """Keyword conditions for the transformer (``label_B``, ``cond_BD``, ``context_BTD``, ``prefix_BPD``)."""
        return {"label_B": batch[self.label_key]} if self.transformer.cfg.num_classes else {}

    @torch.no_grad()
    def target_indices(self, batch: dict) -> list[torch.Tensor]:
        """Per-scale ground-truth token indices of the batch."""
        return self.tokenizer.img_to_indices(batch[self.input_key])

    # ------------------------------------------------------------------ steps
    def forward_logits(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.target_indices(batch)
        x_in = self.quantizer.teacher_forcing_input(idx)
        return self.transformer(x_in, **self.condition(batch)), torch.cat(idx, dim=1)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        logits, target = self.forward_logits(batch)
        loss = F.cross_entropy(logits.transpose(1, 2), target, label_smoothing=self.label_smoothing)
        with torch.no_grad():
            m = per_scale_metrics(logits.detach(), target, self.level_L, self.transformer.num_scales)
        self.log("train/loss", loss, prog_bar=True)
        self.log_dict({"train/acc": m["acc"], "train/acc_tail": m["acc_tail"]}, prog_bar=True)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        logits, target = self.forward_logits(batch)
        m = per_scale_metrics(logits, target, self.level_L, self.transformer.num_scales)
        self.log_dict({f"val/{k}": v for k, v in m.items() if k != "ce"}, sync_dist=True)
        self.log("val/ce", m["ce"], prog_bar=True, sync_dist=True)


class NextScaleModule(TeacherForcedModule):
    """LightningModule training a :class:`~scalear.transformer.NextScaleTransformer` on a frozen VQVAE tokenizer
    (VAR's stage 2: class-conditional or unconditional image generation).

    Args:
        tokenizer: folder of an exported tokenizer (``model.safetensors`` + ``config.json``).
        preset: a :data:`~scalear.transformer.TRANSFORMER_PRESETS` name.
        transformer: overrides of :class:`~scalear.transformer.TransformerConfig` (unknown keys are an error;
            ``vocab_size``, ``latent_dim`` and ``schedule`` always come from the tokenizer).
        Other arguments: see :class:`TeacherForcedModule` (defaults are VAR's: AdamW betas (0.9, 0.95), weight
        decay 0.05).
    """

    def __init__(
        self,
        tokenizer: str,
        preset: str = "tiny",
        transformer: dict[str, Any] | None = None,
        label_smoothing: float = 0.0,
        input_key: str = "image",
        label_key: str = "label",
        optimizer: OptimizerConfig = OptimizerConfig(lr=1e-3),
        export_dir: str | None = "export",
    ):
        super().__init__(label_smoothing, input_key, label_key, optimizer, export_dir)
        self.save_hyperparameters()
        self.tokenizer: VQVAE = from_pretrained(tokenizer).eval().requires_grad_(False)
        overrides = check_transformer_overrides(transformer, "transformer")
        if preset not in TRANSFORMER_PRESETS:
            raise ValueError(f"unknown transformer preset {preset!r}; available: {sorted(TRANSFORMER_PRESETS)}")
        q = self.tokenizer.quantize
        self.transformer = create_transformer(preset, **tokenizer_fields(q), **overrides)
        self.register_levels(q.schedule)

    @torch.no_grad()
    def generate(self, batch_size: int, **kwargs) -> tuple[torch.Tensor, SampleOutput]:
        """Sample with :func:`scalear.sampling.sample` (same keyword arguments) and decode to inputs space."""
        self.transformer.eval()
        out = sample(self.transformer, self.tokenizer.quantize, batch_size, **kwargs)
        return self.tokenizer.fhat_to_img(out.f_hat), out
