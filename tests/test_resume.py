"""Run folders and exact resume: a run killed with SIGKILL and resumed with ``--ckpt_path last`` ends with the same
weights, bit for bit, as the run that was never interrupted (CPU, same seed, same steps), mid-epoch included."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from scalear.training.loader import ResumableDataLoader, ResumableSampler

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------- the data position
def test_sampler_order_is_a_function_of_seed_and_epoch():
    data = list(range(50))
    a, b = ResumableSampler(data, 8, seed=3), ResumableSampler(data, 8, seed=3)
    assert list(a) == list(b) and sorted(a) == data
    b.set_epoch(1)
    assert list(a) != list(b) and sorted(b) == data
    assert list(ResumableSampler(data, 8, shuffle=False)) == data


@pytest.mark.parametrize("drop_last", [True, False])
def test_processes_share_the_global_batch_of_one_process(monkeypatch, drop_last):
    """W processes of batch B see, batch for batch, the batches of one process with batch W*B."""
    data, B, W = list(range(53)), 4, 3
    full = [b.tolist() for b in ResumableDataLoader(data, W * B, seed=5, drop_last=drop_last)]
    per_rank = []
    for rank in range(W):
        monkeypatch.setattr("scalear.training.loader.process_group", lambda rank=rank: (W, rank))
        loader = ResumableDataLoader(data, B, seed=5, drop_last=drop_last)
        per_rank.append([b.tolist() for b in loader])
        assert len(per_rank[-1]) == len(loader)
    assert len({len(p) for p in per_rank}) == 1  # every process steps the same number of times
    n_full = len(data) // (W * B)
    for g in range(n_full):
        assert sum((per_rank[r][g] for r in range(W)), []) == full[g]
    if not drop_last:  # the last, partial global batch is padded by wrapping around so every process gets one
        assert set(full[-1]) <= set(sum((per_rank[r][-1] for r in range(W)), []))


def test_loader_resumes_mid_epoch_from_its_state():
    data = list(range(40))
    loader = ResumableDataLoader(data, 4, seed=1)
    loader.sampler.set_epoch(2)
    it = iter(loader)
    seen = [next(it).tolist() for _ in range(3)]
    state = loader.state_dict()
    rest = [b.tolist() for b in it]

    resumed = ResumableDataLoader(data, 4, seed=99)  # the seed comes back from the state
    resumed.load_state_dict(state)
    resumed.sampler.set_epoch(2)
    iter(resumed)  # an iterator made and dropped (as Lightning does while setting up) keeps the position
    assert [b.tolist() for b in resumed] == rest and len(seen) + len(rest) == len(resumed)
    assert len([b for b in resumed]) == len(resumed)  # the next epoch is whole again


# ---------------------------------------------------------------------------------------------- CLI runs
def scalear_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "scalear.cli", *args]


def env() -> dict:
    return {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}


def run_config(preset: Path, folder: Path, every: int, **model_args) -> Path:
    """A copy of ``preset`` whose run lives in ``folder`` and checkpoints every ``every`` steps."""
    cfg = yaml.safe_load(preset.read_text())
    cfg["trainer"].update(default_root_dir=str(folder), enable_progress_bar=False)
    cfg["trainer"]["logger"]["init_args"]["save_dir"] = str(folder)
    cfg["trainer"]["callbacks"] = [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                                    "init_args": {"save_last": True, "every_n_train_steps": every}}]
    cfg["model"]["init_args"].update(model_args)
    path = folder.parent / f"{folder.name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg))
    return path


def fit(domain: str, config: Path, *extra: str, timeout: int = 600) -> subprocess.CompletedProcess:
    r = subprocess.run(scalear_cmd(domain, "fit", "--config", str(config), *extra), capture_output=True, text=True,
                       timeout=timeout, env=env())
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def step_of(ckpt: Path) -> int:
    return int(torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"])


def fit_killed_at(domain: str, config: Path, folder: Path, min_step: int, *extra: str) -> int:
    """Start ``fit``, SIGKILL it as soon as a checkpoint at ``min_step`` or later exists; the step it holds."""
    last = folder / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen(scalear_cmd(domain, "fit", "--config", str(config), *extra), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=env())
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"the run ended before it was killed: {proc.stderr.read().decode()[-2000:]}")
            if last.is_file():
                try:
                    if step_of(last) >= min_step:
                        break
                except Exception:  # noqa: BLE001 - a checkpoint being replaced right now; look again
                    pass
            time.sleep(0.05)
        else:
            pytest.fail("no checkpoint appeared in time")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    return step_of(last)


def final_state(folder: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(folder / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return ckpt["state_dict"]


def assert_bit_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[:5]}"


def kill_and_resume_matches(domain: str, preset: Path, tmp: Path, steps: int, every: int, kill_after: int,
                            extra: list[str], **model_args) -> None:
    args = ["--trainer.max_steps", str(steps), *extra]
    whole = tmp / "whole"
    fit(domain, run_config(preset, whole, every, **model_args), *args)
    assert step_of(whole / "checkpoints" / "last.ckpt") == steps

    cut = tmp / "cut"
    config = run_config(preset, cut, every, **model_args)
    killed_at = fit_killed_at(domain, config, cut, kill_after, *args)
    assert 0 < killed_at < steps
    r = fit(domain, config, *args, "--ckpt_path", "last")
    assert f"resumed at step {killed_at} from" in r.stdout + r.stderr
    assert step_of(cut / "checkpoints" / "last.ckpt") == steps
    assert_bit_identical(final_state(whole), final_state(cut))
    # both attempts of the run share its checkpoints/ and export/; only the logs are versioned
    assert sorted(p.name for p in (cut / "logs").iterdir()) == ["version_0", "version_1"]
    assert (cut / "export").is_dir() and not any((cut / "logs").glob("*/export"))


@pytest.mark.slow
def test_core_tokenizer_resumes_bit_identically_after_sigkill(tmp_path):
    """Digits tokenizer (dead-code restarts every 20 calls, 25 batches an epoch): killed mid-epoch 2."""
    kill_and_resume_matches("core", ROOT / "configs/core/digits_tokenizer.yaml", tmp_path, steps=45, every=3,
                            kill_after=28, extra=["--trainer.val_check_interval", "15",
                                                  "--trainer.limit_val_batches", "1"])


@pytest.mark.slow
def test_depthart_stage2_resumes_bit_identically_after_sigkill(tmp_path):
    """DepthART's self-refinement stage (sampled predictions, 32 batches an epoch) on a tokenizer from stage 1."""
    tok = tmp_path / "tokenizer"
    fit("depth", run_config(ROOT / "configs/depth/depthart_tokenizer_tiny.yaml", tok, 10),
        "--trainer.max_steps", "10", "--trainer.limit_val_batches", "0", "--data.init_args.data.init_args.train_size", "64")
    kill_and_resume_matches("depth", ROOT / "configs/depth/depthart_tiny.yaml", tmp_path, steps=42, every=3,
                            kill_after=33, extra=["--trainer.limit_val_batches", "0"],
                            tokenizer=str(tok / "export" / "tokenizer"))


# ---------------------------------------------------------------------------------------------- run folders
def test_resume_with_nothing_to_resume_is_an_error(tmp_path):
    config = run_config(ROOT / "configs/core/digits_tokenizer.yaml", tmp_path / "run", 5)
    r = subprocess.run(scalear_cmd("core", "fit", "--config", str(config), "--ckpt_path", "last"),
                       capture_output=True, text=True, env=env(), timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and "nothing to resume" in r.stderr
    assert str(tmp_path / "run" / "checkpoints") in r.stderr
    assert not (tmp_path / "run" / "logs").exists()  # nothing was trained


def test_stage2_finds_the_newest_stage1_export(tmp_path):
    """Stage 1 run twice exports to the same folder; the stage-2 config's path names it."""
    stage2 = yaml.safe_load((ROOT / "configs/core/digits_var.yaml").read_text())
    stage1 = yaml.safe_load((ROOT / "configs/core/digits_tokenizer.yaml").read_text())
    assert stage2["model"]["init_args"]["tokenizer"] == f"{stage1['trainer']['default_root_dir']}/export/tokenizer"
    tok = tmp_path / "scalear_runs/core/tokenizer"
    config = run_config(ROOT / "configs/core/digits_tokenizer.yaml", tok, 5)
    weights = tok / "export" / "tokenizer" / "model.safetensors"
    fit("core", config, "--trainer.max_steps", "2", "--trainer.limit_val_batches", "0")
    first = weights.read_bytes()
    fit("core", config, "--trainer.max_steps", "4", "--trainer.limit_val_batches", "0")
    assert weights.read_bytes() != first  # the second attempt replaced the export in place
    assert sorted(p.name for p in (tok / "logs").iterdir()) == ["version_0", "version_1"]


def test_export_dir_given_on_resume_is_honoured(tmp_path):
    run = tmp_path / "run"
    config = run_config(ROOT / "configs/core/digits_tokenizer.yaml", run, 2)
    fit("core", config, "--trainer.max_steps", "2", "--trainer.limit_val_batches", "0")
    other = tmp_path / "elsewhere"
    r = fit("core", config, "--trainer.max_steps", "4", "--trainer.limit_val_batches", "0", "--ckpt_path", "last",
            "--model.init_args.export_dir", str(other))
    assert "resumed at step 2" in r.stdout + r.stderr
    assert (other / "tokenizer" / "model.safetensors").is_file()
