"""Load VAR's public checkpoints (FoundationVision/VAR, Tian et al. 2024) into scalear modules.

Tokenizer (``vae_ch160v4096z32.pth``)
-------------------------------------
A plain ``state_dict`` of VAR's ``VQVAE`` (models/vqvae.py). :class:`scalear.vqvae.VQVAE` uses VAR's module
names for the encoder, decoder, ``quant_conv``, ``post_quant_conv`` and codebook, so almost every key is kept
as is. :func:`map_var_vae_state_dict` applies :data:`VAR_VAE_KEY_RULES` (first matching rule wins):

=====================================================  ==============================================  =====
VAR key                                                scalear key                                     why
=====================================================  ==============================================  =====
``quantize.quant_resi.qresi_ls.{i}.{weight,bias}``     ``quantize.quant_resi.qresi_ls.{i}.conv.*``      (a)
``quantize.quant_resi.qresi.{weight,bias}``            ``quantize.quant_resi.qresi_ls.0.conv.*``        (b)
``quantize.quant_resi.{i}.{weight,bias}``              ``quantize.quant_resi.qresi_ls.{i}.conv.*``      (c)
everything else (``encoder.*``, ``decoder.*``,         unchanged
``quant_conv.*``, ``post_quant_conv.*``,
``quantize.embedding.weight``,
``quantize.ema_vocab_hit_SV``)
=====================================================  ==============================================  =====

(a) VAR's ``Phi`` subclasses ``nn.Conv2d``; scalear's ``Phi`` holds its conv as ``.conv``. Partially shared
    phi (``share_quant_resi=K>1``, the released K=4). (b) fully shared phi (``PhiShared``). (c) non-shared phi
    (``PhiNonShared`` is itself a ``ModuleList``).

Buffers scalear adds and VAR lacks are filled in (:data:`SCALEAR_ONLY_VAE_BUFFERS`):
``quantize.record_hit`` = 0 (usage statistics restart from the next training batch) and
``quantize.code_ema_hits_V`` = ``ema_vocab_hit_SV.sum(0)`` (per-step hits summed over scales, the statistic
dead-code restarts read). When the model's schedule has a different number of scales than VAR's 10,
``ema_vocab_hit_SV`` is reset to zeros of the right shape, as VAR's own ``VQVAE.load_state_dict`` does.

Transformer
-----------
``map_var_transformer_state_dict`` (VAR's ``var_d{16,20,24,30}.pth``) belongs in the section marked below.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from scalear.vqvae import VQVAE, create_vqvae

__all__ = [
    "VAR_VAE_KEY_RULES",
    "SCALEAR_ONLY_VAE_BUFFERS",
    "map_var_vae_state_dict",
    "load_var_vqvae",
    "CheckpointMismatchError",
]

# ==================================================================================== tokenizer (VQVAE)
#: (regex on a VAR key, replacement giving the scalear key), tried in order; keys matching none are kept.
VAR_VAE_KEY_RULES: tuple[tuple[str, str], ...] = (
    (r"^quantize\.quant_resi\.qresi_ls\.(\d+)\.(weight|bias)$", r"quantize.quant_resi.qresi_ls.\1.conv.\2"),
    (r"^quantize\.quant_resi\.qresi\.(weight|bias)$", r"quantize.quant_resi.qresi_ls.0.conv.\1"),
    (r"^quantize\.quant_resi\.(\d+)\.(weight|bias)$", r"quantize.quant_resi.qresi_ls.\1.conv.\2"),
)

#: scalear buffers absent from VAR's checkpoint, and how :func:`map_var_vae_state_dict` fills them.
SCALEAR_ONLY_VAE_BUFFERS: dict[str, str] = {
    "quantize.record_hit": "0 (long scalar)",
    "quantize.code_ema_hits_V": "quantize.ema_vocab_hit_SV.sum(0)",
}


class CheckpointMismatchError(RuntimeError):
    """A checkpoint's keys or shapes do not match the model it is loaded into."""


def map_var_vae_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename VAR ``VQVAE`` keys to scalear's (:data:`VAR_VAE_KEY_RULES`) and add scalear-only buffers.

    Pure function: tensors are shared, not copied; the input dict is not modified.
    """
    out: dict[str, torch.Tensor] = {}
    for key, v in sd.items():
        new = key
        for pattern, repl in VAR_VAE_KEY_RULES:
            new, n = re.subn(pattern, repl, key)
            if n:
                break
        if new in out:
            raise CheckpointMismatchError(f"two VAR keys map to {new!r}")
        out[new] = v
    hits_SV = out.get("quantize.ema_vocab_hit_SV")
    if hits_SV is not None:
        out.setdefault("quantize.code_ema_hits_V", hits_SV.float().sum(0))
    out.setdefault("quantize.record_hit", torch.zeros((), dtype=torch.long))
    return out


def _load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a torch file (``weights_only=True``), on CPU."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    sd = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointMismatchError(f"{str(path)!r} is not a plain state dict of tensors")
    return sd


def load_var_vqvae(path: str | Path, *, freeze: bool = True, **overrides: Any) -> VQVAE:
    """Build scalear's ``"var-f16"`` tokenizer and load VAR's ``vae_ch160v4096z32.pth`` into it (strict).

    Args:
        path: VAR's tokenizer checkpoint (a plain state dict; ``.pth`` via ``torch.load(weights_only=True)``
            or ``.safetensors``).
        freeze: return the model in eval mode with ``requires_grad=False`` (VAR's ``test_mode``).
        **overrides: :class:`~scalear.vqvae.VQVAEConfig` fields changed from the preset, e.g. another
            ``patch_nums`` schedule (its last scale must stay 16 for 256 px inputs) or ``ch`` for checkpoints
            of another width.

    Raises:
        CheckpointMismatchError: listing missing keys, unexpected keys and shape mismatches.
    """
    sd = map_var_vae_state_dict(_load_tensors(path))
    model = create_vqvae("var-f16", **overrides)
    own = model.state_dict()
    hits, own_hits = sd.get("quantize.ema_vocab_hit_SV"), own["quantize.ema_vocab_hit_SV"]
    if hits is not None and hits.shape[1:] == own_hits.shape[1:] and hits.shape[0] != own_hits.shape[0]:
        sd["quantize.ema_vocab_hit_SV"] = torch.zeros_like(own_hits)  # another schedule: statistics restart
    _check_compatible(own, sd, str(path))
    model.load_state_dict(sd, strict=True)
    if freeze:
        model.eval().requires_grad_(False)
    return model


def _check_compatible(own: dict[str, torch.Tensor], sd: dict[str, torch.Tensor], source: str) -> None:
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shapes = [
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(sd))
        if tuple(sd[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = [f"checkpoint {source!r} does not match the model"]
        for name, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
            if items:
                more = f" ... (+{len(items) - 10} more)" if len(items) > 10 else ""
                parts.append(f"{len(items)} {name}: " + ", ".join(items[:10]) + more)
        raise CheckpointMismatchError("\n  ".join(parts))


# ==================================================================================== transformer (VAR)
# map_var_transformer_state_dict(sd) -> sd and load_var_transformer(...) go here: VAR's var_d*.pth keys
# (word_embed, class_emb, pos_start, pos_1LC, lvl_embed, blocks.{i}.*, head_nm, head) -> scalear.transformer.
