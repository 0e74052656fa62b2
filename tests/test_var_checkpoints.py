"""Loading VAR's tokenizer checkpoint (scalear.var_checkpoints).

Nothing can be downloaded here, so :func:`var_vae_state_dict_layout` rebuilds the (key, shape) list of VAR's
``vae_ch160v4096z32.pth`` from VAR's own naming rules (FoundationVision/VAR models/basic_vae.py, vqvae.py,
quant.py), independently of scalear's modules.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from scalear.var_checkpoints import CheckpointMismatchError, load_var_vqvae, map_var_vae_state_dict
from scalear.vqvae import create_vqvae

Layout = list[tuple[str, tuple[int, ...]]]


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """One intra-op thread: on a shared 2-core machine, OpenMP spin-waiting makes small ops 10-100x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def var_vae_state_dict_layout(
    ch: int = 160,
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4),
    num_res_blocks: int = 2,
    z: int = 32,
    vocab: int = 4096,
    in_ch: int = 3,
    num_scales: int = 10,
    share_quant_resi: int = 4,
) -> Layout:
    """(key, shape) of VAR's ``VQVAE.state_dict()`` (using_sa = using_mid_sa = True, quant_conv_ks = 3)."""
    out: Layout = []

    def norm(p: str, c: int) -> None:  # GroupNorm(32, c, affine)
        out.extend([(f"{p}.weight", (c,)), (f"{p}.bias", (c,))])

    def conv(p: str, cin: int, cout: int, k: int) -> None:
        out.extend([(f"{p}.weight", (cout, cin, k, k)), (f"{p}.bias", (cout,))])

    def resnet(p: str, cin: int, cout: int) -> None:
        norm(f"{p}.norm1", cin)
        conv(f"{p}.conv1", cin, cout, 3)
        norm(f"{p}.norm2", cout)
        conv(f"{p}.conv2", cout, cout, 3)
        if cin != cout:
            conv(f"{p}.nin_shortcut", cin, cout, 1)

    def attn(p: str, c: int) -> None:
        norm(f"{p}.norm", c)
        conv(f"{p}.qkv", c, 3 * c, 1)
        conv(f"{p}.proj_out", c, c, 1)

    def mid(p: str, c: int) -> None:
        resnet(f"{p}.mid.block_1", c, c)
        attn(f"{p}.mid.attn_1", c)
        resnet(f"{p}.mid.block_2", c, c)

    n = len(ch_mult)
    # Encoder: conv_in; down[i].block[j] (+ attn[j] at the last level); down[i].downsample except last; mid; out
    conv("encoder.conv_in", in_ch, ch, 3)
    in_mult = (1, *ch_mult)
    for i in range(n):
        block_in, block_out = ch * in_mult[i], ch * ch_mult[i]
        for j in range(num_res_blocks):
            resnet(f"encoder.down.{i}.block.{j}", block_in, block_out)
            block_in = block_out
            if i == n - 1:
                attn(f"encoder.down.{i}.attn.{j}", block_in)
        if i != n - 1:
            conv(f"encoder.down.{i}.downsample.conv", block_in, block_in, 3)
    mid("encoder", block_in)
    norm("encoder.norm_out", block_in)
    conv("encoder.conv_out", block_in, z, 3)
    # Decoder: conv_in; mid; up[i] built from the last level down, num_res_blocks + 1 blocks; upsample if i != 0
    block_in = ch * ch_mult[-1]
    conv("decoder.conv_in", z, block_in, 3)
    mid("decoder", block_in)
    for i in reversed(range(n)):
        block_out = ch * ch_mult[i]
        for j in range(num_res_blocks + 1):
            resnet(f"decoder.up.{i}.block.{j}", block_in, block_out)
            block_in = block_out
            if i == n - 1:
                attn(f"decoder.up.{i}.attn.{j}", block_in)
        if i != 0:
            conv(f"decoder.up.{i}.upsample.conv", block_in, block_in, 3)
    norm("decoder.norm_out", block_in)
    conv("decoder.conv_out", block_in, in_ch, 3)
    # VectorQuantizer2: EMA hits buffer, codebook, phi convs (Phi subclasses Conv2d: no ".conv")
    out.append(("quantize.ema_vocab_hit_SV", (num_scales, vocab)))
    out.append(("quantize.embedding.weight", (vocab, z)))
    if share_quant_resi == 0:  # PhiNonShared(ModuleList)
        for k in range(num_scales):
            conv(f"quantize.quant_resi.{k}", z, z, 3)
    elif share_quant_resi == 1:  # PhiShared.qresi
        conv("quantize.quant_resi.qresi", z, z, 3)
    else:  # PhiPartiallyShared.qresi_ls
        for k in range(share_quant_resi):
            conv(f"quantize.quant_resi.qresi_ls.{k}", z, z, 3)
    conv("quant_conv", z, z, 3)
    conv("post_quant_conv", z, z, 3)
    return out


def random_state_dict(layout: Layout, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sd = {k: torch.randn(shape, generator=g) * 0.05 for k, shape in layout}
    sd["quantize.ema_vocab_hit_SV"] = torch.rand(sd["quantize.ema_vocab_hit_SV"].shape, generator=g) * 10
    return sd


NARROW = dict(ch=32, vocab_size=512)  # VAR's structure at 1/5 of the width, for speed


@pytest.fixture(scope="module")
def narrow_ckpt(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    sd = random_state_dict(var_vae_state_dict_layout(ch=32, vocab=512))
    path = tmp_path_factory.mktemp("var") / "vae_ch32v512z32.pth"
    torch.save(sd, path)
    return path, sd


def test_full_var_layout_matches_var_f16_preset() -> None:
    layout = var_vae_state_dict_layout()
    assert len({k for k, _ in layout}) == len(layout)
    mapped = map_var_vae_state_dict({k: torch.empty(s, device="meta") for k, s in layout})
    with torch.device("meta"):
        model = create_vqvae("var-f16")
    own = model.state_dict()
    assert sorted(mapped) == sorted(own)
    assert {k: tuple(v.shape) for k, v in mapped.items()} == {k: tuple(v.shape) for k, v in own.items()}
    n_params = sum(torch.Size(s).numel() for k, s in layout if k != "quantize.ema_vocab_hit_SV")
    assert n_params == model.num_params()


def test_every_var_tensor_lands_on_its_parameter(narrow_ckpt: tuple[Path, dict[str, torch.Tensor]]) -> None:
    path, var_sd = narrow_ckpt
    model = load_var_vqvae(path, **NARROW)
    own = model.state_dict()
    renamed = 0
    for key, value in var_sd.items():
        target = key
        if key.startswith("quantize.quant_resi.qresi_ls."):
            i, leaf = key.split(".")[-2:]
            target, renamed = f"quantize.quant_resi.qresi_ls.{i}.conv.{leaf}", renamed + 1
        assert torch.equal(own[target], value), key
    assert renamed == 8
    torch.testing.assert_close(own["quantize.code_ema_hits_V"], var_sd["quantize.ema_vocab_hit_SV"].sum(0))
    assert int(own["quantize.record_hit"]) == 0
    assert not model.training and not any(p.requires_grad for p in model.parameters())


def test_loaded_phi_computes_vars_phi(narrow_ckpt: tuple[Path, dict[str, torch.Tensor]]) -> None:
    """VAR's Phi(h) = 0.5 h + 0.5 conv2d(h; W, b); its partially shared phi picks convs 0,0,1,1,1,2,2,3,3,3."""
    path, var_sd = narrow_ckpt
    model = load_var_vqvae(path, **NARROW)
    h = torch.randn(2, 32, 16, 16)
    var_phi = [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]
    for si in range(10):
        k = var_phi[si]
        w, b = var_sd[f"quantize.quant_resi.qresi_ls.{k}.weight"], var_sd[f"quantize.quant_resi.qresi_ls.{k}.bias"]
        expected = h * 0.5 + F.conv2d(h, w, b, padding=1) * 0.5
        torch.testing.assert_close(model.quantize.quant_resi(h, si), expected)


def test_loaded_model_round_trips_images(narrow_ckpt: tuple[Path, dict[str, torch.Tensor]]) -> None:
    path, _ = narrow_ckpt
    model = load_var_vqvae(path, **NARROW)
    x = torch.rand(1, 3, 256, 256) * 2 - 1
    idx = model.img_to_indices(x)
    assert [i.shape[1] for i in idx] == [p * p for p in (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)]
    assert model.indices_to_img(idx).shape == x.shape


@pytest.mark.parametrize("share", [0, 1])
def test_non_default_phi_sharing_maps(tmp_path: Path, share: int) -> None:
    sd = random_state_dict(var_vae_state_dict_layout(ch=32, vocab=512, share_quant_resi=share))
    torch.save(sd, tmp_path / "vae.pth")
    model = load_var_vqvae(tmp_path / "vae.pth", share_quant_resi=share, **NARROW)
    src = "quantize.quant_resi.qresi.weight" if share == 1 else "quantize.quant_resi.9.weight"
    dst = "quantize.quant_resi.qresi_ls.0.conv.weight" if share == 1 else "quantize.quant_resi.qresi_ls.9.conv.weight"
    assert torch.equal(model.state_dict()[dst], sd[src])


def test_safetensors_and_other_schedules_load(
    tmp_path: Path, narrow_ckpt: tuple[Path, dict[str, torch.Tensor]]
) -> None:
    _, var_sd = narrow_ckpt
    save_file(var_sd, str(tmp_path / "vae.safetensors"))
    model = load_var_vqvae(tmp_path / "vae.safetensors", patch_nums=(1, 2, 4, 8, 16), freeze=False, **NARROW)
    assert model.training and all(p.requires_grad for p in model.parameters())
    # VAR resets the usage statistics when the number of scales differs; the weights still load
    assert model.quantize.ema_vocab_hit_SV.shape == (5, 512)
    assert torch.equal(model.quantize.embedding.weight, var_sd["quantize.embedding.weight"])


def test_mismatches_are_reported_clearly(tmp_path: Path, narrow_ckpt: tuple[Path, dict[str, torch.Tensor]]) -> None:
    _, var_sd = narrow_ckpt
    broken = dict(var_sd)
    del broken["encoder.mid.attn_1.qkv.weight"]
    broken["encoder.extra.weight"] = torch.zeros(1)
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(CheckpointMismatchError, match=r"broken\.pth") as err:
        load_var_vqvae(tmp_path / "broken.pth", **NARROW)
    msg = str(err.value)
    assert "1 missing keys: encoder.mid.attn_1.qkv.weight" in msg
    assert "1 unexpected keys: encoder.extra.weight" in msg
    shape_msg = r"quantize\.embedding\.weight: checkpoint \(512, 32\) vs model \(1024, 32\)"
    with pytest.raises(CheckpointMismatchError, match=shape_msg):
        load_var_vqvae(narrow_ckpt[0], ch=32, vocab_size=1024)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_var_vqvae(tmp_path / "missing.pth")
