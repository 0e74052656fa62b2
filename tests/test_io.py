"""Checkpoint I/O: safetensors + JSON round trips, atomic writes and clear errors on bad files."""

import json

import pytest
import torch

from scalear.io import atomic_write, from_pretrained, load_torch_file, save_pretrained
from scalear.schedules import ScaleSchedule
from scalear.transformer import NextScaleTransformer, TransformerConfig
from scalear.vqvae import create_vqvae


def tiny_transformer() -> NextScaleTransformer:
    cfg = TransformerConfig(vocab_size=16, latent_dim=4, schedule=ScaleSchedule.square((1, 2)), depth=1, width=32,
                            num_heads=2, num_classes=3)
    return NextScaleTransformer(cfg)


@pytest.mark.parametrize("make", [tiny_transformer, lambda: create_vqvae("tiny", ch=8, norm_groups=4, patch_nums=(1, 2, 4, 8))])
def test_round_trip_is_exact(tmp_path, make):
    model = make().eval()
    save_pretrained(model, tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
    loaded = from_pretrained(tmp_path / "m").eval()
    assert type(loaded) is type(model)
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b)


def test_corrupt_and_mismatched_files_are_named(tmp_path):
    save_pretrained(tiny_transformer(), tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="model.safetensors is not a readable safetensors file"):
        from_pretrained(tmp_path / "m")
    save_pretrained(tiny_transformer(), tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    meta["config"]["depth"] = 2
    (tmp_path / "m" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="does not match its config.json"):
        from_pretrained(tmp_path / "m")
    with pytest.raises(FileNotFoundError, match="config.json not found"):
        from_pretrained(tmp_path / "nothing")
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="bad.pt could not be read"):
        load_torch_file(tmp_path / "bad.pt")


def test_atomic_write_leaves_old_file_on_crash(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")

    def crash(path: str) -> None:
        with open(path, "w") as f:
            f.write("half")
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        atomic_write(target, crash)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_write_uses_the_usual_permissions(tmp_path):
    import os

    umask = os.umask(0o022)
    try:
        path = atomic_write(tmp_path / "f.txt", lambda p: open(p, "w").write("x"))
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644
