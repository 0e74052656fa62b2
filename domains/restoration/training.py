"""Training Varformer through ``scalear restore fit`` (LightningCLI), in up to three stages.

Varformer's prior is a VAR model of *clean* images. With VAR's public weights (the ``paper`` preset) it is
loaded from local files (``var_checkpoint``, ``vae_checkpoint``). Without them, train a scalear prior first:

1. ``configs/restoration/prior_tokenizer_tiny.yaml``: the core's
   :class:`~scalear.training.tokenizer.TokenizerModule` on clean photo crops (:class:`CleanPhotoData`);
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

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from scalear.datasets.restoration.data import ImageFolder, SkimagePhotos, crop_and_flip
from scalear.domains.restoration.metrics import RestorationEvaluator
from scalear.domains.restoration.varformer import (VARFORMER_PRESETS, LossWeights, Varformer, VarformerConfig,
                                                   init_from_var, load_prior, varformer_loss)
from scalear.training.base import OptimizerConfig, ScalearModule
from scalear.training.loader import ResumableDataLoader


# ------------------------------------------------------------------------------------------- prior data
class CleanCrops(Dataset):
    """Random (or, with a seed, fixed) crops of clean images as ``{"image": (3, s, s) in [-1, 1]}``, ``repeats``
    per image and epoch; images are first area-downscaled by ``downscale`` so that crops hold more content."""

    def __init__(self, source: Dataset, crop_size: int, repeats: int = 1, downscale: float = 1.0,
                 seed: int | None = None):
        self.source, self.crop_size, self.repeats, self.seed = source, crop_size, repeats, seed
        self.images = []
        for i in range(len(source)):  # type: ignore[arg-type]
            im = source[i]["clean"]
            if downscale != 1.0:
                size = [max(crop_size, round(s / downscale)) for s in im.shape[-2:]]
                im = torch.nn.functional.interpolate(im[None], size, mode="area")[0]
            self.images.append(im)

    def __len__(self) -> int:
        return len(self.images) * self.repeats

    def __getitem__(self, i: int) -> dict:
        g = None if self.seed is None else torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        (crop,) = crop_and_flip([self.images[i % len(self.images)]], (self.crop_size,) * 2, "random", True, g)
        return {"image": crop * 2 - 1}


class CleanPhotoData(L.LightningDataModule):
    """Clean crops for training the prior (tokenizer, then transformer): ``train_dir`` images or the built-in
    scikit-image training photos; validation on the held-out photos (fixed crops).

    Args:
        crop_size: the tokenizer's input size (32 for the ``tiny`` preset).
        downscale: area-downscale factor applied to the photos before cropping.
        repeats: crops per image and epoch.
        train_dir, val_dir: folders of clean images (default: the built-in photos).
        batch_size, num_workers: loaders.
    """

    def __init__(self, crop_size: int = 32, downscale: float = 2.0, repeats: int = 200, train_dir: str | None = None,
                 val_dir: str | None = None, batch_size: int = 32, num_workers: int = 0):
        super().__init__()
        self.crop_size, self.downscale, self.repeats = crop_size, downscale, repeats
        self.train_dir, self.val_dir, self.batch_size, self.num_workers = train_dir, val_dir, batch_size, num_workers
        self.sets: dict[str, Dataset] = {}

    def setup(self, stage: str | None = None) -> None:
        if "train" not in self.sets:
            src = ImageFolder(self.train_dir) if self.train_dir else SkimagePhotos("train")
            self.sets["train"] = CleanCrops(src, self.crop_size, self.repeats, self.downscale)
            val = ImageFolder(self.val_dir) if self.val_dir else SkimagePhotos("heldout")
            self.sets["val"] = CleanCrops(val, self.crop_size, 8, self.downscale, seed=0)

    def train_dataloader(self) -> DataLoader:
        return ResumableDataLoader(self.sets["train"], self.batch_size, shuffle=True, drop_last=True,
                                   num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.sets["val"], self.batch_size, num_workers=self.num_workers)


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


__all__ = ["CleanCrops", "CleanPhotoData", "VarformerModule"]
