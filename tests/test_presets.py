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

#: (preset registry, first build, second build, what the second build must show); each build uses the "tiny" preset
CASES: dict[str, tuple[dict, Callable[[], Any], Callable[[], Any], Callable[[Any], bool]]] = {
    "vqvae": (VQVAE_PRESETS, lambda: create_vqvae("tiny", vocab_size=64), lambda: create_vqvae("tiny", in_channels=1),
              lambda m: m.config.vocab_size == VQVAE_PRESETS["tiny"]["vocab_size"] and m.config.in_channels == 1),
    "transformer": (TRANSFORMER_PRESETS, lambda: create_transformer("tiny", depth=2, vocab_size=64),
                    lambda: create_transformer("tiny", num_heads=2),
                    lambda m: m.cfg.depth == 4 and m.cfg.num_heads == 2 and m.cfg.vocab_size == 4096),
    "dar": (DAR_PRESETS, lambda: create_dar("tiny", depth=1), lambda: create_dar("tiny", num_heads=2),
            lambda m: m.cfg.depth == DAR_PRESETS["tiny"].depth and m.cfg.num_heads == 2),
    "depthart (own tokenizer)": (
        DEPTHART_PRESETS, lambda: DepthARTModel(DEPTHART_PRESETS["tiny"], tokenizer=create_vqvae("tiny", **OTHER_VQ)),
        lambda: create_depthart("tiny", transformer=dict(depth=2)),
        lambda m: m.tokenizer.config.vocab_size == 256 and m.cfg.tokenizer["vocab_size"] == 256
        and m.transformer.cfg.depth == 2),
    "varformer": (VARFORMER_PRESETS, lambda: create_varformer("tiny", transformer=dict(depth=2), widths=(8, 16)),
                  lambda: create_varformer("tiny", heads=4),
                  lambda m: m.cfg.transformer["depth"] == 4 and m.cfg.widths == (16, 32, 64) and m.cfg.heads == 4),
    "sar3d tokenizer": (TRIPLANE_PRESETS, lambda: sar3d_tokenizer("tiny", vocab_size=64),
                        lambda: sar3d_tokenizer("tiny", feature_dim=4),
                        lambda m: m.config.vocab_size == TRIPLANE_PRESETS["tiny"].vocab_size and m.config.feature_dim == 4),
    "sar3d generator": (SAR3D_GENERATOR_PRESETS,
                        lambda: sar3d_generator("tiny", sar3d_tokenizer("tiny", vocab_size=64), transformer=dict(depth=2)),
                        lambda: sar3d_generator("tiny", num_classes=3),
                        lambda m: m.cfg.vocab_size == 512 and m.cfg.transformer["depth"] == 4 and m.cfg.num_classes == 3),
    "g3pt tokenizer": (G3PT_TOKENIZER_PRESETS, lambda: g3pt_tokenizer("tiny", code_bits=6),
                       lambda: g3pt_tokenizer("tiny", heads=2),
                       lambda m: m.config.code_bits == G3PT_TOKENIZER_PRESETS["tiny"].code_bits and m.config.heads == 2),
    "g3pt generator": (G3PT_GENERATOR_PRESETS,
                       lambda: g3pt_generator("tiny", g3pt_tokenizer("tiny", code_bits=6), transformer=dict(depth=2)),
                       lambda: g3pt_generator("tiny", num_classes=3),
                       lambda m: m.cfg.vocab_size == G3PT_GENERATOR_PRESETS["tiny"].vocab_size
                       and m.cfg.transformer["depth"] == 4 and m.cfg.num_classes == 3),
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
