"""The quickstart stages shared by the 3D domains (SAR3D, G3PT): both training stages through the domain's tiny
configs, and the tiny configs' data module for evaluation."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Sequence

from torch.utils.data import DataLoader

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


def score_exported_tokenizer(out: Path, val, score: Callable[[Any, DataLoader], dict]) -> tuple[Any, dict, float]:
    """The tokenizer the part exported (``out/export/tokenizer``, eval mode), ``score(tokenizer, loader)`` over the
    held-out dataset ``val`` in batches of 8, and the seconds scoring took."""
    from scalear.io import from_pretrained

    tok = from_pretrained(out / "export" / "tokenizer").eval()
    t = time.perf_counter()
    scores = score(tok, DataLoader(val, batch_size=8))
    return tok, scores, time.perf_counter() - t
