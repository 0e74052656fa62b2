"""LightningModule training DAR (Wang et al., CVPR 2025) on batches ``{"image", "depth", "valid"}``.

The loss is :func:`~scalear.domains.depth.dar.dar_loss`: at every scale, SILog against the ground truth
area-pooled over its valid pixels to that scale plus a small cross-entropy on the bin nearest to it, weighted
``gamma**(K-1-k)`` (normalised), i.e. increasingly toward fine scales. The paper's loss is not public; this is a documented choice. Validation logs the standard
AbsRel / RMSE / d1 of the final prediction (upsampled to the GT size) and AbsRel per scale.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from scalear.domains.depth.dar import DAR_PRESETS, DARConfig, DARModel, dar_loss
from scalear.domains.depth.metrics import DepthEvalConfig, depth_metrics_batch
from scalear.training.base import OptimizerConfig, ScalearModule


class DARModule(ScalearModule):
    """Trains a :class:`~scalear.domains.depth.dar.DARModel`.

    Args:
        preset: a :data:`~scalear.domains.depth.dar.DAR_PRESETS` name.
        model: overrides of :class:`~scalear.domains.depth.dar.DARConfig` (unknown keys are an error).
        silog_lambda: ``lam`` of the SILog loss; scale_gamma: per-scale weight ratio (< 1 favours fine scales);
            ce_weight: weight of the bin cross-entropy (see :func:`~scalear.domains.depth.dar.dar_loss`).
        Other arguments: see :class:`~scalear.training.base.ScalearModule`.
    """

    def __init__(
        self,
        preset: str = "tiny",
        model: dict[str, Any] | None = None,
        silog_lambda: float = 0.5,
        scale_gamma: float = 0.6,
        ce_weight: float = 0.1,
        optimizer: OptimizerConfig = OptimizerConfig(lr=2e-3, weight_decay=0.01, warmup_steps=20, min_lr_ratio=0.05),
        export_dir: str | None = "export",
    ):
        super().__init__(optimizer, export_dir)
        self.save_hyperparameters()
        if preset not in DAR_PRESETS:
            raise ValueError(f"unknown DAR preset {preset!r}; available: {sorted(DAR_PRESETS)}")
        self.model = DARModel(DARConfig.from_dict({**DAR_PRESETS[preset].to_dict(), **(model or {})}))
        self.silog_lambda, self.scale_gamma, self.ce_weight = silog_lambda, scale_gamma, ce_weight
        cfg = self.model.cfg
        self.eval_cfg = DepthEvalConfig(max_depth=cfg.max_depth, min_depth=cfg.min_depth)

    def trainable(self) -> nn.Module:
        return self.model

    def no_weight_decay(self) -> set[str]:
        return {n.removeprefix("model.") for n in self.model.no_weight_decay_names()}

    def exported_models(self) -> dict[str, nn.Module]:
        return {"dar": self.model}

    def _loss(self, batch: dict) -> tuple[torch.Tensor, dict[str, list[torch.Tensor]], list[torch.Tensor]]:
        out = self.model.forward_all(batch["image"])
        loss, terms = dar_loss(out, batch["depth"], batch["valid"].bool(), self.model.bins, self.silog_lambda,
                               self.scale_gamma, self.ce_weight)
        return loss, terms, out.depth

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, terms, _ = self._loss(batch)
        B = batch["image"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=B)
        self.log_dict({"train/silog_tail": terms["silog"][-1].detach(), "train/ce_tail": terms["ce"][-1].detach()},
                      batch_size=B)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss, _, depths = self._loss(batch)
        gt, valid = batch["depth"], batch["valid"].bool()
        logs = {"val/loss": loss}
        for k, d in enumerate(depths):
            up = F.interpolate(d, size=gt.shape[-2:], mode="bilinear", align_corners=False)
            m, n = depth_metrics_batch(up, gt, self.eval_cfg, valid)
            keep = n > 0
            logs[f"val/abs_rel_s{k}"] = m["abs_rel"][keep].mean()
            if k == len(depths) - 1:
                logs |= {"val/abs_rel": m["abs_rel"][keep].mean(), "val/rmse": m["rmse"][keep].mean(),
                         "val/d1": m["d1"][keep].mean()}
        B = gt.shape[0]
        self.log("val/abs_rel", logs.pop("val/abs_rel"), prog_bar=True, sync_dist=True, batch_size=B)
        self.log_dict(logs, sync_dist=True, batch_size=B)
