"""Training through the `scalear` CLI (LightningCLI): config validation, learning, export, resuming, DDP."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from scalear.io import from_pretrained
from scalear.training.base import OptimizerConfig, cosine_with_warmup
from scalear.viz import read_metrics_csv

ROOT = Path(__file__).resolve().parents[1]
TOK_CFG = ROOT / "configs" / "core" / "digits_tokenizer.yaml"
VAR_CFG = ROOT / "configs" / "core" / "digits_var.yaml"


def scalear(*args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the installed `scalear` command as a user would."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "scalear.cli", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def fit_args(cfg: Path, root: Path, steps: int, *extra: str) -> list[str]:
    return [
        "core", "fit", "--config", str(cfg),
        "--trainer.max_steps", str(steps), "--trainer.val_check_interval", str(steps),
        "--trainer.default_root_dir", str(root), "--trainer.logger.init_args.save_dir", str(root),
        "--trainer.enable_progress_bar", "false", "--model.init_args.export_dir", str(root / "export"),
        *extra,
    ]


@pytest.fixture(scope="module")
def tokenizer_run(tmp_path_factory) -> Path:
    """A digits tokenizer trained briefly through the CLI, with its export folder."""
    root = tmp_path_factory.mktemp("tok")
    r = scalear(*fit_args(TOK_CFG, root, 120), cwd=root)
    assert r.returncode == 0, r.stderr[-3000:]
    return root


def test_tokenizer_learns_and_exports(tokenizer_run):
    series = read_metrics_csv(next(tokenizer_run.rglob("metrics.csv")))
    rec = [v for _, v in series["train/rec"]]
    assert sum(rec[-3:]) / 3 < 0.6 * sum(rec[:3]) / 3, rec  # reconstruction loss falls clearly
    assert "train/usage_s0" in series and "val/psnr" in series  # per-scale codebook usage is logged
    tok = from_pretrained(tokenizer_run / "export" / "tokenizer")
    assert tok.config.in_channels == 1 and tok.schedule.shapes[-1] == (4, 4)
    assert (tokenizer_run / "export" / "tokenizer" / "model.safetensors").is_file()


def test_checkpoint_keeps_the_optimizer_as_plain_values(tokenizer_run):
    """The optimiser group of the config reaches the module, and a checkpoint holds it as plain values that
    ``torch.load(weights_only=True)`` reads and ``load_from_checkpoint`` turns back into the same settings."""
    from scalear.training.tokenizer import TokenizerModule

    ckpt_path = next(tokenizer_run.rglob("last.ckpt"))
    hp = torch.load(ckpt_path, map_location="cpu", weights_only=True)["hyper_parameters"]["optimizer"]
    assert OptimizerConfig(**hp) == OptimizerConfig(lr=0.002, weight_decay=0.0, betas=(0.5, 0.9), warmup_steps=50,
                                                    min_lr_ratio=0.1)
    assert TokenizerModule.load_from_checkpoint(ckpt_path, map_location="cpu").optim == OptimizerConfig(**hp)


def test_optimizer_group_overrides_only_the_keys_given(tmp_path):
    """``optimizer:`` keys left out keep the module's own defaults (not the dataclass's); a misspelt key or an
    impossible value is an error naming it."""
    from lightning.pytorch.cli import LightningCLI

    from scalear.training.base import ScalearModule

    def parse(*args: str):
        return LightningCLI(ScalearModule, subclass_mode_model=True, run=False, args=[
            "--model", "scalear.training.tokenizer.TokenizerModule", *args]).model.optim

    assert parse() == OptimizerConfig(lr=2e-4, weight_decay=0.0, betas=(0.5, 0.9), min_lr_ratio=0.1)
    assert parse("--model.init_args.optimizer.warmup_steps", "7") == OptimizerConfig(
        lr=2e-4, weight_decay=0.0, betas=(0.5, 0.9), warmup_steps=7, min_lr_ratio=0.1)
    for key, value, named in (("warmpu_steps", "7", "warmpu_steps"), ("lr", "-1", "lr > 0")):
        r = scalear("core", "fit", "--config", str(TOK_CFG), f"--model.init_args.optimizer.{key}", value,
                    "--trainer.max_steps", "1", "--trainer.default_root_dir", str(tmp_path), cwd=tmp_path, timeout=120)
        assert r.returncode == 2 and named in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
    with pytest.raises(ValueError, match="min_lr_ratio in"):
        OptimizerConfig(min_lr_ratio=2.0)


@pytest.mark.slow
def test_transformer_learns_and_resumes(tokenizer_run, tmp_path):
    tok_dir = tokenizer_run / "export" / "tokenizer"
    args = fit_args(VAR_CFG, tmp_path, 60, "--model.init_args.tokenizer", str(tok_dir))
    r = scalear(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    csv = next(tmp_path.rglob("metrics.csv"))
    loss = [v for _, v in read_metrics_csv(csv)["train/loss"]]
    assert loss[-1] < loss[0] - 0.5, loss  # cross-entropy falls measurably from ~log(128) = 4.85
    last = next(tmp_path.rglob("last.ckpt"))
    # resume from the last checkpoint and train further: the step counter continues, nothing is lost
    r = scalear(*fit_args(VAR_CFG, tmp_path, 80, "--model.init_args.tokenizer", str(tok_dir)), "--ckpt_path", str(last), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    newest = max(tmp_path.rglob("last.ckpt"), key=lambda p: p.stat().st_mtime)
    ckpt = torch.load(newest, map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 80 and ckpt["scalear_module"].endswith("NextScaleModule")
    # export a Lightning checkpoint as safetensors through the CLI
    r = scalear("core", "export", "--ckpt", str(last), "--out", str(tmp_path / "exp"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    model = from_pretrained(tmp_path / "exp" / "transformer")
    assert model.cfg.num_classes == 10
    r = scalear("core", "sample", "--model", str(tmp_path / "exp" / "transformer"), "--per-class", "2",
                "--out", str(tmp_path / "grid.png"), cwd=tmp_path)
    assert r.returncode == 0 and (tmp_path / "grid.png").stat().st_size > 0, r.stderr[-3000:]


@pytest.mark.slow
def test_ddp_two_processes_equal_one_process(tmp_path):
    """Lightning DDP, 2 CPU processes (gloo) of batch 16, against 1 process of batch 32: the same global batches
    (ResumableDataLoader), so after 25 steps, one dead-code restart included (every 20 calls), the weights agree to
    float rounding, codebook included."""
    states = {}
    for name, devices, batch in (("one", "1", "32"), ("ddp", "2", "16")):
        root = tmp_path / name
        args = fit_args(TOK_CFG, root, 25, "--trainer.accelerator", "cpu", "--trainer.devices", devices,
                        "--trainer.strategy", "ddp" if devices == "2" else "auto", "--data.init_args.batch_size", batch,
                        "--trainer.limit_val_batches", "0")
        r = scalear(*args, cwd=tmp_path)
        assert r.returncode == 0, r.stderr[-3000:]
        if devices == "2":
            assert "distributed_backend=gloo" in r.stdout + r.stderr
        ckpt = torch.load(root / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        assert ckpt["global_step"] == 25
        states[name] = ckpt["state_dict"]
    one, ddp = states["one"], states["ddp"]
    assert one["vqvae.quantize.record_hit"] == 25
    for key in one:
        torch.testing.assert_close(ddp[key], one[key], rtol=1e-4, atol=1e-5, msg=lambda m, key=key: f"{key}: {m}")


def test_unknown_config_key_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(TOK_CFG.read_text().replace("l1_weight:", "l1_wieght:"))
    r = scalear("core", "fit", "--config", str(bad), cwd=tmp_path, timeout=120)
    assert r.returncode != 0 and "l1_wieght" in r.stderr
    bad.write_text(TOK_CFG.read_text().replace("z_channels: 8", "z_chanels: 8"))
    r = scalear("core", "fit", "--config", str(bad), "--trainer.max_steps", "1", cwd=tmp_path, timeout=120)
    assert r.returncode != 0 and "z_chanels" in r.stderr


def test_help_lists_commands(tmp_path):
    r = scalear("--help", cwd=tmp_path, timeout=60)
    assert r.returncode == 0
    for word in ("quickstart", "core", "info"):
        assert word in r.stdout
    r = scalear("core", "--help", cwd=tmp_path, timeout=60)
    assert "fit" in r.stdout and "sample" in r.stdout and "export" in r.stdout


def test_cosine_schedule_values():
    assert cosine_with_warmup(0, 10, 110) == 0
    assert cosine_with_warmup(5, 10, 110) == 0.5
    assert cosine_with_warmup(10, 10, 110) == 1
    assert cosine_with_warmup(60, 10, 110) == pytest.approx(0.5)
    assert cosine_with_warmup(110, 10, 110, min_ratio=0.1) == pytest.approx(0.1)


def _digits_trainer(tmp_path: Path, steps: int, **kw):
    import lightning as L

    return L.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                     default_root_dir=tmp_path, **kw)


def test_tokenizer_with_patchgan_and_lpips_trains(tmp_path):
    """The full VQGAN objective runs: both optimisers step, the adaptive GAN weight is finite."""
    from test_losses import random_lpips_heads, random_vgg16_features

    from scalear.datasets.digits import DigitsDataModule
    from scalear.training.tokenizer import TokenizerModule

    torch.save({**random_vgg16_features(), **random_lpips_heads()}, tmp_path / "lpips.pth")
    module = TokenizerModule(
        vqvae=dict(in_channels=1, ch=8, norm_groups=4, ch_mult=(1, 2, 2), patch_nums=(1, 2, 4), using_sa=False,
                   using_mid_sa=False, vocab_size=32),
        perceptual_weights=str(tmp_path / "lpips.pth"), gan_weight=0.5, gan_start=2, disc_ndf=8, disc_layers=2,
        export_dir=str(tmp_path / "export"),
    )
    disc_before = [p.detach().clone() for p in module.disc.parameters()]
    trainer = _digits_trainer(tmp_path, 5)
    trainer.fit(module, DigitsDataModule(image_size=16, batch_size=8))
    logged = trainer.logged_metrics
    assert torch.isfinite(logged["train/gan_w"]) and torch.isfinite(logged["train/d"])
    assert any(not torch.equal(a, b) for a, b in zip(disc_before, module.disc.parameters()))
    assert (tmp_path / "export" / "tokenizer" / "model.safetensors").is_file()
    # the frozen LPIPS network stays out of checkpoints and is restored from its weights file on load
    trainer.save_checkpoint(tmp_path / "t.ckpt")
    ckpt = torch.load(tmp_path / "t.ckpt", map_location="cpu", weights_only=True)
    assert not any(k.startswith("lpips.") for k in ckpt["state_dict"])
    reloaded = TokenizerModule.load_from_checkpoint(tmp_path / "t.ckpt", weights_only=True)
    key = "decoder.conv_out.weight"
    torch.testing.assert_close(reloaded.vqvae.state_dict()[key], module.vqvae.state_dict()[key])


def test_only_unfrozen_modules_in_eval_mode_get_lightnings_warning(tmp_path):
    """Frozen networks (here LPIPS) are in eval mode on purpose: training starts without Lightning's warning about
    modules in eval mode; a trainable module left in eval mode still gets it."""
    import warnings

    from test_losses import random_lpips_heads, random_vgg16_features

    from scalear.datasets.digits import DigitsDataModule
    from scalear.training.base import unfrozen_eval_modules
    from scalear.training.tokenizer import TokenizerModule

    torch.save({**random_vgg16_features(), **random_lpips_heads()}, tmp_path / "lpips.pth")

    def eval_mode_warnings(module) -> list[str]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _digits_trainer(tmp_path, 1).fit(module, DigitsDataModule(image_size=16, batch_size=8))
        return [str(w.message) for w in caught if "in eval mode at the start of training" in str(w.message)]

    def tokenizer_module() -> TokenizerModule:
        return TokenizerModule(
            vqvae=dict(in_channels=1, ch=8, norm_groups=4, ch_mult=(1, 2, 2), patch_nums=(1, 2, 4), using_sa=False,
                       using_mid_sa=False, vocab_size=16),
            perceptual_weights=str(tmp_path / "lpips.pth"), export_dir=None)

    module = tokenizer_module()
    assert not module.lpips.training and unfrozen_eval_modules(module) == []
    assert eval_mode_warnings(module) == []
    module = tokenizer_module()
    module.vqvae.decoder.eval()  # trainable, yet in eval mode: worth a warning
    assert unfrozen_eval_modules(module)[0] == "vqvae.decoder"
    assert len(eval_mode_warnings(module)) == 1
    leftover = lambda: [f for f in warnings.filters if f[1] is not None and "eval mode" in f[1].pattern]  # noqa: E731
    assert not leftover()  # nothing left behind
    _digits_trainer(tmp_path, 0).fit(tokenizer_module(), DigitsDataModule(image_size=16, batch_size=8))
    assert not leftover()  # not even when there was nothing to train (the fit ends before training starts)


def test_ema_weights_are_exported(tmp_path):
    """With Lightning's EMAWeightAveraging callback the exported weights are the averaged ones."""
    from lightning.pytorch.callbacks import EMAWeightAveraging

    from scalear.datasets.digits import DigitsDataModule
    from scalear.training.tokenizer import TokenizerModule

    module = TokenizerModule(vqvae=dict(in_channels=1, ch=8, norm_groups=4, ch_mult=(1, 2, 2), patch_nums=(1, 2, 4),
                                        using_sa=False, using_mid_sa=False, vocab_size=32),
                             export_dir=str(tmp_path / "export"))
    ema = EMAWeightAveraging(decay=0.5)
    trainer = _digits_trainer(tmp_path, 6, callbacks=[ema])
    trainer.fit(module, DigitsDataModule(image_size=16, batch_size=8))
    exported = from_pretrained(tmp_path / "export" / "tokenizer")
    averaged = ema._average_model.module.vqvae.state_dict()
    key = "decoder.conv_out.weight"
    torch.testing.assert_close(exported.state_dict()[key], averaged[key])


def test_image_grids_carry_their_labels_in_the_picture():
    """Row labels sit in a left margin, each centred on its row; column labels in a top band; the grid itself is
    copied unchanged below and to the right of them."""
    from scalear.viz import image_grid, labelled

    grid = image_grid(torch.zeros(6, 1, 8, 8), nrow=3, value_range=(0, 1)).repeat(4, 0).repeat(4, 1)  # black cells
    out = labelled(grid, rows=["first", "second"], cols=["a", "b", "c"])
    H, W = grid.shape[:2]
    top, left = out.shape[0] - H, out.shape[1] - W
    assert top > 0 and left > 0 and (out[top:, left:] == grid).all()
    ink = (out[top:, :left] < 128).any(axis=(1, 2))  # rows of the left margin holding text
    rows_with_text = {int(r * 2 // H) for r in ink.nonzero()[0]}
    assert rows_with_text == {0, 1}
    cols_ink = (out[:top, left:] < 128).any(axis=(0, 2)).nonzero()[0]
    assert {int(c * 3 // W) for c in cols_ink} == {0, 1, 2}
    assert (labelled(grid) == grid).all()
