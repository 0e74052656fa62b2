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


def _tiny_presets() -> list[str]:
    from scalear.registry import list_models

    return [name for name in list_models() if name.endswith("/tiny") or name.endswith("/tiny-3d")]


def test_fast_meta_build_gives_the_skeleton_of_the_meta_device():
    """from_pretrained's skeleton (scalear.io._MetaBuild: no random init, elementwise ops by shape) has the same
    parameters and buffers, shapes and dtypes, as building on torch.device("meta") for every registered preset."""
    from scalear.io import _MetaBuild
    from scalear.registry import create_model, list_models

    def layout(m):
        return [(k, tuple(t.shape), t.dtype) for k, t in (*m.named_parameters(), *m.named_buffers())]

    for name in list_models():
        with _MetaBuild(torch.device("meta")):
            fast = create_model(name)
        with torch.device("meta"):
            plain = create_model(name)
        assert layout(fast) == layout(plain), name


@pytest.mark.parametrize("name", _tiny_presets())
def test_round_trip_of_every_tiny_preset_keeps_every_tensor(tmp_path, name):
    """Loading skips the random initialisation of parameters (the file overwrites them): every parameter and every
    buffer, persistent or not, equals the saved model's."""
    from scalear.registry import create_model

    torch.manual_seed(0)
    model = create_model(name).eval()
    save_pretrained(model, tmp_path / "m")
    loaded = from_pretrained(tmp_path / "m").eval()
    saved = dict((*model.named_parameters(), *model.named_buffers()))
    got = dict((*loaded.named_parameters(), *loaded.named_buffers()))
    assert saved.keys() == got.keys()
    assert all(torch.equal(saved[k], got[k]) for k in saved), name


def test_loading_imports_neither_dynamo_nor_sympy(tmp_path):
    """Building the skeleton on the meta device runs no Python meta kernel (their first use imports torch._dynamo
    and sympy, about a second of every command that loads a model)."""
    import subprocess
    import sys

    from scalear.registry import create_model

    for name in ("varformer/tiny", "dar/tiny"):
        save_pretrained(create_model(name), tmp_path / name.split("/")[0])
    code = ("import sys; from scalear.io import from_pretrained; "
            f"[from_pretrained(r'{tmp_path}/' + k) for k in ('varformer', 'dar')]; "
            "print(sorted(m for m in ('torch._dynamo', 'sympy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
