"""Load the released DepthART checkpoint (Gabdullin et al., arXiv 2409.15010; bulatko/DepthART ``model.safetensors``,
on VAR-d16 and VAR's tokenizer ``vae_ch160v4096z32.pth``) into :class:`~scalear.domains.depth.depthart.DepthARTModel`.

The file is the official ``DepthART`` module's own state dict, no prefix. Every key is accounted for (the load is
strict); :data:`DEPTHART_KEY_TABLE` maps them (first matching row wins):

==========================================  ======================================  ==========================================
official key                                scalear key                             how
==========================================  ======================================  ==========================================
``vae_proxy.*``                             ``tokenizer.*``                         VAR's tokenizer keys
                                                                                    (:data:`~scalear.var_checkpoints.VAR_VAE_KEY_RULES`)
``vae_quant_proxy.*``                       ``tokenizer.quantize.*``                the same tensors under a second name;
                                                                                    must equal ``vae_proxy.quantize.*``
``lvl_1L``                                  (dropped)                               checked against the schedule
``normalizer.alpha``, ``normalizer.beta``   (dropped)                               checked: 2 and -1 (depth -> ``2 d / q98 - 1``)
everything else (``word_embed``,            ``transformer.*``                       VAR's transformer keys
``class_emb``, ``pos_start``, ``pos_1LC``,                                          (:data:`~scalear.var_checkpoints.VAR_TRANSFORMER_KEY_TABLE`)
``lvl_embed``, ``blocks.{i}.*``,
``head_nm.*``, ``head.*``)
==========================================  ======================================  ==========================================

scalear's prefix embedding, which the official model does not have as parameters, is derived
(:data:`DERIVED_KEYS`): ``transformer.prefix_proj`` = ``word_embed`` and ``transformer.prefix_pos`` =
``pos_1LC + lvl_embed(lvl_1L)``, so the prefix is embedded exactly as ``DepthVAR.prepare_to_var`` does. A file
without ``vae_proxy.*`` takes its tokenizer from ``vae_ch160v4096z32.pth`` (VAR's own file, :func:`load_var_vqvae`);
a file with them uses its own, as the official loader does (it loads VAR's file first, then the checkpoint over it).

The architecture is read off the file (:func:`depthart_config_from_state_dict`): the ``official`` preset with the
transformer's depth and width and the tokenizer's widths, vocabulary and scales that the tensors show (heads:
``width / 64``, the head width of every VAR model and of the released one, whose attention scale is
``1 / (sqrt(64) * 4)``). A mismatching file is refused (:class:`~scalear.var_checkpoints.CheckpointMismatchError`)
in one line naming the file and its first offending key in sorted order (missing, unexpected, or of another
shape), with the counts.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from scalear.domains.depth.depthart import DepthARTConfig, DepthARTModel, preset_config
from scalear.var_checkpoints import (VAR_VAE_KEY_RULES, CheckpointMismatchError, _load_tensors, load_var_vqvae,
                                     map_var_transformer_state_dict, map_var_vae_state_dict,
                                     var_transformer_config_overrides)

__all__ = ["DEPTHART_KEY_TABLE", "DERIVED_KEYS", "RELEASED_FILES", "HEAD_DIM", "depthart_config_from_state_dict",
           "map_depthart_state_dict", "check_depthart_state_dict", "load_depthart_checkpoint", "find_released_files"]

#: (official key regex, where it goes, how), first match wins; group 1 is the name within that part.
DEPTHART_KEY_TABLE: tuple[tuple[str, str, str], ...] = (
    (r"vae_proxy\.(.+)", "tokenizer", "VAR's tokenizer keys (VAR_VAE_KEY_RULES) under tokenizer."),
    (r"vae_quant_proxy\.(.+)", "tokenizer alias", "the tensors of vae_proxy.quantize.* again; must be equal"),
    (r"(lvl_1L|normalizer\.alpha|normalizer\.beta)", "checked", "checked (schedule; 2 and -1), then dropped"),
    (r"(.+)", "transformer", "VAR's transformer keys (VAR_TRANSFORMER_KEY_TABLE) under transformer."),
)
#: scalear keys computed from the official ones.
DERIVED_KEYS: dict[str, str] = {
    "transformer.prefix_proj.weight": "word_embed.weight",
    "transformer.prefix_proj.bias": "word_embed.bias",
    "transformer.prefix_pos": "pos_1LC + lvl_embed.weight[lvl_1L]",
}
#: the released files: DepthART's checkpoint and VAR's tokenizer (optional when the checkpoint holds it).
RELEASED_FILES = ("model.safetensors", "vae_ch160v4096z32.pth")
_NORMALIZER = {"normalizer.alpha": 2.0, "normalizer.beta": -1.0}
#: head width of VAR's models and of the released DepthART (16 heads of 64 at width 1024): heads = width / 64
HEAD_DIM = 64


def depthart_config_from_state_dict(sd: dict[str, torch.Tensor], source: str = "state dict") -> DepthARTConfig:
    """The ``official`` preset with the sizes an official-layout state dict shows: transformer depth, width
    (heads = width / :data:`HEAD_DIM`) and classes; the tokenizer's ``ch``, ``ch_mult``, ``num_res_blocks``,
    ``z_channels``, vocabulary, phi count and attention blocks (from ``vae_proxy.*``, else VAR's tokenizer) and
    the scales (from ``lvl_1L``: tokens per scale must be squares)."""
    rest = {k: v for k, v in sd.items() if not k.startswith(("vae_proxy.", "vae_quant_proxy.", "normalizer."))}
    arch = var_transformer_config_overrides(rest, source)  # raises for files that are no VAR-like transformer
    tr = dict(depth=arch["depth"], width=arch["width"], num_heads=max(arch["width"] // HEAD_DIM, 1),
              num_classes=arch["num_classes"], drop_path_rate=0.1 * arch["depth"] / 24)
    if arch["shared_adaln"]:
        tr["shared_adaln"] = True
    tok: dict = {}
    if "lvl_1L" in sd:
        counts = torch.bincount(sd["lvl_1L"].reshape(-1).long()).tolist()
        sides = [round(c**0.5) for c in counts]
        if any(s * s != c for s, c in zip(sides, counts)):
            raise CheckpointMismatchError(f"{source}: lvl_1L has {counts} tokens per scale; DepthART's scales are squares")
        tok["patch_nums"] = tuple(sides)
    enc = "vae_proxy.encoder."
    if f"{enc}conv_in.weight" in sd:
        ch = sd[f"{enc}conv_in.weight"].shape[0]
        levels = sorted({int(m.group(1)) for k in sd if (m := re.match(rf"{re.escape(enc)}down\.(\d+)\.", k))})
        blocks = {int(m.group(1)) for k in sd if (m := re.match(rf"{re.escape(enc)}down\.0\.block\.(\d+)\.", k))}
        mults = [sd.get(f"{enc}down.{i}.block.0.conv1.weight") for i in levels]
        if not levels or any(w is None for w in mults) or "vae_proxy.quant_conv.weight" not in sd:
            raise CheckpointMismatchError(f"{source}: vae_proxy.* is not VAR's tokenizer (no encoder.down.{{i}}.block.0 "
                                          "or quant_conv)")
        phis = {int(m.group(1)) for k in sd if (m := re.match(r"vae_proxy\.quantize\.quant_resi\.qresi_ls\.(\d+)\.", k))}
        tok |= dict(ch=ch, ch_mult=tuple(w.shape[0] // ch for w in mults), num_res_blocks=len(blocks),
                    z_channels=sd["vae_proxy.quant_conv.weight"].shape[0],
                    quant_conv_ks=sd["vae_proxy.quant_conv.weight"].shape[-1],
                    vocab_size=sd["vae_proxy.quantize.embedding.weight"].shape[0] if "vae_proxy.quantize.embedding.weight" in sd else 4096,
                    phi_share=len(phis) or 4,
                    using_sa=f"{enc}down.{levels[-1]}.attn.0.qkv.weight" in sd,
                    using_mid_sa=f"{enc}mid.attn_1.qkv.weight" in sd)
    base = preset_config("official")
    return preset_config("official", tokenizer={**base.tokenizer, **tok}, transformer=tr)


def _official_name(scalear_key: str) -> str:
    """The official key a scalear key is loaded from (for error messages)."""
    if scalear_key in DERIVED_KEYS:
        return DERIVED_KEYS[scalear_key].split(" ")[0]
    if scalear_key.startswith("tokenizer."):
        return "vae_proxy." + re.sub(r"(quant_resi\.qresi_ls\.\d+)\.conv\.", r"\1.", scalear_key[len("tokenizer."):])
    return scalear_key.removeprefix("transformer.")


def map_depthart_state_dict(sd: dict[str, torch.Tensor], model: DepthARTModel, source: str = "state dict"
                            ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The official state dict ``sd`` as scalear keys (:data:`DEPTHART_KEY_TABLE`, :data:`DERIVED_KEYS`).

    Returns ``(mapped, origin)``, ``origin`` giving the official key of every mapped key. Checks ``lvl_1L`` and
    the normaliser's constants (:class:`CheckpointMismatchError` naming ``source`` and the key).
    """
    if "attn_bias_for_masking" in sd:
        raise CheckpointMismatchError(
            f"{source}: holds attn_bias_for_masking, which DepthART deletes: a VAR or DepthVAR checkpoint, not the "
            "released DepthART model.safetensors")
    for key, want in _NORMALIZER.items():
        if key in sd and (sd[key].numel() != 1 or float(sd[key]) != want):
            raise CheckpointMismatchError(f"{source}: {key} is {sd[key].flatten()[:4].tolist()}, the released "
                                          f"model's depth encoding 2 d / q98 - 1 needs {want:g}")
    parts: dict[str, dict[str, torch.Tensor]] = {part: {} for _, part, _ in DEPTHART_KEY_TABLE}
    for key, t in sd.items():
        for pattern, part, _ in DEPTHART_KEY_TABLE:
            if m := re.fullmatch(pattern, key):
                parts[part][m.group(1)] = t
                break
    vae, rest = parts["tokenizer"], parts["transformer"]
    for key, t in parts["tokenizer alias"].items():
        same = vae.setdefault(f"quantize.{key}", t)
        if not (same.shape == t.shape and torch.equal(same, t)):
            raise CheckpointMismatchError(f"{source}: vae_quant_proxy.{key} differs from vae_proxy.quantize.{key}, "
                                          "which the official model shares")
    mapped, origin = {}, {}
    if vae:
        tok = map_var_vae_state_dict(vae)
        renamed = {}
        for key in vae:  # VAR's renaming, to name the official key of each mapped one
            new = key
            for pattern, repl in VAR_VAE_KEY_RULES:
                new, n = re.subn(pattern, repl, key)
                if n:
                    break
            renamed[new] = key
        for key, t in tok.items():
            mapped[f"tokenizer.{key}"] = t
            origin[f"tokenizer.{key}"] = f"vae_proxy.{renamed.get(key, key)}"
    schedule = model.transformer.cfg.schedule
    lvl = parts["checked"].get("lvl_1L")
    if lvl is not None and not (lvl.shape == (1, schedule.total_tokens)
                                and torch.equal(lvl.reshape(-1).long(), schedule.level_ids())):
        counts = torch.bincount(lvl.reshape(-1).long()).tolist() if lvl.numel() and lvl.min() >= 0 else "?"
        raise CheckpointMismatchError(
            f"{source}: first offending key 'lvl_1L' ({counts} tokens per scale; the model's schedule has "
            f"{list(schedule.tokens_per_scale)})")
    for key, t in map_var_transformer_state_dict(rest, source=source).items():
        mapped[f"transformer.{key}"] = t
        origin[f"transformer.{key}"] = key
    if "word_embed.weight" in rest and "word_embed.bias" in rest:
        mapped["transformer.prefix_proj.weight"] = rest["word_embed.weight"].clone()  # a copy: untied, as in
        mapped["transformer.prefix_proj.bias"] = rest["word_embed.bias"].clone()  # a scalear model (and exportable)
    if "pos_1LC" in rest and "lvl_embed.weight" in rest:
        lvl, pos = rest["lvl_embed.weight"], rest["pos_1LC"]
        if lvl.ndim == 2 and lvl.shape[0] == schedule.num_scales and pos.shape[-1:] == lvl.shape[-1:]:
            mapped["transformer.prefix_pos"] = pos + lvl[schedule.level_ids()].unsqueeze(0)
    for key in DERIVED_KEYS:
        if key in mapped:
            origin[key] = DERIVED_KEYS[key].split(" ")[0]
    return mapped, origin


def check_depthart_state_dict(own: dict[str, torch.Tensor], mapped: dict[str, torch.Tensor], origin: dict[str, str],
                              source: str) -> None:
    """Raise :class:`CheckpointMismatchError` unless ``mapped`` has exactly ``own``'s keys and shapes: one line
    naming ``source``, the first offending official key (sorted) and the counts."""
    problems: dict[str, str] = {}  # official key -> what is wrong (derived keys share their source's entry)
    for key in own.keys() - mapped.keys():
        problems.setdefault(_official_name(key), f"missing, expected shape {tuple(own[key].shape)}")
    for key in mapped.keys() - own.keys():
        problems.setdefault(origin.get(key, key), "unexpected: the official DepthART has no such key")
    for key in own.keys() & mapped.keys():
        if tuple(own[key].shape) != tuple(mapped[key].shape):
            problems.setdefault(origin.get(key, key),
                                f"shape {tuple(mapped[key].shape)}, the model needs {tuple(own[key].shape)}")
    if problems:
        n = {w: sum(p.startswith(w) for p in problems.values()) for w in ("missing", "unexpected", "shape")}
        key = min(problems)
        why = problems[key]
        raise CheckpointMismatchError(
            f"{source}: not the released DepthART checkpoint for this model: first offending key {key!r} ({why}); "
            f"{n['missing']} missing, {n['unexpected']} unexpected, {n['shape']} of another shape")


def load_depthart_checkpoint(path: str | Path, vae_path: str | Path | None = None,
                             config: DepthARTConfig | None = None) -> DepthARTModel:
    """The released DepthART (``model.safetensors``) as a scalear model, in eval mode, loaded strictly.

    Args:
        path: the official checkpoint (safetensors, or a torch file of a plain state dict).
        vae_path: VAR's ``vae_ch160v4096z32.pth``, used only when ``path`` holds no tokenizer (``vae_proxy.*``).
        config: the model to load into (default: read off the file, :func:`depthart_config_from_state_dict`;
            the released file gives the ``official`` preset, VAR-d16 on VAR's tokenizer).

    Raises:
        CheckpointMismatchError: naming the file and its first offending key.
        FileNotFoundError: a missing file.
    """
    source = str(path)
    sd = _load_tensors(path)
    cfg = config or depthart_config_from_state_dict(sd, source)
    with torch.device("meta"):  # no random init: every tensor comes from the files
        model = DepthARTModel(cfg)
    mapped, origin = map_depthart_state_dict(sd, model, source)
    own = model.state_dict()
    if not any(k.startswith("tokenizer.") for k in mapped):
        if vae_path is None:
            raise CheckpointMismatchError(f"{source}: holds no tokenizer (vae_proxy.*): give VAR's "
                                          f"{RELEASED_FILES[1]} too (the official config loads it from there)")
        tok = load_var_vqvae(vae_path, **cfg.tokenizer).state_dict()
        mapped |= {f"tokenizer.{k}": v for k, v in tok.items()}
        origin |= {f"tokenizer.{k}": f"{vae_path}: {k}" for k in tok}
    check_depthart_state_dict(own, mapped, origin, source)
    mapped = {k: v.float() if v.is_floating_point() else v for k, v in mapped.items()}
    model.load_state_dict(mapped, strict=True, assign=True)
    model.transformer.lvl_1L = model.schedule.level_ids().view(1, -1)  # the one non-persistent buffer
    still_meta = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if still_meta:
        raise RuntimeError(f"tensors not filled from {source!r}: {still_meta[:5]}")
    model.tokenizer.requires_grad_(False)
    return model.eval()


def find_released_files(folder: str | Path) -> tuple[Path, Path | None] | None:
    """``(model.safetensors, vae_ch160v4096z32.pth or None)`` of a folder holding the released DepthART (a
    ``model.safetensors`` without scalear's ``config.json``), else ``None``."""
    folder = Path(folder)
    ckpt, vae = folder / RELEASED_FILES[0], folder / RELEASED_FILES[1]
    if not ckpt.is_file() or (folder / "config.json").exists():
        return None
    return ckpt, vae if vae.is_file() else None
