"""scalear.list_models / create_model: one entry point over the presets of the core and of every domain."""

import pytest
import torch

import scalear
from scalear.io import from_pretrained, save_pretrained

KINDS = {"vqvae", "transformer", "dar", "depthart", "varformer", "sar3d_tokenizer", "sar3d_generator",
         "g3pt_tokenizer", "g3pt_generator"}


def test_every_kind_and_preset_is_listed():
    from scalear.domains.depth.dar import DAR_PRESETS
    from scalear.domains.g3pt.generator import G3PT_GENERATOR_PRESETS
    from scalear.transformer import TRANSFORMER_PRESETS

    names = scalear.list_models()
    assert {n.split("/")[0] for n in names} == KINDS
    assert {f"dar/{p}" for p in DAR_PRESETS} <= set(names)
    assert {f"transformer/{p}" for p in TRANSFORMER_PRESETS} <= set(names)
    assert {f"g3pt_generator/{p}" for p in G3PT_GENERATOR_PRESETS} <= set(names)
    assert scalear.list_models("*/tiny") == sorted(f"{k}/tiny" for k in KINDS)


@pytest.mark.parametrize("name", sorted(f"{k}/tiny" for k in KINDS))
def test_every_tiny_model_builds_and_round_trips(name, tmp_path):
    """create_model builds each kind's tiny preset; the model exports and loads back with equal weights."""
    torch.manual_seed(0)
    model = scalear.create_model(name)
    assert isinstance(model, torch.nn.Module) and sum(p.numel() for p in model.parameters()) > 0
    save_pretrained(model, tmp_path / "m")
    back = from_pretrained(tmp_path / "m")
    assert type(back) is type(model)
    for (k, a), (_, b) in zip(model.state_dict().items(), back.state_dict().items()):
        assert torch.equal(a, b), k


def test_overrides_and_unknown_names():
    assert scalear.create_model("transformer/tiny", depth=2).cfg.depth == 2
    with pytest.raises(KeyError, match="names are <kind>/<preset>"):
        scalear.create_model("tiny")
    with pytest.raises(KeyError, match="unknown dar preset 'huge'"):
        scalear.create_model("dar/huge")


@pytest.mark.parametrize("name", ["vqvae/tiny", "vqvae/tiny-3d", "sar3d_tokenizer/tiny", "g3pt_tokenizer/tiny"])
def test_every_tokenizer_holds_its_quantizer_under_one_name(name):
    """The sampler's contract: a tokenizer's ``quantize`` is a :class:`~scalear.quant.MultiScaleQuantizer` whose
    schedule is the tokenizer's, and sampling through it gives tokens of that schedule."""
    from scalear.quant import MultiScaleQuantizer
    from scalear.sampling import sample

    tok = scalear.create_model(name).eval()
    q = tok.quantize
    assert isinstance(q, MultiScaleQuantizer) and not hasattr(tok, "quantizer")
    model = scalear.create_model("transformer/tiny", vocab_size=q.vocab_size, latent_dim=q.dim, schedule=q.schedule,
                                 num_classes=2).eval()
    out = sample(model, q, 2, label_B=torch.tensor([0, 1]), generator=torch.Generator().manual_seed(0))
    assert [i.shape[1] for i in out.indices] == list(q.schedule.tokens_per_scale)


def test_old_g3pt_exports_load_under_the_new_attribute_name(tmp_path):
    """G3PT tokenizers exported when the attribute was ``quantizer`` still load, with equal weights."""
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    tok = scalear.create_model("g3pt_tokenizer/tiny")
    save_pretrained(tok, tmp_path / "t")
    weights = tmp_path / "t" / "model.safetensors"
    state = load_file(weights)
    save_file({k.replace("quantize.", "quantizer.", 1) if k.startswith("quantize.") else k: v for k, v in state.items()},
              weights)
    assert any(k.startswith("quantizer.") for k in load_file(weights))
    back = from_pretrained(tmp_path / "t")
    for k, v in tok.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k


def test_stage2_modules_share_the_teacher_forced_recipe():
    """VAR's stage-2 module and the 3D generators' are siblings under one recipe: each calls its parent's
    ``__init__`` and has its own ``generate``, neither overriding the other's."""
    import inspect

    from scalear.gen3d.training import ConditionalGeneratorModule
    from scalear.training.nextscale import NextScaleModule, TeacherForcedModule

    for cls in (NextScaleModule, ConditionalGeneratorModule):
        assert cls.__bases__ == (TeacherForcedModule,)
        assert "super().__init__(" in inspect.getsource(cls.__init__)
    assert not issubclass(ConditionalGeneratorModule, NextScaleModule)
    assert "forward_logits" not in vars(ConditionalGeneratorModule) and "training_step" not in vars(NextScaleModule)


@pytest.mark.parametrize("name,old", [("sar3d_tokenizer/tiny", "sides"), ("sar3d_generator/tiny", "sides"),
                                      ("g3pt_tokenizer/tiny", "sizes"), ("g3pt_generator/tiny", "sizes")])
def test_the_scale_schedule_has_one_name_and_old_files_still_load(name, old, tmp_path):
    """Every config names its per-scale sides ``patch_nums`` (VAR's name) and a generator its guidance scale
    ``guidance``; a ``config.json`` written with the former names loads to the same model."""
    import json

    model = scalear.create_model(name)
    save_pretrained(model, tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert "patch_nums" in meta["config"] and old not in meta["config"]
    meta["config"][old] = meta["config"].pop("patch_nums")
    if "guidance" in meta["config"]:  # generators: VAR's name of the guidance scale, before it was 'guidance'
        meta["config"]["cfg"] = meta["config"].pop("guidance")
    (tmp_path / "m" / "config.json").write_text(json.dumps(meta))
    back = from_pretrained(tmp_path / "m")
    cfg = lambda m: (getattr(m, "config", None) or m.cfg).to_dict()  # noqa: E731
    assert cfg(back) == cfg(model)


def test_vqvae_configs_with_var_phi_names_still_load(tmp_path):
    """VQVAEConfig names phi like the quantizer (``phi_ratio`` / ``phi_share``); a ``config.json`` with VAR's names
    (``quant_resi`` / ``share_quant_resi``), as older exports hold them, loads to the same model."""
    import json

    model = scalear.create_model("vqvae/tiny", phi_share=2)
    save_pretrained(model, tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    meta["config"]["quant_resi"], meta["config"]["share_quant_resi"] = (meta["config"].pop("phi_ratio"),
                                                                          meta["config"].pop("phi_share"))
    (tmp_path / "m" / "config.json").write_text(json.dumps(meta))
    back = from_pretrained(tmp_path / "m")
    assert back.config == model.config and back.config.phi_share == 2


def test_every_preset_config_round_trips_through_json():
    """Every model config is a JSONConfig: ``to_dict`` survives JSON and ``from_dict`` gives the same config back;
    an unknown key is refused naming the config; old key names load (``renamed``)."""
    import json

    from scalear.config_check import JSONConfig
    from scalear.domains.depth.dar import DAR_PRESETS, DARConfig
    from scalear.domains.depth.depthart import DEPTHART_PRESETS
    from scalear.domains.g3pt.generator import G3PT_GENERATOR_PRESETS
    from scalear.domains.g3pt.tokenizer import G3PT_TOKENIZER_PRESETS
    from scalear.domains.restoration.varformer import VARFORMER_PRESETS
    from scalear.domains.sar3d.generator import GENERATOR_PRESETS
    from scalear.domains.sar3d.tokenizer import TRIPLANE_PRESETS
    from scalear.errors import UsageError
    from scalear.transformer import TRANSFORMER_PRESETS
    from scalear.vqvae import VQVAE_PRESETS, VQVAEConfig

    configs = [VQVAEConfig.from_dict(d) for d in VQVAE_PRESETS.values()]
    for presets in (TRANSFORMER_PRESETS, DAR_PRESETS, DEPTHART_PRESETS, VARFORMER_PRESETS, TRIPLANE_PRESETS,
                    GENERATOR_PRESETS, G3PT_TOKENIZER_PRESETS, G3PT_GENERATOR_PRESETS):
        configs += presets.values()
    assert len({type(c) for c in configs}) == 9 and all(isinstance(c, JSONConfig) for c in configs)
    for cfg in configs:
        d = cfg.to_dict()
        assert type(cfg).from_dict(json.loads(json.dumps(d))) == cfg, type(cfg).__name__
        d["not_a_field"] = 1
        with pytest.raises(UsageError, match=f"unknown {type(cfg).config_name()} keys \\['not_a_field'\\]"):
            type(cfg).from_dict(d)
    with pytest.raises(UsageError, match="unknown DAR config keys"):
        DARConfig.from_dict({"dept": 2})
    sar3d = GENERATOR_PRESETS["tiny"]
    assert type(sar3d).config_name() == "SAR3D generator"
    old = {("sides" if k == "patch_nums" else k): v for k, v in sar3d.to_dict().items()}
    assert type(sar3d).from_dict(old) == sar3d
    assert sar3d.replace(top_k=3).top_k == 3 and sar3d.top_k != 3
