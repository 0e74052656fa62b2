"""G3PT Lightning modules: tokenizer and generator stages fit, log, export and reload; the configs run via the CLI."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import Dataset

from scalear.domains.g3pt.generator import G3PTGenerator
from scalear.domains.g3pt.tokenizer import G3PTTokenizer, create_tokenizer
from scalear.domains.g3pt.training import G3PTGeneratorModule, G3PTTokenizerModule
from scalear.io import from_pretrained, save_pretrained
from conftest import fit_and_read_log

pytestmark = pytest.mark.usefixtures("single_thread")

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "g3pt"
SMALL = dict(patch_nums=(1, 4, 16), width=32, heads=2, code_bits=6, num_freqs=3)
TINY_GEN = dict(transformer=dict(depth=2, width=64, num_heads=2))


class _Spheres(Dataset):
    """Random spheres in the PointCloudDataModule item layout: 128 surface points, 128 uniform queries with
    exact occupancy, label 0 / 1 by radius."""

    def __init__(self, n: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        r_n11 = 0.15 + 0.25 * torch.rand(n, 1, 1, generator=g)
        u = torch.randn(n, 128, 3, generator=g)
        self.points = u / u.norm(dim=-1, keepdim=True) * r_n11
        self.query = torch.rand(n, 128, 3, generator=g) - 0.5
        self.occupancy = (self.query.norm(dim=-1) < r_n11[..., 0]).float()
        self.label = (r_n11.view(n) > 0.275).long()

    def __len__(self) -> int:
        return len(self.label)

    def __getitem__(self, i: int) -> dict:
        return {"points": self.points[i], "query": self.query[i], "occupancy": self.occupancy[i],
                "label": self.label[i], "name": f"sphere/{i}"}


def _fit(module: L.LightningModule, root: Path, steps: int = 3) -> list[dict]:
    return fit_and_read_log(module, root, _Spheres(8, 0), _Spheres(4, 1), steps)


def test_tokenizer_module_fits_logs_per_level_bce_and_exports(tmp_path):
    module = G3PTTokenizerModule(tokenizer=SMALL, export_dir=str(tmp_path / "export"))
    rows = _fit(module, tmp_path)
    keys = set().union(*rows)
    assert {"train/loss", "train/bce", "train/bce_prefix", "train/usage", "val/bce", "val/iou", "val/usage"} <= keys
    assert {f"val/bce_l{k}" for k in (1, 2, 3)} | {f"val/iou_l{k}" for k in (1, 2, 3)} <= keys
    val = next(r for r in rows if r.get("val/bce"))
    assert float(val["val/bce"]) == pytest.approx(float(val["val/bce_l3"]))  # all levels = the full reconstruction
    tok = from_pretrained(tmp_path / "export" / "tokenizer")
    assert isinstance(tok, G3PTTokenizer) and tok.config.patch_nums == (1, 4, 16)
    for a, b in zip(tok.state_dict().values(), module.tokenizer.state_dict().values()):
        torch.testing.assert_close(a, b)


def test_tokenizer_module_refuses_batches_without_occupancy():
    module = G3PTTokenizerModule(tokenizer=SMALL)
    with pytest.raises(ValueError, match="occupancy queries"):
        module.training_step({"points": torch.rand(2, 64, 3) - 0.5}, 0)


def test_generator_module_trains_on_a_frozen_tokenizer_and_exports(tmp_path):
    tok_dir = save_pretrained(create_tokenizer("tiny", **SMALL), tmp_path / "tokenizer")
    module = G3PTGeneratorModule(str(tok_dir), num_classes=2, generator=TINY_GEN, export_dir=str(tmp_path / "export"))
    frozen = {k: v.clone() for k, v in module.tokenizer.state_dict().items()}
    before = {k: v.clone() for k, v in module.generator.state_dict().items()}
    rows = _fit(module, tmp_path)
    assert {"train/loss", "train/acc", "val/ce", "val/acc_tail"} <= set().union(*rows)
    assert all(torch.equal(v, module.tokenizer.state_dict()[k]) for k, v in frozen.items())
    after = module.generator.state_dict()
    assert any(not torch.equal(v, after[k]) for k, v in before.items())
    gen = from_pretrained(tmp_path / "export" / "generator").eval()
    assert isinstance(gen, G3PTGenerator) and gen.cfg.num_classes == 2 and gen.cfg.patch_nums == (1, 4, 16)
    tok = from_pretrained(tmp_path / "export" / "tokenizer")
    assert isinstance(tok, G3PTTokenizer)
    labels = torch.tensor([0, 1])
    meshes, idx = module.generate(labels, resolution=12, seed=0)
    assert len(meshes) == 2 and [tuple(i.shape) for i in idx] == [(2, 1), (2, 4), (2, 16)]
    assert all(torch.equal(a, b) for a, b in zip(idx, gen.generate(tok, labels, seed=0)))


def test_generator_module_refuses_a_non_g3pt_tokenizer(tmp_path):
    from scalear.vqvae import create_vqvae

    path = save_pretrained(create_vqvae("tiny"), tmp_path / "vq")
    with pytest.raises(ValueError, match="not a G3PT tokenizer"):
        G3PTGeneratorModule(str(path))


def test_configs_fit_two_steps_through_the_cli(tmp_path):
    from scalear.quickstart import fit_with_cli

    data = ["--data.init_args.cache_dir", str(tmp_path / "cache"), "--data.init_args.per_class", "2",
            "--data.init_args.val_per_class", "1", "--data.init_args.batch_size", "4",
            "--data.init_args.n_points", "256", "--data.init_args.n_query", "256"]
    short = ["--trainer.max_steps", "2", "--trainer.limit_val_batches", "1", "--trainer.val_check_interval", "2",
             "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    metrics = fit_with_cli(CONFIGS / "tokenizer_tiny.yaml", tmp_path / "tok", tmp_path / "tok_export", [*data, *short])
    assert "val/bce_l4" in metrics.read_text()
    tok_dir = tmp_path / "tok_export" / "tokenizer"
    assert isinstance(from_pretrained(tok_dir), G3PTTokenizer)
    small = ["--model.init_args.generator", '{"transformer": {"depth": 2, "width": 64, "num_heads": 2}}']
    out = tmp_path / "gen"
    metrics = fit_with_cli(CONFIGS / "generator_tiny.yaml", out, out / "export",
                           [*data, *short, *small, "--model.init_args.tokenizer", str(tok_dir)])
    assert metrics.is_file() and "val/ce" in metrics.read_text()
    gen = from_pretrained(out / "export" / "generator")
    assert isinstance(gen, G3PTGenerator) and gen.cfg.num_classes == 4
    assert gen.cfg.class_names == ("chair", "lamp", "mug", "table")  # named after the data's classes
    assert isinstance(from_pretrained(out / "export" / "tokenizer"), G3PTTokenizer)
    out = tmp_path / "gen_image"  # the image-conditional config: the data module renders condition images
    fit_with_cli(CONFIGS / "generator_image_tiny.yaml", out, out / "export",
                 [*data, *short, *small, "--model.init_args.tokenizer", str(tok_dir)])
    gen = from_pretrained(out / "export" / "generator")
    assert gen.cfg.condition == "image" and gen.image_encoder is not None
