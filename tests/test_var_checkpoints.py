"""Loading VAR's tokenizer and transformer checkpoints (scalear.var_checkpoints).

Nothing can be downloaded here, so :func:`var_vae_state_dict_layout` and :func:`var_transformer_state_dict_layout`
rebuild the (key, shape) lists of VAR's ``vae_ch160v4096z32.pth`` and ``var_d{16,20,24,30}.pth`` from VAR's own
naming rules (FoundationVision/VAR models/basic_vae.py, vqvae.py, quant.py, var.py, basic_var.py),
independently of scalear's modules; :func:`var_reference_forward` writes VAR's forward pass out on the raw
checkpoint tensors.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from scalear.sampling import sample
from scalear.schedules import ScaleSchedule
from scalear.transformer import create_transformer
from scalear.var_checkpoints import (
    CheckpointMismatchError,
    load_var,
    load_var_transformer,
    load_var_vqvae,
    map_var_transformer_state_dict,
    map_var_vae_state_dict,
)
from scalear.vqvae import create_vqvae

Layout = list[tuple[str, tuple[int, ...]]]


pytestmark = pytest.mark.usefixtures("single_thread")


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
    model = load_var_vqvae(tmp_path / "vae.pth", phi_share=share, **NARROW)
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


# ==================================================================================== transformer (var_d*.pth)
VAR_PN_256 = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
VAR_DERIVED_BUFFERS = ("lvl_1L", "attn_bias_for_masking")


def var_transformer_state_dict_layout(
    depth: int,
    V: int = 4096,
    Cvae: int = 32,
    num_classes: int = 1000,
    patch_nums: tuple[int, ...] = VAR_PN_256,
    shared_aln: bool = False,
    attn_l2_norm: bool = True,
) -> Layout:
    """(key, shape) of VAR's ``VAR.state_dict()`` as models/__init__.py ``build_vae_var(depth=...)`` builds it:
    C = 64 * depth, depth heads, mlp 4C (models/var.py, models/basic_var.py)."""
    C, H = 64 * depth, depth
    L, K = sum(p * p for p in patch_nums), len(patch_nums)
    out: Layout = [
        ("pos_start", (1, patch_nums[0] ** 2, C)),
        ("pos_1LC", (1, L, C)),
        ("lvl_1L", (1, L)),
        ("attn_bias_for_masking", (1, 1, L, L)),
        ("word_embed.weight", (C, Cvae)),
        ("word_embed.bias", (C,)),
        ("class_emb.weight", (num_classes + 1, C)),
        ("lvl_embed.weight", (K, C)),
    ]
    if shared_aln:  # nn.Sequential(SiLU, SharedAdaLin(D, 6C)); else nn.Identity (no keys)
        out += [("shared_ada_lin.1.weight", (6 * C, C)), ("shared_ada_lin.1.bias", (6 * C,))]
    for i in range(depth):
        b = f"blocks.{i}"
        out += [(f"{b}.ada_gss", (1, 1, 6, C))] if shared_aln else []
        out += [(f"{b}.attn.scale_mul_1H11", (1, H, 1, 1))] if attn_l2_norm else []
        out += [
            (f"{b}.attn.q_bias", (C,)),
            (f"{b}.attn.v_bias", (C,)),
            (f"{b}.attn.zero_k_bias", (C,)),
            (f"{b}.attn.mat_qkv.weight", (3 * C, C)),
            (f"{b}.attn.proj.weight", (C, C)),
            (f"{b}.attn.proj.bias", (C,)),
            (f"{b}.ffn.fc1.weight", (4 * C, C)),
            (f"{b}.ffn.fc1.bias", (4 * C,)),
            (f"{b}.ffn.fc2.weight", (C, 4 * C)),
            (f"{b}.ffn.fc2.bias", (C,)),
        ]
        if not shared_aln:  # nn.Sequential(SiLU, Linear(D, 6C)); LayerNorms have no affine parameters
            out += [(f"{b}.ada_lin.1.weight", (6 * C, C)), (f"{b}.ada_lin.1.bias", (6 * C,))]
    out += [
        ("head_nm.ada_lin.1.weight", (2 * C, C)),
        ("head_nm.ada_lin.1.bias", (2 * C,)),
        ("head.weight", (V, C)),
        ("head.bias", (V,)),
    ]
    return out


def random_var_transformer_state_dict(depth: int, seed: int = 0, **layout_kw) -> dict[str, torch.Tensor]:
    """Random weights in VAR's layout; the derived buffers exactly as VAR's constructor computes them."""
    patch_nums = layout_kw.get("patch_nums", VAR_PN_256)
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in var_transformer_state_dict_layout(depth, **layout_kw):
        std = 0.5 if key.endswith(("ada_lin.1.bias", "ada_gss")) else 0.05  # gates/modulation well away from 0
        sd[key] = torch.randn(shape, generator=g) * std
    L = sum(p * p for p in patch_nums)
    d = torch.cat([torch.full((pn * pn,), i) for i, pn in enumerate(patch_nums)]).view(1, L, 1)
    dT = d.transpose(1, 2)
    sd["lvl_1L"] = dT[:, 0].contiguous()
    sd["attn_bias_for_masking"] = torch.where(d >= dT, 0.0, -torch.inf).reshape(1, 1, L, L).contiguous()
    for key in sd:
        if key.endswith("zero_k_bias"):
            sd[key] = torch.zeros_like(sd[key])
    return sd


def var_reference_forward(sd: dict[str, torch.Tensor], label_B: torch.Tensor, x_BlCv: torch.Tensor) -> torch.Tensor:
    """VAR's teacher-forced ``VAR.forward`` (no label dropout) written out from models/var.py + basic_var.py,
    on the raw checkpoint tensors: explicit softmax attention with the checkpoint's own mask."""
    C = sd["word_embed.weight"].shape[0]
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    H, B = depth, label_B.shape[0]
    bias_11LL = sd["attn_bias_for_masking"]
    L, first_l = bias_11LL.shape[-1], sd["pos_start"].shape[1]
    ln = lambda x: F.layer_norm(x, (C,), eps=1e-6)  # noqa: E731
    cond_BD = sd["class_emb.weight"][label_B]
    sos = cond_BD.unsqueeze(1).expand(B, first_l, -1) + sd["pos_start"]
    x = torch.cat((sos, F.linear(x_BlCv, sd["word_embed.weight"], sd["word_embed.bias"])), dim=1)
    x = x + sd["lvl_embed.weight"][sd["lvl_1L"][0]] + sd["pos_1LC"]
    shared = "shared_ada_lin.1.weight" in sd
    if shared:
        gss = F.linear(F.silu(cond_BD), sd["shared_ada_lin.1.weight"], sd["shared_ada_lin.1.bias"]).view(-1, 1, 6, C)
    for i in range(depth):
        p = lambda n: sd[f"blocks.{i}.{n}"]  # noqa: E731
        if shared:
            mod = p("ada_gss") + gss
        else:
            mod = F.linear(F.silu(cond_BD), p("ada_lin.1.weight"), p("ada_lin.1.bias")).view(-1, 1, 6, C)
        gamma1, gamma2, scale1, scale2, shift1, shift2 = mod.unbind(2)
        h = ln(x) * (1 + scale1) + shift1
        qkv_bias = torch.cat((p("attn.q_bias"), p("attn.zero_k_bias"), p("attn.v_bias")))
        q, k, v = F.linear(h, p("attn.mat_qkv.weight"), qkv_bias).view(B, L, 3, H, C // H).permute(2, 0, 3, 1, 4)
        q = F.normalize(q, dim=-1) * p("attn.scale_mul_1H11").clamp_max(math.log(100)).exp()
        k = F.normalize(k, dim=-1)
        attn = (q @ k.transpose(-2, -1) * 1.0 + bias_11LL).softmax(dim=-1)  # attn_l2_norm: softmax scale 1
        o = (attn @ v).transpose(1, 2).reshape(B, L, C)
        x = x + F.linear(o, p("attn.proj.weight"), p("attn.proj.bias")) * gamma1
        h = ln(x) * (1 + scale2) + shift2
        f = F.linear(F.gelu(F.linear(h, p("ffn.fc1.weight"), p("ffn.fc1.bias")), approximate="tanh"),
                     p("ffn.fc2.weight"), p("ffn.fc2.bias"))
        x = x + f * gamma2
    scale, shift = F.linear(F.silu(cond_BD), sd["head_nm.ada_lin.1.weight"], sd["head_nm.ada_lin.1.bias"]).view(
        -1, 1, 2, C
    ).unbind(2)
    return F.linear(ln(x) * (1 + scale) + shift, sd["head.weight"], sd["head.bias"])


@pytest.fixture(scope="module")
def tiny_var_ckpt(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """VAR's layout at depth 2 (C = 128, 2 heads) with the real L = 680, V = 4096, Cvae = 32, 1000 classes."""
    sd = random_var_transformer_state_dict(2)
    path = tmp_path_factory.mktemp("var") / "var_d2.pth"
    torch.save(sd, path)
    return path, sd


@pytest.mark.parametrize("depth, params", [(16, 310e6), (20, 600e6), (24, 1.0e9), (30, 2.0e9)])
def test_full_var_layouts_match_the_presets(depth: int, params: float) -> None:
    layout = var_transformer_state_dict_layout(depth)
    assert len({k for k, _ in layout}) == len(layout)
    mapped = map_var_transformer_state_dict({k: torch.empty(s, device="meta") for k, s in layout})
    with torch.device("meta"):
        model = create_transformer(f"var-d{depth}")
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in mapped.items()} == own
    assert set(dict(layout)) - set(mapped) == set(VAR_DERIVED_BUFFERS)
    n_params = sum(torch.Size(s).numel() for k, s in layout if k not in VAR_DERIVED_BUFFERS and "zero_k_bias" not in k)
    assert n_params == model.num_params()
    assert n_params == pytest.approx(params, rel=0.05)  # README: 310M, 600M, 1.0B, 2.0B


def test_shared_adaln_layout_matches() -> None:
    layout = var_transformer_state_dict_layout(4, shared_aln=True)
    mapped = map_var_transformer_state_dict({k: torch.empty(s, device="meta") for k, s in layout})
    with torch.device("meta"):
        model = create_transformer("var-d16", depth=4, shared_adaln=True)
    assert {k: tuple(v.shape) for k, v in mapped.items()} == {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_every_var_transformer_tensor_lands_on_its_parameter(
    tiny_var_ckpt: tuple[Path, dict[str, torch.Tensor]],
) -> None:
    path, var_sd = tiny_var_ckpt
    model = load_var_transformer(path)
    cfg = model.cfg
    assert (cfg.depth, cfg.width, cfg.num_heads, cfg.num_classes, cfg.vocab_size, cfg.latent_dim) == (
        2, 128, 2, 1000, 4096, 32
    )
    assert cfg.schedule == ScaleSchedule.var_2d(256) and cfg.attn_l2_norm and not cfg.shared_adaln
    assert not model.training and all(isinstance(p, torch.nn.Parameter) and p.requires_grad for p in model.parameters())
    own = model.state_dict()
    assert set(own) == set(var_sd) - set(VAR_DERIVED_BUFFERS)
    for key, value in own.items():
        assert torch.equal(value, var_sd[key]), key
    assert torch.equal(model.lvl_1L, var_sd["lvl_1L"])
    mask_LL = model.attn_mask(0, torch.device("cpu"))
    assert torch.equal(mask_LL, var_sd["attn_bias_for_masking"][0, 0] == 0)
    frozen = load_var_transformer(path, depth=2, freeze=True)
    assert not any(p.requires_grad for p in frozen.parameters())


@pytest.mark.parametrize("shared_aln", [False, True], ids=["ada_lin", "shared_aln"])
def test_loaded_transformer_computes_vars_forward(tmp_path: Path, shared_aln: bool) -> None:
    sd = random_var_transformer_state_dict(2, seed=1, shared_aln=shared_aln)
    torch.save(sd, tmp_path / "var.pth")
    model = load_var_transformer(tmp_path / "var.pth")
    assert model.cfg.shared_adaln == shared_aln
    label_B = torch.tensor([5, 1000])  # a class and the null class
    x_BlCv = torch.randn(2, 680 - 1, 32)
    expected = var_reference_forward(sd, label_B, x_BlCv)
    got = model(x_BlCv, label_B=label_B, drop_B=torch.zeros(2, dtype=torch.bool))
    assert expected.std() > 0.1  # the weights shape the logits, not just the head bias
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_loaded_var_samples_and_its_kv_cache_matches_teacher_forcing(
    tmp_path: Path, tiny_var_ckpt: tuple[Path, dict[str, torch.Tensor]]
) -> None:
    vae_path = tmp_path / "vae_ch32v4096z32.pth"
    torch.save(random_state_dict(var_vae_state_dict_layout(ch=32, vocab=4096)), vae_path)
    vae, var = load_var(vae_path, tiny_var_ckpt[0], vae_overrides=dict(ch=32))
    labels = torch.tensor([3, 980])
    out = sample(var, vae.quantize, 2, label_B=labels, guidance=1.5, top_k=900, top_p=0.96,
                 generator=torch.Generator().manual_seed(0))  # VAR's README recipe
    assert [i.shape for i in out.indices] == [(2, p * p) for p in VAR_PN_256]
    img = vae.fhat_to_img(out.f_hat)
    assert img.shape == (2, 3, 256, 256) and img.abs().max() <= 1
    # the cached scale-by-scale path and one teacher-forced pass use the loaded weights identically
    cached = sample(var, vae.quantize, 2, label_B=labels, forced_indices=out.indices, return_logits=True)
    full = var(vae.quantize.teacher_forcing_input(out.indices), label_B=labels, drop_B=torch.zeros(2, dtype=torch.bool))
    torch.testing.assert_close(torch.cat(cached.logits, 1), full, atol=1e-4, rtol=1e-4)


def test_core_sample_runs_vars_released_files(tmp_path: Path, tiny_var_ckpt, capsys) -> None:
    """``scalear core sample --model var_d*.pth`` with VAR's tokenizer beside it (widths read off the files) writes
    the grid that scalear.sampling gives on the same weights and seed; a wrong pair of files is one line, exit 2."""
    from PIL import Image

    from scalear.cli import main
    from scalear.viz import save_image_grid

    var_path = tmp_path / "var_d2.pth"
    var_path.write_bytes(tiny_var_ckpt[0].read_bytes())
    torch.save(random_state_dict(var_vae_state_dict_layout(ch=32, vocab=4096)), tmp_path / "vae_ch160v4096z32.pth")
    args = ["--classes", "3,980", "--per-class", "1", "--cfg", "4", "--top-k", "900", "--top-p", "0.95", "--seed", "7"]
    assert main(["core", "sample", "--model", str(var_path), *args, "--out", str(tmp_path / "cli.png")]) == 0
    vae, var = load_var(tmp_path / "vae_ch160v4096z32.pth", var_path)
    out = sample(var.eval(), vae.quantize, 2, label_B=torch.tensor([3, 980]), guidance=4.0, top_k=900, top_p=0.95,
                 generator=torch.Generator().manual_seed(7))
    save_image_grid(vae.eval().fhat_to_img(out.f_hat), tmp_path / "direct.png", nrow=1, rows=["class 3", "class 980"])
    assert (np.asarray(Image.open(tmp_path / "cli.png")) == np.asarray(Image.open(tmp_path / "direct.png"))).all()
    capsys.readouterr()
    torch.save(random_state_dict(var_vae_state_dict_layout(ch=32, vocab=512)), tmp_path / "small_vae.pth")
    rc = main(["core", "sample", "--model", str(var_path), "--tokenizer", str(tmp_path / "small_vae.pth"),
               "--out", str(tmp_path / "x.png")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "small_vae.pth" in err and "Traceback" not in err


def test_schedule_derived_buffers_are_checked(
    tmp_path: Path, tiny_var_ckpt: tuple[Path, dict[str, torch.Tensor]]
) -> None:
    small = random_var_transformer_state_dict(2, patch_nums=(1, 2, 3, 4))
    torch.save(small, tmp_path / "var_pn4.pth")
    with pytest.raises(CheckpointMismatchError, match=r"var_pn4\.pth' was trained on 30 tokens with \[1, 4, 9, 16\]"):
        load_var_transformer(tmp_path / "var_pn4.pth")
    model = load_var_transformer(tmp_path / "var_pn4.pth", schedule=ScaleSchedule.square((1, 2, 3, 4)))
    assert torch.equal(model.pos_1LC, small["pos_1LC"])

    _, var_sd = tiny_var_ckpt
    lvl = var_sd["lvl_1L"].clone()
    lvl[0, 1] = 0  # scale 1 claims a token of scale 0: same L, another layout
    torch.save({**var_sd, "lvl_1L": lvl}, tmp_path / "lvl.pth")
    with pytest.raises(CheckpointMismatchError, match=r"\[2, 3, 9, 16"):
        load_var_transformer(tmp_path / "lvl.pth")
    bias = var_sd["attn_bias_for_masking"].clone()
    bias[0, 0, 0, 5] = 0.0  # the first token sees a finer scale
    torch.save({**var_sd, "attn_bias_for_masking": bias}, tmp_path / "bias.pth")
    with pytest.raises(CheckpointMismatchError, match="not the block-causal mask"):
        load_var_transformer(tmp_path / "bias.pth")
    no_lvl = {k: v for k, v in small.items() if k != "lvl_1L"}
    with pytest.raises(CheckpointMismatchError, match=r"shape \(1, 1, 30, 30\).*needs \(1, 1, 680, 680\)"):
        map_var_transformer_state_dict(no_lvl, ScaleSchedule.var_2d(256), source="x.pth")


def test_transformer_mismatches_are_reported_clearly(
    tmp_path: Path,
    tiny_var_ckpt: tuple[Path, dict[str, torch.Tensor]],
    narrow_ckpt: tuple[Path, dict[str, torch.Tensor]],
) -> None:
    path, var_sd = tiny_var_ckpt
    with pytest.raises(CheckpointMismatchError, match=r"var_d2\.pth' holds a depth-2 VAR \(width 128\), not depth 16"):
        load_var_transformer(path, depth=16)
    broken = {k: v for k, v in var_sd.items() if k != "blocks.1.ffn.fc2.bias"}
    broken["blocks.1.extra"] = torch.zeros(1)
    broken["blocks.0.ffn.fc1.weight"] = torch.zeros(500, 128)
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(CheckpointMismatchError, match=r"broken\.pth") as err:
        load_var_transformer(tmp_path / "broken.pth")
    msg = str(err.value)
    assert "1 missing keys: blocks.1.ffn.fc2.bias" in msg
    assert "1 unexpected keys: blocks.1.extra" in msg
    assert "blocks.0.ffn.fc1.weight: checkpoint (500, 128) vs model (512, 128)" in msg
    data = path.read_bytes()
    (tmp_path / "truncated.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointMismatchError, match=r"could not read checkpoint .*truncated\.pth"):
        load_var_transformer(tmp_path / "truncated.pth")
    with pytest.raises(CheckpointMismatchError, match="is not a VAR transformer state dict"):
        load_var_transformer(narrow_ckpt[0])  # the tokenizer's file
    with pytest.raises(CheckpointMismatchError, match=r"does not fit tokenizer"):
        load_var(narrow_ckpt[0], path, vae_overrides=NARROW)  # vocabulary 512 vs 4096
