"""The quickstart stages shared by the 3D domains (SAR3D, G3PT): both training stages through the domain's tiny
configs, and the tiny configs' data module for evaluation."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

from scalear.quickstart import config_path, fit_with_cli


def fit_tokenizer_and_generator(domain: str, out: Path, steps: dict[str, int], per_class: int,
                                generator_args: Sequence[str] = ()) -> dict[str, float]:
    """The two stages of a 3D domain through its configs ``configs/<domain>/{tokenizer,generator}_tiny.yaml``:
    ``steps[stage]`` steps each, ``per_class`` procedural training objects per class, the sample cache under
    ``out/cache``, no validation (the parts evaluate afterwards); the generator trains on the exported
    tokenizer. Returns the wall time of each stage in seconds."""
    export, seconds = out / "export", {}
    for stage in ("tokenizer", "generator"):
        n = steps[stage]
        args = ["--trainer.max_steps", str(n), "--trainer.val_check_interval", str(n), "--trainer.limit_val_batches",
                "0", "--data.init_args.cache_dir", str(out / "cache"), "--data.init_args.per_class", str(per_class)]
        if stage == "generator":
            args += ["--model.init_args.tokenizer", str(export / "tokenizer"), *generator_args]
        t = time.perf_counter()
        fit_with_cli(config_path(domain, f"{stage}_tiny"), out / stage, export, args)
        seconds[stage] = time.perf_counter() - t
    return seconds


def tiny_data_module(domain: str, out: Path, per_class: int):
    """The data module of ``configs/<domain>/tokenizer_tiny.yaml`` with the part's cache and object count, set up
    for validation (its ``val_dataset`` holds the held-out objects)."""
    import importlib

    import yaml

    data = yaml.safe_load(config_path(domain, "tokenizer_tiny").read_text())["data"]
    module, name = data["class_path"].rsplit(".", 1)
    dm = getattr(importlib.import_module(module), name)(**{**data["init_args"], "cache_dir": str(out / "cache"),
                                                           "per_class": per_class})
    dm.setup("validate")
    return dm
