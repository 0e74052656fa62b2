"""Training G3PT in two stages through LightningCLI (``configs/g3pt/*.yaml``).

1. :class:`G3PTTokenizerModule`: the Cross-scale VQ tokenizer on batches ``{"points", "query", "occupancy"}``
   (:class:`scalear.datasets.pointclouds.data.PointCloudDataModule`) with :meth:`G3PTTokenizer.loss` (occupancy
   BCE of the full and the partial reconstructions + LFQ entropy and commitment losses + VAR's residual-quantization
   loss). Validation logs the occupancy BCE and IoU of the reconstruction from the first ``k`` levels of detail for
   every ``k`` (``val/bce_l<k>``, ``val/iou_l<k>``, ``k = 1..K``; falling / rising as levels are added) and the
   codebook usage. Exports ``tokenizer``.
2. :class:`G3PTGeneratorModule`: the core :class:`~scalear.training.nextscale.TeacherForcedModule` recipe (VAR's
   teacher-forced cross-entropy over all tokens, condition dropout for CFG) on the frozen stage-1 tokenizer, with
   the targets ``tokenizer.points_to_indices(batch["points"])`` and the condition a class label (or a condition
   image, where a data module provides one). Exports ``generator`` and ``tokenizer``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from scalear.domains.g3pt.generator import create_generator
from scalear.domains.g3pt.tokenizer import G3PTTokenizer, tokenizer_config
from scalear.gen3d.training import ConditionalGeneratorModule
from scalear.training.base import OptimizerConfig, ScalearModule


# ------------------------------------------------------------------------------------------- stage 1
class G3PTTokenizerModule(ScalearModule):
    """LightningModule training a :class:`~scalear.domains.g3pt.tokenizer.G3PTTokenizer`.

    Args:
        preset: a :data:`~scalear.domains.g3pt.tokenizer.G3PT_TOKENIZER_PRESETS` name.
        tokenizer: overrides of the preset's :class:`~scalear.domains.g3pt.tokenizer.G3PTTokenizerConfig` fields
            (loss weights included: ``entropy_weight``, ``commit_weight``, ``prefix_weight``).
        Other arguments: see :class:`~scalear.training.base.ScalearModule`.
    """

    def __init__(
        self,
        preset: str = "tiny",
        tokenizer: dict[str, Any] | None = None,
        optimizer: OptimizerConfig = OptimizerConfig(lr=1e-3, weight_decay=0.0),
        export_dir: str | None = "export",
    ):
        super().__init__(optimizer, export_dir)
        self.save_hyperparameters()
        self.tokenizer = G3PTTokenizer(tokenizer_config(preset, **(tokenizer or {})))

    def exported_models(self) -> dict[str, nn.Module]:
        return {"tokenizer": self.tokenizer}

    @staticmethod
    def _check_batch(batch: dict) -> None:
        if "query" not in batch or "occupancy" not in batch:
            raise ValueError("G3PT tokenizer training needs occupancy queries (batch keys 'query', 'occupancy'); "
                             "pure point clouds have none: train on meshes")

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        self._check_batch(batch)
        loss, logs = self.tokenizer.loss(batch)
        B = batch["points"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=B)
        self.log("train/bce", logs["bce"], prog_bar=True, batch_size=B)
        self.log_dict({f"train/{k}": logs[k] for k in ("bce_prefix", "commit", "entropy", "latent", "usage", "acc")},
                      batch_size=B)
        return loss

    @torch.no_grad()
    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._check_batch(batch)
        tok, B = self.tokenizer, batch["points"].shape[0]
        idx = tok.points_to_indices(batch["points"])  # [(B, M_k)]
        occ_BQ = batch["occupancy"].float()
        inside_BQ = occ_BQ > 0.5
        for k in range(1, len(idx) + 1):
            logits_BQ = tok.occupancy_logits(tok.indices_to_fhat(idx, k), batch["query"])
            bce = F.binary_cross_entropy_with_logits(logits_BQ, occ_BQ)
            pred_BQ = logits_BQ > 0
            iou = ((pred_BQ & inside_BQ).sum(1).float() / (pred_BQ | inside_BQ).sum(1).clamp(min=1)).mean()
            self.log_dict({f"val/bce_l{k}": bce, f"val/iou_l{k}": iou}, batch_size=B, sync_dist=True)
        self.log("val/bce", bce, prog_bar=True, batch_size=B, sync_dist=True)
        self.log("val/iou", iou, prog_bar=True, batch_size=B, sync_dist=True)
        self.log("val/acc", (pred_BQ == inside_BQ).float().mean(), batch_size=B, sync_dist=True)
        usage = [100.0 * i.unique().numel() / min(i.numel(), tok.quantize.vocab_size) for i in idx]
        self.log("val/usage", sum(usage) / len(usage), batch_size=B, sync_dist=True)


# ------------------------------------------------------------------------------------------- stage 2
class G3PTGeneratorModule(ConditionalGeneratorModule):
    """LightningModule training a :class:`~scalear.domains.g3pt.generator.G3PTGenerator` on a frozen
    :class:`~scalear.domains.g3pt.tokenizer.G3PTTokenizer` (arguments: see
    :class:`~scalear.gen3d.training.ConditionalGeneratorModule`; ``preset`` names a
    :data:`~scalear.domains.g3pt.generator.G3PT_GENERATOR_PRESETS` entry, ``input_key`` defaults to ``"points"``)."""

    tokenizer_type = G3PTTokenizer
    tokenizer_name = "G3PT tokenizer"
    default_input_key = "points"
    create_generator = staticmethod(create_generator)

    @torch.no_grad()
    def target_indices(self, batch: dict) -> list[torch.Tensor]:
        return self.tokenizer.points_to_indices(batch[self.input_key])
