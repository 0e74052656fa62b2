"""Training of the multi-scale VQ-VAE tokenizer (VAR Sec. 3.2 / 4; the VQGAN objective of Esser et al. 2021).

VAR released no tokenizer training code; this module provides it. The loss is

    L = l1_weight * |x - x_rec| + l2_weight * ||x - x_rec||^2 + vq_weight * L_vq
        + perceptual_weight * LPIPS(x, x_rec) + gan_weight * lambda_adaptive * L_G        (after gan_start)

with the quantizer's VQ loss (commitment beta = 0.25), an optional LPIPS loss whose VGG16/LPIPS weights come
from a local file, and an optional PatchGAN with hinge losses and VQGAN's adaptive weight. Dead codes are
re-seeded by the quantizer (``restart_every``), and per-scale codebook usage is logged, because codebook
collapse at the smallest scales is the failure users report most when reproducing VAR's tokenizer.
"""

from __future__ import annotations

from typing import Any

import kornia
import torch
import torch.nn.functional as F
from torch import nn

from scalear.losses import LPIPS, NLayerDiscriminator, adaptive_gan_weight, hinge_d_loss, hinge_g_loss
from scalear.training.base import OptimizerConfig, ScalearModule
from scalear.vqvae import VQVAE, create_vqvae


class TokenizerModule(ScalearModule):
    """LightningModule that trains a :class:`~scalear.vqvae.VQVAE`.

    Args:
        preset: a :data:`~scalear.vqvae.VQVAE_PRESETS` name.
        vqvae: overrides of the preset's :class:`~scalear.vqvae.VQVAEConfig` fields (unknown keys are an error).
        input_key: batch key holding inputs in [-1, 1].
        l1_weight, l2_weight, vq_weight: reconstruction and VQ loss weights.
        perceptual_weights: local LPIPS weights file (VGG16 features + LPIPS heads); None disables LPIPS.
        perceptual_lin_weights: LPIPS heads in a separate file, if not combined with the VGG16 weights.
        perceptual_weight: LPIPS weight.
        gan_weight: PatchGAN weight (0 disables the discriminator).
        gan_start: optimiser step from which the GAN loss is used.
        disc_lr: discriminator learning rate (default: ``lr``).
        disc_ndf, disc_layers: discriminator width and depth.
        grad_clip: gradient-norm clipping of both optimisers (0 disables it).
        Other arguments: see :class:`~scalear.training.base.ScalearModule`.
    """

    def __init__(
        self,
        preset: str = "tiny",
        vqvae: dict[str, Any] | None = None,
        input_key: str = "image",
        l1_weight: float = 1.0,
        l2_weight: float = 1.0,
        vq_weight: float = 1.0,
        perceptual_weights: str | None = None,
        perceptual_lin_weights: str | None = None,
        perceptual_weight: float = 1.0,
        gan_weight: float = 0.0,
        gan_start: int = 0,
        disc_lr: float | None = None,
        disc_ndf: int = 64,
        disc_layers: int = 3,
        grad_clip: float = 2.0,
        optimizer: OptimizerConfig = OptimizerConfig(lr=2e-4, weight_decay=0.0, betas=(0.5, 0.9), min_lr_ratio=0.1),
        export_dir: str | None = "export",
    ):
        super().__init__(optimizer, export_dir)
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.vqvae: VQVAE = create_vqvae(preset, **(vqvae or {}))
        self.input_key = input_key
        self.l1_weight, self.l2_weight, self.vq_weight = l1_weight, l2_weight, vq_weight
        self.perceptual_weight, self.gan_weight, self.gan_start = perceptual_weight, gan_weight, gan_start
        self.grad_clip, self.disc_lr = grad_clip, disc_lr
        self.lpips = LPIPS(perceptual_weights, perceptual_lin_weights) if perceptual_weights else None
        self.disc = None
        if gan_weight > 0:
            c = self.vqvae.config
            self.disc = NLayerDiscriminator(c.in_channels, disc_ndf, disc_layers, dims=c.dims, norm="group")

    def trainable(self) -> nn.Module:
        return self.vqvae

    def frozen_submodules(self) -> dict[str, nn.Module]:
        # the frozen LPIPS network comes from `perceptual_weights`; keep ~58 MB out of every checkpoint
        return {"lpips": self.lpips} if self.lpips is not None else {}

    def exported_models(self) -> dict[str, nn.Module]:
        return {"tokenizer": self.vqvae}

    def configure_optimizers(self):
        opt = self.make_optimizer(self.vqvae)
        out = [{"optimizer": opt, "lr_scheduler": self.make_scheduler(opt)}]
        if self.disc is not None:
            d_opt = self.make_optimizer(self.disc, lr=self.disc_lr or self.optim.lr)
            out.append({"optimizer": d_opt, "lr_scheduler": self.make_scheduler(d_opt)})
        return out

    # ------------------------------------------------------------------ losses
    def reconstruction_loss(self, x: torch.Tensor, rec: torch.Tensor) -> torch.Tensor:
        loss = self.l1_weight * F.l1_loss(rec, x) + self.l2_weight * F.mse_loss(rec, x)
        if self.lpips is not None:
            loss = loss + self.perceptual_weight * self.lpips(rec, x).mean()
        return loss

    def gan_active(self) -> bool:
        return self.disc is not None and self.global_step >= self.gan_start

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        x = batch[self.input_key]
        opts, scheds = self.optimizers(), self.lr_schedulers()
        opts, scheds = (opts if isinstance(opts, list) else [opts]), (scheds if isinstance(scheds, list) else [scheds])
        rec, q = self.vqvae(x)
        rec_loss = self.reconstruction_loss(x, rec)
        loss = rec_loss + self.vq_weight * q.loss
        logs = {"train/rec": rec_loss, "train/vq": q.loss}
        if self.gan_active():
            g_loss = hinge_g_loss(self.disc(rec))
            w = adaptive_gan_weight(rec_loss, g_loss, self.vqvae.last_layer) * self.gan_weight
            loss = loss + w * g_loss
            logs |= {"train/g": g_loss, "train/gan_w": w}
        self._step(opts[0], scheds[0], loss, self.vqvae)
        if self.gan_active():
            d_loss = hinge_d_loss(self.disc(x.detach()), self.disc(rec.detach()))
            self._step(opts[1], scheds[1], d_loss, self.disc)
            logs["train/d"] = d_loss
        logs["train/loss"] = loss
        self.log_dict(logs, prog_bar=True, on_step=True, on_epoch=False)
        self.log_usage("train", q.usage)
        return loss

    def _step(self, opt, sched, loss: torch.Tensor, module: nn.Module) -> None:
        opt.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        if self.grad_clip > 0:
            self.clip_gradients(opt, gradient_clip_val=self.grad_clip, gradient_clip_algorithm="norm")
        opt.step()
        sched.step()

    def log_usage(self, stage: str, usage: list[float]) -> None:
        """Per-scale codebook usage (% of codes in use), plus the minimum over scales."""
        self.log_dict({f"{stage}/usage_s{k}": u for k, u in enumerate(usage)}, on_step=stage == "train", on_epoch=stage != "train")
        self.log(f"{stage}/usage_min", min(usage), prog_bar=True, on_step=stage == "train", on_epoch=stage != "train")

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        x = batch[self.input_key]
        rec, q = self.vqvae(x)
        psnr = kornia.metrics.psnr(rec, x, max_val=2.0)  # inputs in [-1, 1]: peak-to-peak range 2
        self.log_dict({"val/rec": self.reconstruction_loss(x, rec), "val/vq": q.loss, "val/psnr": psnr}, prog_bar=True, sync_dist=True)
