"""Training SAR3D in two stages through LightningCLI (``configs/sar3d/*.yaml``).

1. :class:`TriplaneTokenizerModule`: the multi-scale triplane VQ-VAE on batches ``{"grid", "points", "sdf"}``
   (:class:`scalear.datasets.meshes.data.MeshDataModule`): truncated-SDF L1 at the sample points plus the VQ loss.
   Validation logs the SDF L1 of the reconstruction from the first ``k`` scales for every ``k``
   (``val/sdf_l1_s<k>``, falling as scales are added) and the codebook usage per scale. Exports ``tokenizer``.
2. :class:`SAR3DGeneratorModule`: the core :class:`~scalear.training.nextscale.NextScaleModule` recipe (VAR's
   teacher-forced cross-entropy over all tokens, condition dropout for CFG) on the frozen stage-1 tokenizer, with
   the targets ``tokenizer.grid_to_indices(batch["grid"])`` and the condition a class label or the condition
   render through the jointly trained image encoder. Exports ``generator`` and ``tokenizer``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from scalear.domains.sar3d.generator import Condition, SAR3DGenerator, generator_config, indices_to_meshes
from scalear.domains.sar3d.tokenizer import TriplaneVQVAE, tokenizer_config
from scalear.io import from_pretrained
from scalear.training.base import ScalearModule
from scalear.training.nextscale import NextScaleModule


def _subsample_points(batch: dict, n: int | None) -> dict:
    """A random subset of ``n`` sample points per object (the same indices for the whole batch)."""
    N = batch["points"].shape[1]
    if n is None or n >= N:
        return batch
    pick = torch.randperm(N, device=batch["points"].device)[:n]
    return {**batch, "points": batch["points"][:, pick], "sdf": batch["sdf"][:, pick]}


# ------------------------------------------------------------------------------------------- stage 1
class TriplaneTokenizerModule(ScalearModule):
    """LightningModule training a :class:`~scalear.domains.sar3d.tokenizer.TriplaneVQVAE`.

    Args:
        preset: a :data:`~scalear.domains.sar3d.tokenizer.TRIPLANE_PRESETS` name.
        tokenizer: overrides of the preset's :class:`~scalear.domains.sar3d.tokenizer.TriplaneVQVAEConfig` fields.
        vq_weight: weight of the VQ loss (commitment beta inside the quantizer, 0.25).
        train_points: SDF samples per object used in a training step (None: all of the batch's).
        Other arguments: see :class:`~scalear.training.base.ScalearModule`.
    """

    def __init__(
        self,
        preset: str = "tiny",
        tokenizer: dict[str, Any] | None = None,
        vq_weight: float = 1.0,
        train_points: int | None = 2048,
        lr: float = 3e-3,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.95),
        warmup_steps: int = 0,
        min_lr_ratio: float = 0.0,
        export_dir: str | None = "export",
    ):
        super().__init__(lr, weight_decay, betas, warmup_steps, min_lr_ratio, export_dir)
        self.save_hyperparameters()
        self.tokenizer = TriplaneVQVAE(tokenizer_config(preset, **(tokenizer or {})))
        self.vq_weight, self.train_points = vq_weight, train_points

    def exported_models(self) -> dict[str, nn.Module]:
        return {"tokenizer": self.tokenizer}

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, logs = self.tokenizer.loss(_subsample_points(batch, self.train_points), self.vq_weight)
        B = batch["grid"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=B)
        self.log_dict({"train/sdf_l1": logs["sdf_l1"], "train/vq": logs["vq"]}, prog_bar=True, batch_size=B)
        self.log("train/usage", sum(logs["usage"]) / len(logs["usage"]), batch_size=B)
        return loss

    @torch.no_grad()
    def validation_step(self, batch: dict, batch_idx: int) -> None:
        tok, t, B = self.tokenizer, self.tokenizer.config.truncation, batch["grid"].shape[0]
        indices = tok.grid_to_indices(batch["grid"])
        target = batch["sdf"].clamp(-t, t)
        for k in range(1, tok.schedule.num_scales + 1):
            pred = tok.query_sdf(tok.decode_triplane(tok.indices_to_fhat(indices, k)), batch["points"])
            l1 = (pred.clamp(-t, t) - target).abs().mean()
            self.log(f"val/sdf_l1_s{k - 1}", l1, batch_size=B, sync_dist=True)
        self.log("val/sdf_l1", l1, prog_bar=True, batch_size=B, sync_dist=True)
        far = batch["sdf"].abs() > 1 / tok.config.grid_resolution  # inside/outside is ambiguous within a voxel
        self.log("val/sign_acc", ((pred < 0) == (batch["sdf"] < 0))[far].float().mean(), batch_size=B, sync_dist=True)
        usage = tok.quantize.usage_percent()
        self.log("val/usage", sum(usage) / len(usage), batch_size=B, sync_dist=True)


# ------------------------------------------------------------------------------------------- stage 2
class SAR3DGeneratorModule(NextScaleModule):
    """LightningModule training a :class:`~scalear.domains.sar3d.generator.SAR3DGenerator` on a frozen tokenizer.

    Args:
        tokenizer: folder of an exported :class:`~scalear.domains.sar3d.tokenizer.TriplaneVQVAE`.
        preset: a :data:`~scalear.domains.sar3d.generator.GENERATOR_PRESETS` name.
        condition: ``"class"`` (labels) or ``"image"`` (the condition render).
        num_classes: classes of a class-conditional model (the data module's ``len(classes)``).
        generator: overrides of :class:`~scalear.domains.sar3d.generator.SAR3DGeneratorConfig` fields
            (``transformer`` is merged into the preset's).
        grid_key, label_key, image_key: batch keys.
        Other arguments: see :class:`~scalear.training.nextscale.NextScaleModule`.
    """

    def __init__(
        self,
        tokenizer: str,
        preset: str = "tiny",
        condition: Condition = "class",
        num_classes: int = 4,
        generator: dict[str, Any] | None = None,
        label_smoothing: float = 0.0,
        grid_key: str = "grid",
        label_key: str = "label",
        image_key: str = "image",
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        betas: tuple[float, float] = (0.9, 0.95),
        warmup_steps: int = 0,
        min_lr_ratio: float = 0.0,
        export_dir: str | None = "export",
    ):
        ScalearModule.__init__(self, lr, weight_decay, betas, warmup_steps, min_lr_ratio, export_dir)
        self.save_hyperparameters()
        tok = from_pretrained(tokenizer)
        if not isinstance(tok, TriplaneVQVAE):
            raise ValueError(f"{tokenizer} holds a {type(tok).__name__}, not a SAR3D triplane tokenizer")
        self.tokenizer: TriplaneVQVAE = tok.eval().requires_grad_(False)
        self.generator = SAR3DGenerator(generator_config(preset, self.tokenizer, condition=condition,
                                                         num_classes=num_classes, **dict(generator or {})))
        self.transformer = self.generator.transformer
        self.label_smoothing, self.input_key, self.label_key = label_smoothing, grid_key, label_key
        self.image_key = image_key
        self.register_buffer("level_L", self.tokenizer.schedule.level_ids(), persistent=False)

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
        cfg.class_names = tuple(names)

    def trainable(self) -> nn.Module:
        return self.generator

    def no_weight_decay(self) -> set[str]:
        return self.generator.no_weight_decay_names()

    def exported_models(self) -> dict[str, nn.Module]:
        return {"generator": self.generator, "tokenizer": self.tokenizer}

    def condition(self, batch: dict) -> dict[str, torch.Tensor]:
        if self.generator.cfg.condition == "class":
            return self.generator.condition_kwargs(labels=batch[self.label_key])
        return self.generator.condition_kwargs(images=batch[self.image_key])

    @torch.no_grad()
    def target_indices(self, batch: dict) -> list[torch.Tensor]:
        return self.tokenizer.grid_to_indices(batch[self.input_key])

    @torch.no_grad()
    def generate(self, labels: torch.Tensor | None = None, images: torch.Tensor | None = None,
                 resolution: int = 64, **kwargs: Any) -> tuple[list, list[torch.Tensor]]:
        """Sample objects (:meth:`SAR3DGenerator.generate` keywords) -> (meshes or None, per-scale indices)."""
        self.generator.eval()
        indices = self.generator.generate(self.tokenizer, labels, images, **kwargs)
        return indices_to_meshes(self.tokenizer, indices, resolution), indices
