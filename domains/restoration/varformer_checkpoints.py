"""Load the released Varformer files into :class:`~.varformer_official.OfficialVarformer`, strictly.

The authors publish (README of siywang541/Varformer) ``net_g_last.pth`` ("VarFormer_16"), which their test config
(``basicsr/options/test.yml``) loads next to VAR's ``vae_ch160v4096z32.pth`` and ``var_d16.pth``, all three from
``experiments/pretrained_models/``. The official order, kept here: the model is built, VAR's tokenizer and
transformer files are loaded into it (``strict=False``), then ``net_g``'s ``params_ema`` (BasicSR saves
``{'params', 'params_ema'}``; the test reads ``params_ema``) overrides them. The official code loads each with
``strict=False``; scalear checks the union strictly against the official ``VarFormer2`` layout
(:func:`official_layout`): a key the layout lacks, a key no file provides, or a shape that differs is refused with a
one-line error naming the file and the first such key (the released file was never available to this project, so
this is how a difference in, e.g., the never-published ``RACMoudle4`` would show up).

Keys are the official ones in every file; :func:`official_to_scalear` maps them: VAR's tokenizer keys
(``encoder.*``, ``decoder.*``, ``quantize.*``, ``quant_conv.*``, ``post_quant_conv.*``) go to ``tokenizer.*``
through :func:`scalear.var_checkpoints.map_var_vae_state_dict`, VAR's transformer keys (``word_embed``,
``class_emb``, ``pos_start``, ``pos_1LC``, ``lvl_embed``, ``blocks.*``, ``head_nm.*``, ``head.*`` and the
checked-and-dropped buffers ``lvl_1L``, ``attn_bias_for_masking``) to ``transformer.*`` through
:func:`scalear.var_checkpoints.map_var_transformer_state_dict`; every other key (``ft_layers``,
``cross_attn_blocks``, ``Mainencoder``, ``main_decoder``) is kept.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from scalear.domains.restoration.varformer_official import OfficialVarformer
from scalear.var_checkpoints import (
    SCALEAR_ONLY_VAE_BUFFERS,
    VAR_TRANSFORMER_DROPPED_BUFFERS,
    CheckpointMismatchError,
    _load_tensors,
    map_var_transformer_state_dict,
    map_var_vae_state_dict,
)

NET_G, VAE_FILE, VAR_FILE = "net_g_last.pth", "vae_ch160v4096z32.pth", "var_d16.pth"
VAE_PREFIXES = ("encoder.", "decoder.", "quantize.", "quant_conv.", "post_quant_conv.")
VAR_NAMES = ("word_embed", "class_emb", "pos_start", "pos_1LC", "lvl_embed", "shared_ada_lin", "blocks", "head_nm",
             "head", *VAR_TRANSFORMER_DROPPED_BUFFERS)
REPORT = "please report it at github.com/siywang541/Varformer or to scalear with this message"


def _part(key: str) -> str:
    if key.startswith(VAE_PREFIXES):
        return "tokenizer"
    return "transformer" if key.split(".", 1)[0] in VAR_NAMES else "own"


def official_to_scalear(sd: dict[str, torch.Tensor], source: str = "state dict") -> dict[str, torch.Tensor]:
    """Official ``VarFormer2`` keys -> :class:`OfficialVarformer` keys (module docstring); tensors are shared."""
    parts: dict[str, dict[str, torch.Tensor]] = {"tokenizer": {}, "transformer": {}, "own": {}}
    for k, v in sd.items():
        parts[_part(k)][k] = v
    out = {f"tokenizer.{k}": v for k, v in map_var_vae_state_dict(parts["tokenizer"]).items()}
    tr = map_var_transformer_state_dict(parts["transformer"], OfficialVarformer.schedule(), source=source)
    return out | {f"transformer.{k}": v for k, v in tr.items()} | parts["own"]


def official_layout(model: OfficialVarformer) -> dict[str, tuple[int, ...]]:
    """The official ``VarFormer2`` state dict's key -> shape, derived from ``model`` (which may be on ``meta``)."""
    L = model.transformer.L
    out: dict[str, tuple[int, ...]] = {}
    for k, v in model.state_dict().items():
        if k.startswith("tokenizer."):
            k = k.removeprefix("tokenizer.")
            if k in SCALEAR_ONLY_VAE_BUFFERS:
                continue
            k = re.sub(r"^quantize\.quant_resi\.qresi_ls\.(\d+)\.conv\.", r"quantize.quant_resi.qresi_ls.\1.", k)
        out[k.removeprefix("transformer.")] = tuple(v.shape)
    return out | {"lvl_1L": (1, L), "attn_bias_for_masking": (1, 1, L, L)}


def _check(sd: dict[str, torch.Tensor], layout: dict[str, tuple[int, ...]], source: str) -> None:
    """Refuse keys the official layout lacks and shapes that differ (the first of each, one line)."""
    unexpected = [k for k in sd if k not in layout]
    if unexpected:
        more = f" (first of {len(unexpected)})" if len(unexpected) > 1 else ""
        raise CheckpointMismatchError(f"{source}: unexpected key {unexpected[0]!r}{more}: not in the official "
                                      f"Varformer (VarFormer2, test.yml) layout; {REPORT}")
    bad = [k for k in sd if tuple(sd[k].shape) != layout[k]]
    if bad:
        k = bad[0]
        raise CheckpointMismatchError(f"{source}: key {k!r} has shape {tuple(sd[k].shape)}, the official Varformer "
                                      f"layout has {layout[k]} ({len(bad)} shape mismatch(es)); {REPORT}")


def build_official_varformer(sources: list[tuple[str, dict[str, torch.Tensor]]]) -> OfficialVarformer:
    """An :class:`OfficialVarformer` from official-layout state dicts ``[(name, state dict), ...]``, loaded in order
    (later ones override), checked strictly (module docstring). No random initialisation runs (built on ``meta``)."""
    with torch.device("meta"):
        model = OfficialVarformer()
    layout = official_layout(model)
    merged: dict[str, torch.Tensor] = {}
    for name, sd in sources:
        _check(sd, layout, name)
        merged |= sd
    missing = [k for k in layout if k not in merged]
    if missing:
        names = " + ".join(n for n, _ in sources)
        part = _part(missing[0])
        file = VAE_FILE if part == "tokenizer" else VAR_FILE
        hint = "" if part == "own" else f" (VAR's {part} keys come from {file})"
        raise CheckpointMismatchError(f"{names}: missing key {missing[0]!r} (first of {len(missing)}) of the official "
                                      f"Varformer (VarFormer2, test.yml) layout{hint}; {REPORT}")
    sd = {k: v.float() if v.is_floating_point() else v for k, v in official_to_scalear(merged, sources[-1][0]).items()}
    model.load_state_dict(sd, strict=True, assign=True)
    model.transformer.lvl_1L = model.transformer.cfg.schedule.level_ids().view(1, -1)  # non-persistent
    still_meta = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if still_meta:
        raise RuntimeError(f"tensors not filled from {sources[-1][0]}: {still_meta[:5]}")
    return model.eval().requires_grad_(False)


def read_net_g(path: str | Path) -> dict[str, torch.Tensor]:
    """``params_ema`` of a BasicSR checkpoint (as the official test reads it); a plain state dict is taken as is."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Varformer checkpoint {str(path)!r} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # truncated files, pickles of other objects, non-zip torch files
        raise CheckpointMismatchError(f"{path}: not a readable torch checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(ckpt, dict):
        raise CheckpointMismatchError(f"{path}: expected BasicSR's {{'params', 'params_ema'}}, "
                                      f"not a {type(ckpt).__name__}")
    if "params_ema" in ckpt:
        ckpt = ckpt["params_ema"]
    elif "params" in ckpt and not isinstance(ckpt["params"], torch.Tensor):
        raise CheckpointMismatchError(f"{path}: has 'params' but no 'params_ema', which the official test reads")
    if not isinstance(ckpt, dict) or not all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        raise CheckpointMismatchError(f"{path}: 'params_ema' is not a state dict of tensors")
    return ckpt


def find_official_files(spec: str | Path, vae: str | Path | None = None, var: str | Path | None = None
                        ) -> tuple[Path, Path | None, Path | None]:
    """``(net_g, vae, var)`` for ``spec``: a ``net_g`` ``.pth`` file or a folder holding one (``net_g_last.pth``, or the
    only ``net_g*.pth``); VAR's files default to ``vae_ch160v4096z32.pth`` / ``var_d16.pth`` beside it, if present."""
    spec = Path(spec)
    if spec.is_dir():
        if (spec / NET_G).is_file():
            net_g = spec / NET_G
        else:
            found = sorted(spec.glob("net_g*.pth"))
            if len(found) != 1:
                what = "no net_g*.pth" if not found else f"several: {', '.join(p.name for p in found)}"
                raise FileNotFoundError(f"{spec}: expected the official Varformer's {NET_G} in this folder ({what})")
            net_g = found[0]
    elif spec.is_file():
        net_g = spec
    else:
        raise FileNotFoundError(f"Varformer checkpoint {str(spec)!r} does not exist")
    folder = net_g.parent
    out = []
    for given, name in ((vae, VAE_FILE), (var, VAR_FILE)):
        if given is not None:
            if not Path(given).is_file():
                raise FileNotFoundError(f"VAR checkpoint {str(given)!r} does not exist")
            out.append(Path(given))
        else:
            out.append(folder / name if (folder / name).is_file() else None)
    return net_g, out[0], out[1]


def is_official_checkpoint(spec: str | Path) -> bool:
    """Whether ``spec`` names official Varformer files (a ``.pth`` / ``.pt`` file, or a folder with ``net_g*.pth``)
    rather than a scalear export folder."""
    spec = Path(spec)
    if spec.is_file():
        return spec.suffix in (".pth", ".pt")
    return spec.is_dir() and not (spec / "config.json").exists() and any(spec.glob("net_g*.pth"))


def load_official_varformer(spec: str | Path, vae: str | Path | None = None, var: str | Path | None = None,
                            device: torch.device | str = "cpu") -> OfficialVarformer:
    """The released Varformer from its files (:func:`find_official_files`), loaded strictly in the official order:
    VAR's tokenizer, VAR's transformer, then ``net_g``'s ``params_ema``.

    Raises:
        CheckpointMismatchError: naming the file and the first unexpected, missing or mis-shaped key.
    """
    net_g, vae, var = find_official_files(spec, vae, var)
    sources = [(str(p), _load_tensors(p)) for p in (vae, var) if p is not None]
    sources.append((f"{net_g} (params_ema)", read_net_g(net_g)))
    return build_official_varformer(sources).to(device)


__all__ = ["official_to_scalear", "official_layout", "build_official_varformer", "read_net_g", "find_official_files",
           "is_official_checkpoint", "load_official_varformer", "NET_G", "VAE_FILE", "VAR_FILE"]
