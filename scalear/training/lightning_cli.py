"""The LightningCLI runner of ``scalear <domain> fit`` and of the quickstart: run folders and resuming.

It sits below both the ``scalear`` command (:mod:`scalear.cli`) and the quickstart (:mod:`scalear.quickstart`),
which call it; Lightning is imported only when a run starts, so the command's help stays fast.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence


def last_checkpoint(folder: Path) -> Path:
    """The newest ``last*.ckpt`` in ``folder``; a :class:`~scalear.errors.UsageError` naming the folder if none."""
    from scalear.errors import UsageError

    found = sorted(Path(folder).glob("last*.ckpt"), key=lambda p: p.stat().st_mtime) if Path(folder).is_dir() else []
    if not found:
        raise UsageError(f"--ckpt_path last: nothing to resume in {folder} (no last.ckpt); "
                         "run without --ckpt_path to start this run")
    return found[-1]


def run_lightning(argv: Sequence[str], run: bool = True):
    """Run ``LightningCLI`` on ``argv`` (e.g. ``["fit", "--config", path]``) and return the CLI object.

    A run lives in one folder, the Trainer's ``default_root_dir``: ``checkpoints/`` (every ``ModelCheckpoint``
    without a ``dirpath``), ``export/`` (relative ``export_dir``) and ``logs/version_N/`` (one per attempt). None of
    them moves between attempts, so ``--ckpt_path last`` finds the run's newest ``last.ckpt`` and a stage-2 config
    finds stage 1's export at a fixed path. Resuming when there is nothing to resume is a
    :class:`~scalear.errors.UsageError`. On resume the model is built from the command's own configuration (not
    from the checkpoint's hyperparameters, as Lightning would), so options such as ``export_dir`` given on the
    resuming command apply.
    """
    import torch
    from lightning.pytorch import LightningDataModule
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.cli import LightningCLI

    from scalear.errors import UsageError
    from scalear.training.base import ScalearModule

    class ScalearCLI(LightningCLI):
        def add_arguments_to_parser(self, parser) -> None:
            # bf16 autocast on GPU unless the config says otherwise; full precision on CPU.
            parser.set_defaults({"trainer.precision": "bf16-mixed" if torch.cuda.is_available() else "32-true"})

        def _parse_ckpt_path(self) -> None:
            # replaces Lightning's, which rebuilds the model from the checkpoint's hyperparameters (dropping the
            # command's overrides): resolve "last" in this run's folder instead, and refuse a missing file
            sub = self.config.get("subcommand")
            cfg = self.config.get(sub) if sub else None
            ckpt = cfg.get("ckpt_path") if cfg is not None else None
            if ckpt is None:
                return
            if ckpt == "last":
                cfg.ckpt_path = str(last_checkpoint(checkpoint_folder(cfg)))
            elif ckpt not in ("best", "hpc", "registry") and not Path(ckpt).is_file():
                raise UsageError(f"--ckpt_path {ckpt}: no such checkpoint file")

        def after_instantiate_classes(self) -> None:
            super().after_instantiate_classes()
            dm = self.datamodule
            batch = getattr(dm, "batch_size", getattr(getattr(dm, "hparams", None), "batch_size", None))
            if batch is not None and (not isinstance(batch, int) or batch < 1):
                raise UsageError(f"data batch_size must be a positive integer, got {batch!r}")
            for cb in self.trainer.checkpoint_callbacks:
                if isinstance(cb, ModelCheckpoint) and cb.dirpath is None:
                    cb.dirpath = str((Path(self.trainer.default_root_dir) / "checkpoints").resolve())

    def checkpoint_folder(cfg) -> Path:
        """Where this run's ModelCheckpoint writes: its dirpath if the config names one, else <root>/checkpoints."""
        for cb in cfg.trainer.get("callbacks") or []:
            dirpath = (cb.get("init_args") or {}).get("dirpath") if hasattr(cb, "get") else None
            if str(cb.get("class_path", "")).endswith("ModelCheckpoint") and dirpath:
                return Path(dirpath)
        return Path(cfg.trainer.get("default_root_dir") or ".") / "checkpoints"

    # the arguments are `argv` (sys.argv also holds the domain verb): not a mistake, as Lightning warns. sys.argv
    # itself must stay: DDP's launcher re-runs the command line from it in the other processes.
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended to run from within Python")
    return ScalearCLI(
        ScalearModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=list(argv),
        run=run,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"parser_mode": "omegaconf"} if _has_omegaconf() else None,
    )


def _has_omegaconf() -> bool:
    try:
        import omegaconf  # noqa: F401
    except ImportError:
        return False
    return True
