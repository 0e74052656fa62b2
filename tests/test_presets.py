"""Presets are never mutated: building a model twice from the same preset (with different overrides, or with a
tokenizer that changes derived fields) leaves the shared preset as it was, and the second model is built from
the preset, not from what the first build left behind."""

from __future__ import annotations

import copy
from types import SimpleNamespace
from typing import Any, Callable

import pytest

from scalear.domains.depth.dar import DAR_PRESETS, create_dar
from scalear.domains.depth.depthart import DEPTHART_PRESETS, DepthARTModel, create_depthart
from scalear.domains.g3pt.generator import G3PT_GENERATOR_PRESETS
from scalear.domains.g3pt.generator import create_generator as g3pt_generator
from scalear.domains.g3pt.tokenizer import G3PT_TOKENIZER_PRESETS
from scalear.domains.g3pt.tokenizer import create_tokenizer as g3pt_tokenizer
from scalear.domains.restoration.varformer import VARFORMER_PRESETS, create_varformer
from scalear.domains.sar3d.generator import GENERATOR_PRESETS as SAR3D_GENERATOR_PRESETS
from scalear.domains.sar3d.generator import create_generator as sar3d_generator
from scalear.domains.sar3d.tokenizer import TRIPLANE_PRESETS
from scalear.domains.sar3d.tokenizer import create_tokenizer as sar3d_tokenizer
from scalear.transformer import TRANSFORMER_PRESETS, create_transformer
from scalear.vqvae import VQVAE_PRESETS, create_vqvae

pytestmark = pytest.mark.usefixtures("single_thread")

#: a VQ-VAE whose config differs from DepthART's ``tiny`` tokenizer (handed to DepthARTModel, which adopts it)
OTHER_VQ = dict(ch=16, ch_mult=(1, 2), using_sa=False, using_mid_sa=False, vocab_size=64, patch_nums=(1, 2, 4, 8),
                restart_every=0)


def built_twice(presets: dict, create: Callable[..., Any], first: dict, second: dict,
                tokenizer: Callable[[], Any] | None = None, derived: tuple[str, ...] = ()) -> tuple:
    """A case building the "tiny" preset with the overrides ``first`` (and a ``tokenizer()`` whose ``derived``
    fields the model adopts), then with ``second``: the second model has the preset's values of what ``first`` and
    ``derived`` name and the values ``second`` gives."""

    def build_first() -> Any:
        return create("tiny", tokenizer(), **first) if tokenizer else create("tiny", **first)

    def built_from_the_preset(model: Any) -> bool:
        cfg, tiny = getattr(model, "config", None) or model.cfg, presets["tiny"]
        preset = (lambda k: tiny[k]) if isinstance(tiny, dict) else (lambda k: getattr(tiny, k))
        return (all(getattr(cfg, k) == preset(k) for k in [*first, *derived])
                and all(getattr(cfg, k) == v for k, v in second.items()))

    return presets, build_first, lambda: create("tiny", **second), built_from_the_preset


#: (preset registry, first build, second build, what the second build must show); each build uses the "tiny" preset
CASES: dict[str, tuple[dict, Callable[[], Any], Callable[[], Any], Callable[[Any], bool]]] = {
    "vqvae": built_twice(VQVAE_PRESETS, create_vqvae, dict(vocab_size=64), dict(in_channels=1)),
    "transformer": built_twice(TRANSFORMER_PRESETS, create_transformer, dict(depth=2, vocab_size=64),
                               dict(num_heads=2)),
    "dar": built_twice(DAR_PRESETS, create_dar, dict(depth=1), dict(num_heads=2)),
    "depthart (own tokenizer)": (
        DEPTHART_PRESETS, lambda: DepthARTModel(DEPTHART_PRESETS["tiny"], tokenizer=create_vqvae("tiny", **OTHER_VQ)),
        lambda: create_depthart("tiny", transformer=dict(depth=2)),
        lambda m: m.tokenizer.config.vocab_size == 256 and m.cfg.tokenizer["vocab_size"] == 256
        and m.transformer.cfg.depth == 2),
    "varformer": built_twice(VARFORMER_PRESETS, create_varformer, dict(transformer=dict(depth=2), widths=(8, 16)),
                             dict(heads=4)),
    "sar3d tokenizer": built_twice(TRIPLANE_PRESETS, sar3d_tokenizer, dict(vocab_size=64), dict(feature_dim=4)),
    "sar3d generator": built_twice(SAR3D_GENERATOR_PRESETS, sar3d_generator, dict(transformer=dict(depth=2)),
                                   dict(num_classes=3), lambda: sar3d_tokenizer("tiny", vocab_size=64),
                                   derived=("vocab_size",)),
    "g3pt tokenizer": built_twice(G3PT_TOKENIZER_PRESETS, g3pt_tokenizer, dict(code_bits=6), dict(heads=2)),
    "g3pt generator": built_twice(G3PT_GENERATOR_PRESETS, g3pt_generator, dict(transformer=dict(depth=2)),
                                  dict(num_classes=3), lambda: g3pt_tokenizer("tiny", code_bits=6),
                                  derived=("vocab_size",)),
}


@pytest.mark.parametrize("case", CASES)
def test_building_twice_from_a_preset_leaves_it_unchanged(case):
    presets, first, second, expected = CASES[case]
    before = copy.deepcopy(presets)
    first()
    assert presets == before, f"building a {case} model changed its presets"
    model = second()
    assert presets == before and expected(model), f"the second {case} model is not built from the preset"


def test_naming_the_classes_copies_the_generator_config(tmp_path):
    """ConditionalGeneratorModule.setup names the classes after the data module's: a new config, never a write
    into the one the generator was built with (or into the domain's preset)."""
    from scalear.domains.sar3d.training import SAR3DGeneratorModule
    from scalear.io import save_pretrained

    tok = save_pretrained(sar3d_tokenizer("tiny", vocab_size=64), tmp_path / "tokenizer")
    preset = copy.deepcopy(SAR3D_GENERATOR_PRESETS)
    module = SAR3DGeneratorModule(str(tok), num_classes=2, generator=dict(transformer=dict(depth=1)))
    built = module.generator.cfg
    module._trainer = SimpleNamespace(datamodule=SimpleNamespace(classes=["mug", "lamp"]))
    module.setup("fit")
    assert module.generator.cfg.class_names == ("mug", "lamp") and built.class_names == ()
    assert SAR3D_GENERATOR_PRESETS == preset
