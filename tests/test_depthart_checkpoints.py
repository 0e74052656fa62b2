"""The released DepthART checkpoint (domains/depth/depthart_checkpoints.py; issue 16) against the official code.

No weights can be downloaded: ``tests/fixtures/depthart_official`` holds the key -> shape lists of the official
``model.safetensors`` (``layouts.json``, recorded from the official classes) and the official outputs on fixed
inputs (``small.npz``, ``paper-d2.npz``), recorded by ``benchmarks/parity_depthart.py --record`` from the official
code at bulatko/DepthART b2bc093. The tests rebuild the state dicts with the script's fill rule, load them into
scalear strictly and compare (greedy path, the sampler on the official logits, the loop with the official sampled
codes forced in); the fixture README says what each variant is.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from scalear.domains.depth.depthart import DepthARTModel, preset_config
from scalear.domains.depth.depthart_checkpoints import (check_depthart_state_dict, depthart_config_from_state_dict,
                                                        load_depthart_checkpoint, map_depthart_state_dict)
from scalear.io import from_pretrained, save_pretrained
from scalear.var_checkpoints import CheckpointMismatchError
from conftest import import_benchmark

FIXTURES = Path(__file__).parent / "fixtures" / "depthart_official"
TOL = 1e-5  #: max abs difference allowed for logits, f_hat and depth maps (issue 16)

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def parity():
    return import_benchmark("parity_depthart")


@pytest.fixture(scope="module")
def layouts() -> dict[str, list]:
    return json.loads((FIXTURES / "layouts.json").read_text())


def _filled(parity, layouts, variant: str) -> dict[str, torch.Tensor]:
    return parity.fill_state_dict(layouts[variant], parity.VARIANTS[variant]["patch_nums"])


def _check_parity(parity, layouts, variant: str) -> dict[str, float]:
    rec = dict(np.load(FIXTURES / f"{variant}.npz"))
    res = parity.compare(variant, layouts[variant], rec)
    assert res["greedy_codes_equal"] == 1.0, "greedy codes differ from the official ones"
    assert res["sampler_codes_equal"] == 1.0, "the sampler fed the official logits drew other codes"
    diffs = {k: v for k, v in res.items() if k.endswith("_max_diff")}
    assert all(v <= TOL for v in diffs.values()), diffs
    return res


# ------------------------------------------------------------------ outputs equal the official ones
def test_small_variant_computes_what_the_official_code_computes(parity, layouts):
    """Depth 4, width 128 on a 32 px tokenizer with 6 scales (the official classes at small sizes)."""
    res = _check_parity(parity, layouts, "small")
    assert res["prefix_max_diff"] <= TOL and res["forced_fhat_max_diff"] == 0.0


@pytest.mark.slow
def test_paper_width_variant_computes_what_the_official_code_computes(parity, layouts):
    """VAR's tokenizer shape (ch 160, 4096 codes, 10 scales, 256 px) and the released width / 16 heads, 2 blocks."""
    _check_parity(parity, layouts, "paper-d2")


@pytest.mark.parametrize("variant", ["small", "paper-d2"])
def test_the_architecture_is_read_off_the_file(parity, layouts, variant):
    sd = {k: torch.empty(s, dtype=getattr(torch, d), device="meta") for k, s, d in layouts[variant]}
    sd["lvl_1L"] = parity.fill_tensor("lvl_1L", (1, sum(p * p for p in parity.VARIANTS[variant]["patch_nums"])),
                                      "int64", parity.VARIANTS[variant]["patch_nums"])
    assert depthart_config_from_state_dict(sd).to_dict() == parity.scalear_config(variant).to_dict()


def test_released_layout_loads_into_the_official_preset_with_no_missing_or_unexpected_key(parity, layouts):
    """The full-size key -> shape list of the official model.safetensors (VAR-d16, VAR's tokenizer) maps onto
    every tensor of the ``official`` preset, shapes included (on the meta device: nothing is allocated)."""
    sd = {k: torch.empty(s, dtype=getattr(torch, d), device="meta") for k, s, d in layouts["paper"]}
    for key in ("lvl_1L", "normalizer.alpha", "normalizer.beta"):
        sd[key] = parity.fill_tensor(key, tuple(sd[key].shape), str(sd[key].dtype).removeprefix("torch."),
                                     parity.VAR_PATCH_NUMS)
    assert not any(k.startswith(("vae_quant_proxy.", "attn_bias")) for k in sd) and "vae_proxy.quantize.embedding.weight" in sd
    cfg = depthart_config_from_state_dict(sd)
    assert cfg.to_dict() == preset_config("official").to_dict()
    with torch.device("meta"):
        model = DepthARTModel(cfg)
    mapped, origin = map_depthart_state_dict(sd, model, "model.safetensors")
    own = model.state_dict()
    assert set(mapped) == set(own) and all(mapped[k].shape == own[k].shape for k in own)
    check_depthart_state_dict(own, mapped, origin, "model.safetensors")
    tr = model.transformer.cfg
    assert (tr.depth, tr.width, tr.num_heads, tr.attn_l2_norm, tr.prefix_sees_start) == (16, 1024, 16, False, True)


# ------------------------------------------------------------------ mismatching files are refused
def _refused(path: Path, match: str, **kw) -> str:
    with pytest.raises(CheckpointMismatchError) as e:
        load_depthart_checkpoint(path, **kw)
    msg = str(e.value)
    assert str(path) in msg and "\n" not in msg, msg
    assert match in msg, msg
    return msg


def test_mismatching_files_are_refused_naming_the_file_and_the_first_offending_key(parity, layouts, tmp_path):
    sd = _filled(parity, layouts, "small")

    def write(name: str, d: dict) -> Path:
        save_file(d, str(tmp_path / name))
        return tmp_path / name

    bad = dict(sd, **{"blocks.1.ffn.fc1.weight": sd["blocks.1.ffn.fc1.weight"].T.contiguous()})
    _refused(write("shape.safetensors", bad), "first offending key 'blocks.1.ffn.fc1.weight' (shape (128, 512)")
    _refused(write("extra.safetensors", dict(sd, **{"blocks.0.attn.scale_mul_1H11": torch.zeros(1, 2, 1, 1)})),
             "'blocks.0.attn.scale_mul_1H11' (unexpected")
    _refused(write("missing.safetensors", {k: v for k, v in sd.items() if k != "head_nm.ada_lin.1.bias"}),
             "'head_nm.ada_lin.1.bias' (missing")
    _refused(write("vae_part.safetensors", {k: v for k, v in sd.items() if k != "vae_proxy.decoder.conv_out.bias"}),
             "'vae_proxy.decoder.conv_out.bias' (missing")
    var_like = dict(sd, attn_bias_for_masking=torch.zeros(1, 1, 130, 130))
    _refused(write("var.safetensors", var_like), "a VAR or DepthVAR checkpoint")
    _refused(write("alpha.safetensors", dict(sd, **{"normalizer.alpha": torch.tensor(1.0)})), "normalizer.alpha")
    torch.save({"state_dict": sd}, tmp_path / "nested.pth")
    _refused(tmp_path / "nested.pth", "not a plain state dict")
    # a file of another size into the released model's shape: the first key whose shape differs
    _refused(write("small.safetensors", sd), "first offending key", config=preset_config("official"))


def test_tokenizer_from_vars_file_or_from_the_checkpoint_gives_the_same_model(parity, layouts, tmp_path):
    """The official config loads VAR's vae_ch160v4096z32.pth, then the checkpoint (with vae_proxy.*) over it; a
    checkpoint without vae_proxy.* takes the tokenizer from VAR's file. A second name for the shared quantizer
    (vae_quant_proxy.*) is accepted when it is the same tensor."""
    sd = _filled(parity, layouts, "small")
    save_file(sd, str(tmp_path / "full.safetensors"))
    vae = {k.removeprefix("vae_proxy."): v for k, v in sd.items() if k.startswith("vae_proxy.")}
    torch.save(vae, tmp_path / "vae.pth")
    save_file({k: v for k, v in sd.items() if not k.startswith("vae_proxy.")}, str(tmp_path / "bare.safetensors"))
    cfg = parity.scalear_config("small")
    _refused(tmp_path / "bare.safetensors", "holds no tokenizer", config=cfg)
    a = load_depthart_checkpoint(tmp_path / "full.safetensors")
    b = load_depthart_checkpoint(tmp_path / "bare.safetensors", vae_path=tmp_path / "vae.pth", config=cfg)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    alias = {f"vae_quant_proxy.{k.removeprefix('vae_proxy.quantize.')}": v.clone()
             for k, v in sd.items() if k.startswith("vae_proxy.quantize.")}
    save_file({**sd, **alias}, str(tmp_path / "alias.safetensors"))
    load_depthart_checkpoint(tmp_path / "alias.safetensors")
    alias["vae_quant_proxy.embedding.weight"] += 1
    save_file({**sd, **alias}, str(tmp_path / "alias_bad.safetensors"))
    _refused(tmp_path / "alias_bad.safetensors", "vae_quant_proxy.embedding.weight differs")


def test_the_prefix_is_embedded_with_the_transformers_own_embeddings_and_exports(parity, layouts, tmp_path):
    """prefix_proj / prefix_pos hold the official word_embed / pos_1LC + lvl_embed (copies, not tied), so the loaded
    model exports as a scalear folder and comes back computing the same."""
    sd = _filled(parity, layouts, "small")
    save_file(sd, str(tmp_path / "model.safetensors"))
    model = load_depthart_checkpoint(tmp_path / "model.safetensors")
    tr = model.transformer
    assert torch.equal(tr.prefix_proj.weight, sd["word_embed.weight"]) and torch.equal(tr.prefix_proj.bias, sd["word_embed.bias"])
    assert tr.prefix_proj.weight.data_ptr() != tr.word_embed.weight.data_ptr()
    torch.testing.assert_close(tr.prefix_pos[0], sd["pos_1LC"][0] + sd["lvl_embed.weight"][sd["lvl_1L"][0]], rtol=0, atol=0)
    save_pretrained(model, tmp_path / "export")
    back = from_pretrained(tmp_path / "export").eval()
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert torch.equal(back.sample(image, temperature=0.0).f_hat, model.sample(image, temperature=0.0).f_hat)


# ------------------------------------------------------------------ the CLI runs the released files
def test_depth_predict_and_eval_take_the_released_files_folder(parity, layouts, tmp_path, capsys):
    from scalear.domains.depth.cli import main

    folder = tmp_path / "depthart"
    folder.mkdir()
    save_file(_filled(parity, layouts, "small"), str(folder / "model.safetensors"))
    Image.fromarray(np.load(FIXTURES / "small.npz")["image_u8"][0]).resize((48, 40)).save(tmp_path / "room.png")
    assert main(["predict", "--model", str(folder), "--input", str(tmp_path / "room.png"), "--out",
                 str(tmp_path / "out"), "--quiet"]) == 0
    depth = np.load(tmp_path / "out" / "room_depth.npy")
    assert depth.shape == (40, 48) and (depth > 0).all() and depth.max() <= 1.0  # relative: units of the 98th percentile
    assert "depth_is_relative" in json.loads((tmp_path / "out" / "room_depth.json").read_text())
    assert main(["eval", "--model", str(folder / "model.safetensors"), "--dataset", "procedural", "--size", "2",
                 "--image-size", "32,32", "--out", str(tmp_path / "m.json"), "--quiet"]) == 0
    doc = json.loads((tmp_path / "m.json").read_text())
    assert doc["median_scaling"] is True and doc["median_of_ratios"] is True and doc["frames"] == 2
    bad = tmp_path / "bad"
    bad.mkdir()
    sd = load_file(str(folder / "model.safetensors"))
    save_file({k: v for k, v in sd.items() if k != "head.bias"}, str(bad / "model.safetensors"))
    capsys.readouterr()
    assert main(["predict", "--model", str(bad), "--input", str(tmp_path / "room.png"), "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err
    assert str(bad / "model.safetensors") in err and "'head.bias' (missing" in err and len(err.strip().splitlines()) == 1


def test_parity_script_skips_cleanly_without_an_official_checkout(parity, capsys, tmp_path):
    assert parity.main([]) == {}
    assert "skipped" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="not a checkout of bulatko/DepthART"):
        parity.main(["--official-checkout", str(tmp_path), "--variants", "small"])
    with pytest.raises(SystemExit):
        parity.parse_args(["--variants", "huge"])
