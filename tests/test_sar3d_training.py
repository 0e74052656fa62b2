"""SAR3D Lightning modules: tokenizer and generator stages fit, log, export and reload; the configs run via the CLI."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import Dataset

from scalear.domains.sar3d.generator import SAR3DGenerator
from scalear.domains.sar3d.mesh import analytic_batch
from scalear.domains.sar3d.tokenizer import TriplaneVQVAE, create_tokenizer
from scalear.domains.sar3d.training import SAR3DGeneratorModule, TriplaneTokenizerModule
from scalear.io import from_pretrained, save_pretrained
from conftest import fit_and_read_log

pytestmark = pytest.mark.usefixtures("single_thread")

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "sar3d"
SMALL = dict(grid_resolution=16, patch_nums=(1, 2, 4, 8), enc_channels=(8, 16), plane_channels=16, vocab_size=128,
             decoder_upsample=0, feature_dim=8, mlp_hidden=32)
TINY_GEN = dict(transformer=dict(depth=2, width=64, num_heads=2), image_size=16, encoder_channels=(8, 16))


class _Objects(Dataset):
    """Analytic shapes in the MeshDataModule item layout (with a random 4-channel 16 px "render")."""

    def __init__(self, n: int, seed: int):
        self.b = analytic_batch(["sphere", "box"] * (n // 2), 16, 256, seed=seed)
        self.b["image"] = torch.randn(n, 4, 16, 16, generator=torch.Generator().manual_seed(seed))

    def __len__(self) -> int:
        return len(self.b["name"])

    def __getitem__(self, i: int) -> dict:
        return {k: v[i] for k, v in self.b.items()}


def _fit(module: L.LightningModule, root: Path, steps: int = 3) -> list[dict]:
    return fit_and_read_log(module, root, _Objects(8, 0), _Objects(4, 1), steps)


def test_tokenizer_module_fits_logs_per_scale_error_and_exports(tmp_path):
    module = TriplaneTokenizerModule(tokenizer=SMALL, train_points=128, export_dir=str(tmp_path / "export"))
    rows = _fit(module, tmp_path)
    keys = set().union(*rows)
    assert {"train/sdf_l1", "train/vq", "val/sdf_l1", "val/usage", "val/sign_acc"} <= keys
    assert {f"val/sdf_l1_s{k}" for k in range(4)} <= keys
    tok = from_pretrained(tmp_path / "export" / "tokenizer")
    assert isinstance(tok, TriplaneVQVAE)
    for a, b in zip(tok.state_dict().values(), module.tokenizer.state_dict().values()):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("condition", ["class", "image"])
def test_generator_module_trains_jointly_and_exports(tmp_path, condition):
    tok_dir = save_pretrained(create_tokenizer("tiny", **SMALL), tmp_path / "tokenizer")
    module = SAR3DGeneratorModule(str(tok_dir), condition=condition, num_classes=2, generator=TINY_GEN,
                                  export_dir=str(tmp_path / "export"))
    frozen = {k: v.clone() for k, v in module.tokenizer.state_dict().items()}
    before = {k: v.clone() for k, v in module.generator.state_dict().items()}
    rows = _fit(module, tmp_path)
    assert {"train/loss", "val/ce", "val/acc_tail"} <= set().union(*rows)
    assert all(torch.equal(v, module.tokenizer.state_dict()[k]) for k, v in frozen.items())
    after = module.generator.state_dict()
    changed = {k.split(".")[0] for k, v in before.items() if not torch.equal(v, after[k])}
    assert "transformer" in changed
    if condition == "image":
        assert "image_encoder" in changed  # trained jointly with the transformer (SAR3D freezes DINOv2)
    gen = from_pretrained(tmp_path / "export" / "generator").eval()
    assert isinstance(gen, SAR3DGenerator) and gen.cfg.condition == condition
    tok = from_pretrained(tmp_path / "export" / "tokenizer")
    cond = {"labels": torch.tensor([0, 1])} if condition == "class" else {"images": torch.randn(2, 4, 16, 16)}
    meshes, idx = module.generate(**cond, resolution=12, seed=0)
    assert len(meshes) == 2 and [i.shape[1] for i in idx] == [3, 12, 48, 192]
    assert all(torch.equal(a, b) for a, b in zip(idx, gen.generate(tok, **cond, seed=0)))


def test_generator_module_refuses_a_non_sar3d_tokenizer(tmp_path):
    from scalear.vqvae import create_vqvae

    path = save_pretrained(create_vqvae("tiny"), tmp_path / "vq")
    with pytest.raises(ValueError, match="not a SAR3D triplane tokenizer"):
        SAR3DGeneratorModule(str(path))


def test_configs_fit_two_steps_through_the_cli(tmp_path):
    pytest.importorskip("scalear.datasets.meshes.data", reason="the meshes data package (MeshDataModule) is missing")
    from scalear.quickstart import fit_with_cli

    data = ["--data.init_args.cache_dir", str(tmp_path / "cache"), "--data.init_args.per_class", "2",
            "--data.init_args.val_per_class", "1", "--data.init_args.batch_size", "4", "--data.init_args.n_points", "512"]
    short = ["--trainer.max_steps", "2", "--trainer.limit_val_batches", "1", "--trainer.val_check_interval", "2",
             "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    fit_with_cli(CONFIGS / "tokenizer_tiny.yaml", tmp_path / "tok", tmp_path / "tok_export", [*data, *short])
    tok_dir = tmp_path / "tok_export" / "tokenizer"
    assert isinstance(from_pretrained(tok_dir), TriplaneVQVAE)
    small = ["--model.init_args.generator", '{"transformer": {"depth": 2, "width": 64, "num_heads": 2}}']
    for name in ("generator_tiny.yaml", "generator_image_tiny.yaml"):
        out = tmp_path / name.removesuffix(".yaml")
        metrics = fit_with_cli(CONFIGS / name, out, out / "export",
                               [*data, *short, *small, "--model.init_args.tokenizer", str(tok_dir)])
        assert metrics.is_file() and "val/ce" in metrics.read_text()
        gen = from_pretrained(out / "export" / "generator")
        assert isinstance(gen, SAR3DGenerator)
        # a class-conditional export names its labels after the data module's classes
        assert gen.cfg.class_names == (("chair", "lamp", "mug", "table") if gen.cfg.condition == "class" else ())
