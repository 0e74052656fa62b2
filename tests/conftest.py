"""Shared fixtures: seeded RNG and the location of the real sample data in ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

if os.environ.get("PYTEST_XDIST_WORKER"):  # pytest -n N: one thread per worker process, N workers share the cores
    os.environ["OMP_NUM_THREADS"] = "1"

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def shared_data() -> Path:
    """Root of ../shared/data; tests using it skip with a reason in a clone that has no ../shared."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real sample data not found at {SHARED_DATA} (CI provides ../shared next to the clone)")
    return SHARED_DATA


@pytest.fixture(scope="module")
def single_thread():
    """One intra-op thread for a module: on a shared 2-core machine, OpenMP spin-waiting makes small ops
    10-100x slower when another process holds a core."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


#: where device-dependent checks run: the CPU always, CUDA too where there is one (CI has none: run the tests that
#: take the ``device`` fixture on a lent GPU)
DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


@pytest.fixture(params=DEVICES)
def device(request):
    """A device of :data:`DEVICES`; on CUDA without TF32 matmuls and convolutions, so that results round as fp32
    does on the CPU."""
    if request.param == "cpu":
        yield "cpu"
        return
    precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            yield "cuda"
    finally:
        torch.set_float32_matmul_precision(precision)


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def import_benchmark(name: str):
    """A script of ``benchmarks/`` as a module (it imports its siblings, e.g. ``_common``, by plain name)."""
    import importlib
    import sys

    sys.path.insert(0, str(BENCHMARKS))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCHMARKS))


def small_transformer(schedule, vocab_size: int = 32, latent_dim: int = 4, width: int = 64, peaked: bool = False,
                     **variant):
    """A small :class:`~scalear.transformer.NextScaleTransformer` (depth 2) whose every parameter matters: VAR's
    initialisation leaves the head tiny and the AdaLN gates near zero, so parameters are perturbed; ``peaked``
    scales the head up so that top-k / top-p really filter. ``variant`` is its conditioning (TransformerConfig
    fields: ``num_classes``, ``cond_dim``, ``context_dim``, ``prefix_dim`` + ``max_prefix_len``, ...)."""
    from scalear.transformer import NextScaleTransformer, TransformerConfig

    cfg = TransformerConfig(vocab_size=vocab_size, latent_dim=latent_dim, schedule=schedule, depth=2, width=width,
                            num_heads=4, init_adaln_gamma=0.5, **variant)
    model = NextScaleTransformer(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
        if peaked:
            model.head.weight.mul_(20)
    return model


def transformer_conditions(variant: dict, B: int, generator: torch.Generator | None = None) -> dict:
    """Random conditions of a batch of ``B`` for a :func:`small_transformer` ``variant``: labels, vectors, 5 context
    tokens, a full prefix, whichever it takes."""
    kw = {}
    if "num_classes" in variant:
        kw["label_B"] = torch.randint(0, variant["num_classes"], (B,), generator=generator)
    if "cond_dim" in variant:
        kw["cond_BD"] = torch.randn(B, variant["cond_dim"], generator=generator)
    if "context_dim" in variant:
        kw["context_BTD"] = torch.randn(B, 5, variant["context_dim"], generator=generator)
    if "prefix_dim" in variant:
        kw["prefix_BPD"] = torch.randn(B, variant["max_prefix_len"], variant["prefix_dim"], generator=generator)
    return kw


def var_top_k_top_p_filter(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """VAR's ``sample_with_top_k_top_p_`` masking written out, the reference of the samplers' filters: top-k by a
    sorted top-k (every token tied with the k-th kept), then top-p by a sort of the whole row."""
    logits = logits.clone()
    if 0 < top_k < logits.shape[-1]:
        logits[logits < logits.topk(top_k, dim=-1, sorted=True).values[..., -1:]] = float("-inf")
    if 0 < top_p < 1:
        s, order = logits.sort(dim=-1)
        remove = s.softmax(-1).cumsum(-1) <= 1 - top_p
        remove[..., -1] = False
        logits[remove.scatter(-1, order, remove)] = float("-inf")
    return logits


def write_ball_and_box_meshes(root: Path, per_class: int = 2) -> Path:
    """A mesh folder ``root/<class>/<class>_<i>.obj`` of two classes (spheres and boxes of growing size)."""
    import trimesh

    for cls, make in (("ball", lambda i: trimesh.creation.icosphere(3, 0.2 + 0.05 * i)),
                      ("box", lambda i: trimesh.creation.box(extents=(0.3, 0.4 + 0.1 * i, 0.6)))):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            make(i).export(root / cls / f"{cls}_{i}.obj")
    return root


def check_procedural_data_module(dm, n_train: int, n_val: int) -> dict:
    """Set up a mesh / point-cloud data module on the procedural set and check what both promise: the procedural
    classes, ``n_train`` / ``n_val`` objects kept apart, batches of 3 with int64 labels and names, validation labels
    among the classes. Returns the first training batch."""
    from scalear.datasets.meshes import PROCEDURAL_CLASSES

    dm.prepare_data()
    dm.setup("fit")
    assert dm.classes == sorted(PROCEDURAL_CLASSES)
    assert len(dm.train_dataset) == n_train and len(dm.val_dataset) == n_val
    assert not {r.path for r in dm.train_dataset.records} & {r.path for r in dm.val_dataset.records}
    batch = next(iter(dm.train_dataloader()))
    assert batch["label"].dtype == torch.int64 and len(batch["name"]) == 3
    val = next(iter(dm.val_dataloader()))
    assert {dm.classes[i] for i in val["label"].tolist()} <= set(PROCEDURAL_CLASSES)
    return batch


def check_cache_is_reused_and_keyed_by_settings(monkeypatch, data_module, preprocess: str, build, n_objects: int,
                                                other_settings: dict, item: int, key: str) -> None:
    """``build(**overrides)`` twice preprocesses each of its ``n_objects`` once (``data_module.<preprocess>``): the
    same files, untouched, the same ``item[key]``; other settings make new cache entries; no temporary is left."""
    calls = []
    real = getattr(data_module, preprocess)
    monkeypatch.setattr(data_module, preprocess, lambda *a: calls.append(a[0]) or real(*a))
    first = build()
    assert len(calls) == n_objects
    mtimes = [f.stat().st_mtime_ns for f in first.files]
    second = build()
    assert len(calls) == n_objects and second.files == first.files  # no new preprocessing
    assert [f.stat().st_mtime_ns for f in second.files] == mtimes
    assert torch.equal(first[item][key], second[item][key])
    build(**other_settings)
    assert len(calls) == 2 * n_objects  # other settings: other cache entries
    assert not list(first.cache_dir.glob(".*")) and not list(first.cache_dir.glob("*.tmp"))


def check_data_module_config_parses_like_lightning_cli(data_module_class, root: str, defaults: dict) -> None:
    """``--data.per_class`` and ``--data.root`` parse, the other arguments keep ``defaults``, unknown ones fail."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(data_module_class, "data")
    cfg = parser.parse_args(["--data.per_class", "3", "--data.root", root])
    assert cfg.data.per_class == 3 and cfg.data.root == root
    assert {k: cfg.data[k] for k in defaults} == defaults
    with pytest.raises(Exception):
        parser.parse_args(["--data.nonsense", "3"])


def check_3d_quickstart_fast_outputs(root: Path, md: str, n_generated: int, pictures: tuple[str, ...]) -> dict:
    """What the SAR3D and G3PT quickstart parts both write in fast mode under ``root`` (``<part>/``): metrics of a
    fast run, ``n_generated`` objects written or named empty, every written mesh closed with faces and a preview,
    both exports, and ``pictures`` (RGB, wider than 128 px) shown in the report ``md``. Returns the metrics."""
    import json

    import trimesh
    from PIL import Image

    m = json.loads((root / "metrics.json").read_text())
    assert m["fast"] is True
    gen = m["generated"]
    assert gen["written"] + len(gen["empty"]) == n_generated
    assert gen["valid"] == gen["watertight"] == gen["written"]  # every mesh closed
    for p in (root / "generated").glob("*.obj"):
        assert len(trimesh.load(p, force="mesh").faces) > 0
        assert p.with_suffix(".png").is_file()
    for name in ("export/tokenizer", "export/generator"):
        assert (root / name / "model.safetensors").is_file(), name
    for pic in pictures:
        assert f"{root.name}/{pic}" in md
        with Image.open(root / pic) as im:
            assert im.mode == "RGB" and im.width > 128
    return m


def fit_and_read_log(module, root: Path, train, val, steps: int = 3) -> list[dict]:
    """Fit a Lightning ``module`` on CPU for ``steps`` steps on the datasets ``train`` (shuffled) and ``val``
    (batches of 4, one validation batch at the last step); the rows of its CSV log."""
    import csv

    import lightning as L
    from lightning.pytorch.loggers import CSVLogger
    from torch.utils.data import DataLoader

    trainer = L.Trainer(max_steps=steps, logger=CSVLogger(root, name="logs"), enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=1, log_every_n_steps=1,
                        val_check_interval=steps, check_val_every_n_epoch=None, default_root_dir=root, accelerator="cpu")
    trainer.fit(module, DataLoader(train, batch_size=4, shuffle=True), DataLoader(val, batch_size=4))
    with open(Path(trainer.logger.log_dir) / "metrics.csv") as f:
        return list(csv.DictReader(f))


def check_generate_refuses_bad_requests(main, export: Path, tmp_path: Path, capsys, domain: str) -> None:
    """``<domain> generate`` (``main``) exits 2 naming the problem for an unknown class, a folder that is not an
    export of ``domain``, and an image-conditional model (``export/image``) given no image."""
    assert main(["generate", "--model", str(export / "class"), "--class", "chair", "--out", str(tmp_path)]) == 2
    assert "unknown class 'chair'" in capsys.readouterr().err
    assert main(["generate", "--model", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert f"not a {domain} export folder" in capsys.readouterr().err
    assert main(["generate", "--model", str(export / "image"), "--out", str(tmp_path / "o")]) == 2
    assert "image-conditional" in capsys.readouterr().err
