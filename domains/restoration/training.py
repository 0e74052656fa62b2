"""Training Varformer through ``scalear restore fit`` (LightningCLI), in up to three stages.

Varformer's prior is a VAR model of *clean* images. With VAR's public weights (the ``paper`` preset) it is
loaded from local files (``var_checkpoint``, ``vae_checkpoint``). Without them, train a scalear prior first:

1. ``configs/restoration/prior_tokenizer_tiny.yaml``: the core's
   :class:`~scalear.training.tokenizer.TokenizerModule` on clean photo crops (:class:`~scalear.datasets.restoration.data.CleanPhotoData`);
2. ``configs/restoration/prior_transformer_tiny.yaml``: the core's unconditional
   :class:`~scalear.training.nextscale.NextScaleModule` on the same crops, tokenized by stage 1's tokenizer;
3. ``configs/restoration/varformer_tiny.yaml``: :class:`VarformerModule` on degraded/clean pairs of
   :class:`~scalear.datasets.restoration.data.RestorationDataModule`, the prior loaded from stages 1-2 and
   frozen as :attr:`~scalear.domains.restoration.varformer.VarformerConfig.freeze` says.

Without stage 2 (``prior_transformer: null``) the transformer starts from random weights; then leave
``blocks`` out of ``freeze`` so that it is trained (the prior is then learnt from the restoration losses only).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from scalear.domains.restoration.metrics import RestorationEvaluator
from scalear.domains.restoration.varformer import (VARFORMER_PRESETS, LossWeights, Varformer, VarformerConfig,
                                                   init_from_var, load_prior, varformer_loss)
from scalear.training.base import OptimizerConfig, ScalearModule


# ------------------------------------------------------------------------------------------- Varformer
class VarformerModule(ScalearModule):
    """Trains a :class:`~scalear.domains.restoration.varformer.Varformer` on ``{"clean", "degraded",
    "degradation"}`` batches; validation logs PSNR / SSIM (RGB and Y) overall and per degradation.

    Args:
        preset: a :data:`~scalear.domains.restoration.varformer.VARFORMER_PRESETS` name.
        model: overrides of the preset's :class:`~scalear.domains.restoration.varformer.VarformerConfig`
            fields (``use_prior``, ``freeze``, ``widths``, ...; a ``transformer`` dict is merged).
        prior_tokenizer, prior_transformer: exported folders of a scalear prior trained on clean images.
        vae_checkpoint, var_checkpoint: VAR's public ``vae_ch160v4096z32.pth`` / ``var_d16.pth`` (local files).
        l1_weight, feature_weight, token_weight: loss weights (reference: 1, 0.5, 0.1).
        perceptual_weights, perceptual_lin_weights: local LPIPS weights (None: no perceptual loss);
            perceptual_weight: its weight (reference: 1).
        val_crop_border: pixels cropped on each side before validation metrics (Varformer: 4).
        Other arguments: see :class:`~scalear.training.base.ScalearModule` (reference: Adam lr 1e-4,
        betas (0.9, 0.99)).
    """

    def __init__(
        self,
        preset: str = "tiny",
        model: dict[str, Any] | None = None,
        prior_tokenizer: str | None = None,
        prior_transformer: str | None = None,
        vae_checkpoint: str | None = None,
        var_checkpoint: str | None = None,
        l1_weight: float = 1.0,
        feature_weight: float = 0.5,
        token_weight: float = 0.1,
        perceptual_weights: str | None = None,
        perceptual_lin_weights: str | None = None,
        perceptual_weight: float = 1.0,
        val_crop_border: int = 0,
        optimizer: OptimizerConfig = OptimizerConfig(lr=1e-3, weight_decay=0.0, betas=(0.9, 0.99), min_lr_ratio=0.05),
        export_dir: str | None = "export",
    ):
        super().__init__(optimizer, export_dir)
        self.save_hyperparameters()
        if preset not in VARFORMER_PRESETS:
            raise ValueError(f"unknown Varformer preset {preset!r}; available: {sorted(VARFORMER_PRESETS)}")
        d, overrides = VARFORMER_PRESETS[preset].to_dict(), dict(model or {})
        if "transformer" in overrides:
            overrides["transformer"] = {**d["transformer"], **overrides["transformer"]}
        self.model = Varformer(VarformerConfig.from_dict({**d, **overrides}))
        if self.model.prior is not None:
            load_prior(self.model, prior_tokenizer, prior_transformer)
            if vae_checkpoint or var_checkpoint:
                init_from_var(self.model, var_checkpoint, vae_checkpoint)
        elif any((prior_tokenizer, prior_transformer, vae_checkpoint, var_checkpoint)):
            raise ValueError("use_prior is False: drop prior_tokenizer / prior_transformer / VAR checkpoints")
        self.model.apply_freeze()
        self.weights = LossWeights(l1_weight, feature_weight, token_weight, perceptual_weight)
        self.lpips = None
        if perceptual_weights:
            from scalear.losses import LPIPS

            self.lpips = LPIPS(perceptual_weights, perceptual_lin_weights).eval().requires_grad_(False)
        self.evaluator = RestorationEvaluator(crop_border=val_crop_border)

    def trainable(self) -> nn.Module:
        return self.model

    def exported_models(self) -> dict[str, nn.Module]:
        return {"varformer": self.model}

    def train(self, mode: bool = True):
        super().train(mode)
        if self.lpips is not None:
            self.lpips.eval()
        return self

    def frozen_submodules(self) -> dict[str, nn.Module]:
        return {"lpips": self.lpips} if self.lpips is not None else {}

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, logs, _ = varformer_loss(self.model, batch["degraded"], batch["clean"], self.weights, self.lpips)
        B = batch["clean"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=B)
        self.log_dict({f"train/{k}": v for k, v in logs.items()}, batch_size=B)
        return loss

    def on_validation_epoch_start(self) -> None:
        self.evaluator.reset()

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        pred = self.model.restore(batch["degraded"])
        labels = batch.get("degradation", "val")
        labels = labels if isinstance(labels, str) else list(labels)
        self.evaluator.update(pred.float().cpu(), batch["clean"].float().cpu(), labels)

    def on_validation_epoch_end(self) -> None:
        self.evaluator.gather()  # every process logs the whole validation set's means (same values everywhere)
        if not self.evaluator.records:
            return
        res = self.evaluator.compute()
        avg = res.pop("average")
        self.log("val/psnr", avg["psnr"], prog_bar=True)
        self.log_dict({"val/ssim": avg["ssim"], "val/psnr_y": avg["psnr_y"], "val/ssim_y": avg["ssim_y"]})
        self.log_dict({f"val/psnr_{k}": v["psnr"] for k, v in res.items()})


__all__ = ["VarformerModule"]
