"""Shared optimisation for every scalear LightningModule (VAR, Sec. 4 / trainer.py recipe).

AdamW with VAR's betas (0.9, 0.95) and no weight decay on biases, norms, embeddings and modulation tokens;
learning rate with linear warmup then cosine decay, stepped per optimisation step; gradient clipping by the
Trainer (``gradient_clip_val``; VAR uses 2.0) or, with manual optimisation, by the module itself; weights
exported as safetensors + JSON config when training ends (after Lightning's ``EMAWeightAveraging`` callback,
when configured, has swapped the averaged weights in). bf16 autocast on GPU comes from the Trainer's
``precision="bf16-mixed"``, which the ``scalear`` CLI selects by default when CUDA is available.
"""

from __future__ import annotations

import math
import random
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch import nn

from scalear.errors import UsageError
from scalear.io import save_pretrained


def cosine_with_warmup(step: int, warmup_steps: int, total_steps: int, min_ratio: float = 0.0) -> float:
    """LR multiplier: linear from 0 to 1 over ``warmup_steps``, then cosine down to ``min_ratio`` at ``total_steps``.

    >>> [round(cosine_with_warmup(s, 2, 10), 2) for s in (0, 1, 2, 6, 10)]
    [0.0, 0.5, 1.0, 0.5, 0.0]
    """
    if step < warmup_steps:
        return step / max(warmup_steps, 1)
    progress = min(1.0, (step - warmup_steps) / max(total_steps - warmup_steps, 1))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def unfrozen_eval_modules(module: nn.Module) -> list[str]:
    """Names of the submodules of ``module`` in eval mode that no frozen network holds. A frozen network is a
    submodule in eval mode with parameters, none of them trainable (a stage-2 tokenizer, LPIPS, Varformer's prior):
    it and everything inside it are in eval mode on purpose."""
    frozen = [name for name, m in module.named_modules() if name and not m.training
              and next(m.parameters(), None) is not None and not any(p.requires_grad for p in m.parameters())]
    inside = tuple(f"{name}." for name in frozen)
    return [name for name, m in module.named_modules()
            if not m.training and name not in frozen and not name.startswith(inside)]


#: Lightning's warning about modules in eval mode when training starts (``fit_loop``)
_EVAL_MODE_WARNING = r"Found \d+ module\(s\) in eval mode at the start of training"


def param_groups(module: nn.Module, weight_decay: float, no_decay: set[str] | None = None) -> list[dict]:
    """Split parameters into decayed weights and undecayed biases/norms/embeddings (1-D or listed names)."""
    no_decay = no_decay or set()
    decay, skip = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        (skip if p.ndim <= 1 or name in no_decay else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": skip, "weight_decay": 0.0}]


def rng_states() -> dict:
    """Every global RNG training draws from (torch CPU and CUDA, numpy, python), as checkpoint-safe values:
    tensors, ints and tuples only, so ``torch.load(weights_only=True)`` reads them back."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)),
        "python": random.getstate(),
    }


def set_rng_states(state: dict) -> None:
    """Restore what :func:`rng_states` captured."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])


@dataclass(frozen=True)
class OptimizerConfig:
    """The optimiser of a training run: AdamW and a per-step LR schedule (linear warmup, then cosine decay).

    In a config it is one group under the module's ``init_args``; keys left out keep the module's defaults::

        optimizer:
          lr: 1.0e-3
          warmup_steps: 100

    Args:
        lr: peak learning rate.
        weight_decay: AdamW weight decay of matrices (VAR: 0.05).
        betas: AdamW betas (VAR: (0.9, 0.95)).
        warmup_steps: linear warmup length in optimiser steps.
        min_lr_ratio: final LR as a fraction of ``lr`` at the end of the cosine.
    """

    lr: float = 1e-4
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(self.betas))
        if self.lr <= 0 or self.weight_decay < 0 or self.warmup_steps < 0 or not 0 <= self.min_lr_ratio <= 1:
            raise UsageError(f"optimizer: need lr > 0, weight_decay >= 0, warmup_steps >= 0 and min_lr_ratio in "
                             f"[0, 1], got {self}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise UsageError(f"optimizer.betas: two numbers in [0, 1), got {self.betas}")


class ScalearModule(L.LightningModule):
    """Base LightningModule: optimiser, LR schedule and export. Subclasses define the models and steps.

    Args:
        optimizer: AdamW and LR-schedule settings (:class:`OptimizerConfig`; a dict of its fields is accepted, as
            read back from a checkpoint's hyper-parameters). Each subclass declares its own default.
        export_dir: where ``on_train_end`` writes ``<export_dir>/<name>/{model.safetensors,config.json}``; relative
            paths are resolved against the run folder (the Trainer's ``default_root_dir``), so every attempt of a
            run, resumed or not, exports to the same place. ``None`` disables export.

    Checkpoints hold, besides Lightning's state, every global RNG state at the moment of saving; a resumed run
    restores them when training starts, so it draws the same random numbers (dropout, augmentations, label
    dropout) as the uninterrupted run.
    """

    def __init__(self, optimizer: OptimizerConfig = OptimizerConfig(), export_dir: str | None = "export"):
        super().__init__()
        self.optim = OptimizerConfig(**optimizer) if isinstance(optimizer, dict) else optimizer
        self.export_dir = export_dir

    # ------------------------------------------------------------------ to override
    def trainable(self) -> nn.Module:
        """The module whose parameters the (main) optimiser trains (all of them unless overridden)."""
        return self

    def exported_models(self) -> dict[str, nn.Module]:
        """Models written by :meth:`export`, by folder name."""
        return {}

    def no_weight_decay(self) -> set[str]:
        return set()

    def frozen_submodules(self) -> dict[str, nn.Module]:
        """Frozen networks rebuilt from their own files (e.g. LPIPS), by attribute name: left out of checkpoints
        and taken from the live module when a checkpoint is loaded."""
        return {}

    # ------------------------------------------------------------------ optimisation
    def make_optimizer(self, module: nn.Module, lr: float | None = None, betas=None, no_decay: set[str] | None = None):
        groups = param_groups(module, self.optim.weight_decay, no_decay)
        return torch.optim.AdamW(groups, lr=lr or self.optim.lr, betas=tuple(betas or self.optim.betas))

    def make_scheduler(self, optimizer: torch.optim.Optimizer) -> dict:
        total = max(int(self.trainer.estimated_stepping_batches), 1) if self._trainer is not None else 1
        o = self.optim
        fn = lambda step: cosine_with_warmup(step, o.warmup_steps, total, o.min_lr_ratio)  # noqa: E731
        return {"scheduler": torch.optim.lr_scheduler.LambdaLR(optimizer, fn), "interval": "step"}

    def configure_optimizers(self):
        opt = self.make_optimizer(self.trainable(), no_decay=self.no_weight_decay())
        return {"optimizer": opt, "lr_scheduler": self.make_scheduler(opt)}

    # ------------------------------------------------------------------ export
    def resolved_export_dir(self) -> Path | None:
        if self.export_dir is None:
            return None
        path = Path(self.export_dir)
        if not path.is_absolute() and self._trainer is not None:
            path = Path(self.trainer.default_root_dir) / path
        return path

    def export(self, folder: str | Path | None = None) -> Path | None:
        """Write every model of :meth:`exported_models` as safetensors + config.json."""
        root = Path(folder) if folder is not None else self.resolved_export_dir()
        if root is None:
            return None
        for name, model in self.exported_models().items():
            save_pretrained(model, root / name)
        return root

    # ------------------------------------------------------------------ checkpoints and exact resume
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["scalear_module"] = f"{type(self).__module__}.{type(self).__qualname__}"
        checkpoint["scalear_rng"] = rng_states()
        hparams = checkpoint.get("hyper_parameters", {})
        if isinstance(hparams.get("optimizer"), OptimizerConfig):  # plain values: torch.load(weights_only=True) reads them
            hparams["optimizer"] = asdict(hparams["optimizer"])
        prefixes = tuple(f"{name}." for name in self.frozen_submodules())
        if prefixes:
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith(prefixes)}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        for name, module in self.frozen_submodules().items():
            checkpoint["state_dict"].update({f"{name}.{k}": v for k, v in module.state_dict().items()})
        # applied in on_train_start: after Lightning's sanity check, before the first resumed batch
        self._resume_rng = checkpoint.get("scalear_rng")

    def on_fit_start(self) -> None:
        """Lightning warns when training starts with modules in eval mode. Frozen networks are kept in eval mode on
        purpose (:func:`unfrozen_eval_modules`), so the warning is silenced until training starts (or the fit ends,
        when a finished run has nothing left to train) when they are the only ones; any other module in eval mode
        still gets it."""
        if not unfrozen_eval_modules(self):
            self._quiet_eval_warning = warnings.catch_warnings()
            self._quiet_eval_warning.__enter__()
            warnings.filterwarnings("ignore", message=_EVAL_MODE_WARNING)

    def _restore_warnings(self) -> None:
        quiet, self._quiet_eval_warning = getattr(self, "_quiet_eval_warning", None), None
        if quiet is not None:
            quiet.__exit__(None, None, None)

    def on_fit_end(self) -> None:
        self._restore_warnings()

    def on_train_start(self) -> None:
        self._restore_warnings()
        state, self._resume_rng = getattr(self, "_resume_rng", None), None
        if state is not None:
            set_rng_states(state)
        if self.trainer.ckpt_path:
            self.print(f"resumed at step {self.global_step} from {self.trainer.ckpt_path}")

    def on_train_end(self) -> None:
        if self.trainer.is_global_zero:
            root = self.export()
            if root is not None:
                self.print(f"exported weights to {root}")
