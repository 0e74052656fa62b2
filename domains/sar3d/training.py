"""Training SAR3D in two stages through LightningCLI (``configs/sar3d/*.yaml``).

1. :class:`TriplaneTokenizerModule`: the multi-scale triplane VQ-VAE on batches ``{"grid", "points", "sdf"}``
   (:class:`scalear.datasets.meshes.data.MeshDataModule`): truncated-SDF L1 at the sample points plus the VQ loss.
   Validation logs the SDF L1 of the reconstruction from the first ``k`` scales for every ``k``
   (``val/sdf_l1_s<k>``, falling as scales are added) and the codebook usage per scale. Exports ``tokenizer``.
2. :class:`SAR3DGeneratorModule`: the core :class:`~scalear.training.nextscale.TeacherForcedModule` recipe (VAR's
   teacher-forced cross-entropy over all tokens, condition dropout for CFG) on the frozen stage-1 tokenizer, with
   the targets ``tokenizer.grid_to_indices(batch["grid"])`` and the condition a class label or the condition
   render through the jointly trained image encoder. Exports ``generator`` and ``tokenizer``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from scalear.domains.sar3d.generator import create_generator
from scalear.domains.sar3d.tokenizer import TriplaneVQVAE, tokenizer_config
from scalear.gen3d.training import ConditionalGeneratorModule
from scalear.training.base import OptimizerConfig, ScalearModule


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
        optimizer: OptimizerConfig = OptimizerConfig(lr=3e-3, weight_decay=0.0),
        export_dir: str | None = "export",
    ):
        super().__init__(optimizer, export_dir)
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
class SAR3DGeneratorModule(ConditionalGeneratorModule):
    """LightningModule training a :class:`~scalear.domains.sar3d.generator.SAR3DGenerator` on a frozen
    :class:`~scalear.domains.sar3d.tokenizer.TriplaneVQVAE` (arguments: see
    :class:`~scalear.gen3d.training.ConditionalGeneratorModule`; ``preset`` names a
    :data:`~scalear.domains.sar3d.generator.GENERATOR_PRESETS` entry, ``input_key`` defaults to ``"grid"`` and
    ``condition="image"`` reads the condition render under ``image_key``)."""

    tokenizer_type = TriplaneVQVAE
    tokenizer_name = "SAR3D triplane tokenizer"
    default_input_key = "grid"
    create_generator = staticmethod(create_generator)  # its tokenizer's img_to_indices is grid_to_indices
