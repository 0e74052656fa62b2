"""Training of the next-scale transformer on a frozen tokenizer (VAR Sec. 3.3 and 4; train.py / trainer.py).

Each batch is tokenized into per-scale indices, the transformer reads the teacher-forcing inputs (the running
reconstruction area-downsampled to each next scale) and is trained with cross-entropy over all L tokens,
weighted uniformly, with optional label smoothing (VAR's released recipes use none). The AdaLN condition is
dropped with probability ``cond_drop_rate`` for classifier-free guidance. Domains subclass this module and
override :meth:`NextScaleModule.condition` (what conditions the model) and :meth:`NextScaleModule.target_indices`.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from scalear.io import from_pretrained
from scalear.sampling import SampleOutput, sample
from scalear.training.base import ScalearModule
from scalear.transformer import TRANSFORMER_PRESETS, NextScaleTransformer, TransformerConfig, create_transformer
from scalear.vqvae import VQVAE

_DERIVED = {"vocab_size", "latent_dim", "schedule"}  # taken from the tokenizer


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


class NextScaleModule(ScalearModule):
    """LightningModule training a :class:`~scalear.transformer.NextScaleTransformer` on a frozen tokenizer.

    Args:
        tokenizer: folder of an exported tokenizer (``model.safetensors`` + ``config.json``).
        preset: a :data:`~scalear.transformer.TRANSFORMER_PRESETS` name.
        transformer: overrides of :class:`~scalear.transformer.TransformerConfig` (unknown keys are an error;
            ``vocab_size``, ``latent_dim`` and ``schedule`` always come from the tokenizer).
        label_smoothing: cross-entropy label smoothing (VAR: 0).
        input_key: batch key of the inputs to tokenize; label_key: batch key of class labels.
        Other arguments: see :class:`~scalear.training.base.ScalearModule` (defaults are VAR's: AdamW
        betas (0.9, 0.95), weight decay 0.05).
    """

    def __init__(
        self,
        tokenizer: str,
        preset: str = "tiny",
        transformer: dict[str, Any] | None = None,
        label_smoothing: float = 0.0,
        input_key: str = "image",
        label_key: str = "label",
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        betas: tuple[float, float] = (0.9, 0.95),
        warmup_steps: int = 0,
        min_lr_ratio: float = 0.0,
        export_dir: str | None = "export",
    ):
        super().__init__(lr, weight_decay, betas, warmup_steps, min_lr_ratio, export_dir)
        self.save_hyperparameters()
        self.tokenizer: VQVAE = from_pretrained(tokenizer).eval().requires_grad_(False)
        overrides = dict(transformer or {})
        allowed = {f.name for f in fields(TransformerConfig)} - _DERIVED
        if unknown := sorted(set(overrides) - allowed):
            raise ValueError(f"unknown transformer keys {unknown}; allowed: {sorted(allowed)}")
        if preset not in TRANSFORMER_PRESETS:
            raise ValueError(f"unknown transformer preset {preset!r}; available: {sorted(TRANSFORMER_PRESETS)}")
        q = self.tokenizer.quantize
        self.transformer: NextScaleTransformer = create_transformer(
            preset, vocab_size=q.vocab_size, latent_dim=q.dim, schedule=q.schedule, **overrides
        )
        self.label_smoothing, self.input_key, self.label_key = label_smoothing, input_key, label_key
        self.register_buffer("level_L", q.schedule.level_ids(), persistent=False)

    def trainable(self) -> nn.Module:
        return self.transformer

    def no_weight_decay(self) -> set[str]:
        return self.transformer.no_weight_decay_names()

    def exported_models(self) -> dict[str, nn.Module]:
        return {"transformer": self.transformer, "tokenizer": self.tokenizer}

    def train(self, mode: bool = True):
        super().train(mode)
        self.tokenizer.eval()  # frozen: no dropout, no codebook statistics
        return self

    # ------------------------------------------------------------------ hooks for domains
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
        x_in = self.tokenizer.quantize.teacher_forcing_input(idx)
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

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def generate(self, batch_size: int, **kwargs) -> tuple[torch.Tensor, SampleOutput]:
        """Sample with :func:`scalear.sampling.sample` (same keyword arguments) and decode to inputs space."""
        self.transformer.eval()
        out = sample(self.transformer, self.tokenizer.quantize, batch_size, **kwargs)
        return self.tokenizer.fhat_to_img(out.f_hat), out
