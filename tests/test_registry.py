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
