"""Training DepthART (Gabdullin et al.) in two stages, both through ``scalear depth fit`` (LightningCLI).

1. The shared RGB tokenizer: the core's :class:`~scalear.training.tokenizer.TokenizerModule` on
   :class:`~scalear.datasets.depth.data.RGBDTokenizerData`, which turns any RGB-D data module into tokenizer inputs, every scene twice:
   its image and its normalised depth repeated to 3 channels (DepthART's encoding). The paper instead freezes
   VAR's ImageNet tokenizer, whose weights cannot be downloaded here (:func:`~scalear.domains.depth.depthart.init_from_var`
   loads them from local files).
2. The transformer: :class:`DepthARTModule` on batches ``{"image", "depth", "valid"}`` with the tokenizer frozen;
   ``training: dynamic`` (DepthART's self-refinement) or ``teacher_forcing`` (VAR's recipe), so the two can be
   compared on the same data (``benchmarks/bench_depthart.py``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from scalear.domains.depth.depthart import DEPTHART_PRESETS, DepthARTModel, TrainingMode, depthart_loss, preset_config
from scalear.domains.depth.metrics import DepthEvalConfig, depth_metrics_batch
from scalear.io import from_pretrained
from scalear.training.base import OptimizerConfig, ScalearModule
from scalear.vqvae import VQVAE


# ------------------------------------------------------------------------------------------- stage 2
class DepthARTModule(ScalearModule):
    """Trains the transformer of a :class:`~scalear.domains.depth.depthart.DepthARTModel` on a frozen tokenizer.

    Args:
        tokenizer: folder of the exported shared RGB tokenizer (stage 1, or VAR's converted with
            :func:`scalear.var_checkpoints.load_var_vqvae` and ``save_pretrained``).
        preset: a :data:`~scalear.domains.depth.depthart.DEPTHART_PRESETS` name (its transformer and sampling).
        transformer: overrides of the preset's transformer fields.
        training: ``"dynamic"`` (DepthART's dynamic targets) or ``"teacher_forcing"`` (VAR's).
        mse_weight: weight of the final-latent MSE in dynamic training (paper: 10; 0 = cross-entropy only).
        gumbel_tau: Gumbel-softmax temperature of the last scale's soft code.
        sampling: overrides of the inference sampling used in validation (``top_k``, ``top_p``, ``temperature``,
            ``num_samples``).
        Other arguments: see :class:`~scalear.training.base.ScalearModule` (paper: AdamW lr 1e-4, betas
        (0.9, 0.999), weight decay 0.01).
    """

    def __init__(
        self,
        tokenizer: str,
        preset: str = "tiny",
        transformer: dict[str, Any] | None = None,
        training: TrainingMode = "dynamic",
        mse_weight: float = 10.0,
        gumbel_tau: float = 1.0,
        sampling: dict[str, Any] | None = None,
        optimizer: OptimizerConfig = OptimizerConfig(lr=1e-4, weight_decay=0.01, betas=(0.9, 0.999)),
        export_dir: str | None = "export",
    ):
        super().__init__(optimizer, export_dir)
        self.save_hyperparameters()
        if preset not in DEPTHART_PRESETS:  # a ValueError, which LightningCLI reports as a config error
            raise ValueError(f"unknown DepthART preset {preset!r}; available: {sorted(DEPTHART_PRESETS)}")
        if training not in ("dynamic", "teacher_forcing"):
            raise ValueError(f"training must be 'dynamic' or 'teacher_forcing', got {training!r}")
        tok = from_pretrained(tokenizer)
        if not isinstance(tok, VQVAE):
            raise ValueError(f"{tokenizer}: expected an exported VQ-VAE tokenizer, got a {type(tok).__name__}")
        cfg = preset_config(preset, transformer=dict(transformer or {}), tokenizer=tok.config.to_dict(), **(sampling or {}))
        self.model = DepthARTModel(cfg, tokenizer=tok)
        self.training_mode, self.mse_weight, self.gumbel_tau = training, mse_weight, gumbel_tau

    def trainable(self) -> nn.Module:
        return self.model.transformer

    def no_weight_decay(self) -> set[str]:
        return self.model.transformer.no_weight_decay_names()

    def exported_models(self) -> dict[str, nn.Module]:
        return {"depthart": self.model}

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, logs = depthart_loss(self.model, batch["image"], batch["depth"], batch.get("valid"), self.training_mode,
                                   self.mse_weight, self.gumbel_tau)
        B = batch["image"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=B)
        self.log_dict({f"train/{k}": v for k, v in logs.items() if not k.startswith("acc_s")}, batch_size=B)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        """Teacher-forced cross-entropy / accuracy per scale, and the sampled depth's median-scaled AbsRel / d1."""
        image, depth, valid = batch["image"], batch["depth"], batch.get("valid")
        B = image.shape[0]
        _, logs = depthart_loss(self.model, image, depth, valid, "teacher_forcing")
        gen = torch.Generator(device=image.device).manual_seed(batch_idx)
        pred = self.model.predict_depth(image, generator=gen)
        valid = (depth > 0) if valid is None else valid.bool()
        cfg = DepthEvalConfig(max_depth=float(depth[valid].max()) + 1e-3, min_depth=1e-3, median_scaling=True)
        m, n = depth_metrics_batch(pred, depth, cfg, valid)
        keep = n > 0
        self.log("val/abs_rel", m["abs_rel"][keep].mean(), prog_bar=True, sync_dist=True, batch_size=B)
        self.log_dict({"val/d1": m["d1"][keep].mean(), "val/ce_tf": logs["ce"], "val/acc_tf": logs["acc"]},
                      sync_dist=True, batch_size=B)
        self.log_dict({f"val/{k}_tf": v for k, v in logs.items() if k.startswith("acc_s")}, sync_dist=True, batch_size=B)


__all__ = ["DepthARTModule"]
