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
    phi (``phi_share=K>1``, VAR's ``share_quant_resi``; the released K=4). (b) fully shared phi (``PhiShared``).
    (c) non-shared phi (``PhiNonShared`` is itself a ``ModuleList``).

Buffers scalear adds and VAR lacks are filled in (:data:`SCALEAR_ONLY_VAE_BUFFERS`):
``quantize.record_hit`` = 0 (usage statistics restart from the next training batch) and
``quantize.code_ema_hits_V`` = ``ema_vocab_hit_SV.sum(0)`` (per-step hits summed over scales, the statistic
dead-code restarts read). When the model's schedule has a different number of scales than VAR's 10,
``ema_vocab_hit_SV`` is reset to zeros of the right shape, as VAR's own ``VQVAE.load_state_dict`` does.

Transformer (``var_d16.pth``, ``var_d20.pth``, ``var_d24.pth``, ``var_d30.pth``)
---------------------------------------------------------------------------------
Plain state dicts of VAR's ``VAR`` (models/var.py, models/basic_var.py). scalear's
:class:`~scalear.transformer.NextScaleTransformer` uses VAR's parameter names, so
:data:`VAR_TRANSFORMER_KEY_TABLE` maps every key to itself (``word_embed``, ``class_emb``, ``pos_start``,
``pos_1LC``, ``lvl_embed``, ``blocks.{i}.attn.*`` = ``mat_qkv.weight``, ``q_bias``, ``v_bias``,
``zero_k_bias``, ``scale_mul_1H11``, ``proj.*``; ``blocks.{i}.ffn.fc{1,2}.*``,
``blocks.{i}.ada_lin.1.*`` or, with shared AdaLN, ``shared_ada_lin.1.*`` and ``blocks.{i}.ada_gss``,
``head_nm.ada_lin.1.*``, ``head.*``). VAR's two schedule-derived buffers ``lvl_1L`` (1, L) and
``attn_bias_for_masking`` (1, 1, L, L) are checked against the model's schedule and dropped
(:data:`VAR_TRANSFORMER_DROPPED_BUFFERS`): scalear recomputes both.

The released models are class-conditional on ImageNet 256 px: 1000 classes, label 1000 is the null class used
by classifier-free guidance; width 64 * depth, depth heads, 10 scales (L = 680), V = 4096, Cvae = 32.
Sampling as in VAR's README (FID protocol: cfg 1.5, top_p 0.96, top_k 900)::

    import torch
    from scalear.sampling import sample
    from scalear.var_checkpoints import load_var

    vae, var = load_var("vae_ch160v4096z32.pth", "var_d16.pth")  # depth read off the file
    labels = torch.tensor([207, 360, 387, 974])  # ImageNet class ids
    out = sample(var, vae.quantize, 4, label_B=labels, guidance=1.5, top_k=900, top_p=0.96,
                 generator=torch.Generator().manual_seed(0))
    images = vae.fhat_to_img(out.f_hat).add(1).mul(0.5)  # (4, 3, 256, 256) in [0, 1]

:func:`load_var_transformer` loads a transformer alone (e.g. to fine-tune it: ``model.train()``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from scalear.schedules import ScaleSchedule
from scalear.transformer import TRANSFORMER_PRESETS, NextScaleTransformer, create_transformer
from scalear.vqvae import VQVAE, create_vqvae

__all__ = [
    "VAR_VAE_KEY_RULES",
    "SCALEAR_ONLY_VAE_BUFFERS",
    "map_var_vae_state_dict",
    "load_var_vqvae",
    "CheckpointMismatchError",
    "VAR_TRANSFORMER_KEY_TABLE",
    "VAR_TRANSFORMER_DROPPED_BUFFERS",
    "check_var_transformer_buffers",
    "map_var_transformer_state_dict",
    "var_transformer_config_overrides",
    "load_var_transformer",
    "load_var",
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
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated/corrupted files, pickles of objects other than tensors
        raise CheckpointMismatchError(f"could not read checkpoint {str(path)!r}: {type(e).__name__}: {e}") from e
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
            ``patch_nums`` schedule (its last scale must stay 16 for 256 px inputs). The width ``ch``, the
            vocabulary and the latent channels are read off the file unless given here.

    Raises:
        CheckpointMismatchError: listing missing keys, unexpected keys and shape mismatches.
    """
    sd = map_var_vae_state_dict(_load_tensors(path))
    read = {}  # the widths are read off the file (VAR's released one: ch 160, 4096 codes of 32 channels)
    if "encoder.conv_in.weight" in sd:
        read["ch"] = sd["encoder.conv_in.weight"].shape[0]
    if "quantize.embedding.weight" in sd and sd["quantize.embedding.weight"].ndim == 2:
        read["vocab_size"], read["z_channels"] = sd["quantize.embedding.weight"].shape
    model = create_vqvae("var-f16", **{**read, **overrides})
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
#: VAR ``VAR.state_dict()`` key (regex) -> scalear :class:`NextScaleTransformer` key, and the tensor's shape
#: (C = width, H = heads, L = tokens, K = scales, V = vocabulary). Names are shared, so every row maps a key to
#: itself; the table documents the layout and is where a renaming would go. Keys matching no row are kept
#: as they are (and reported as unexpected by the loader).
VAR_TRANSFORMER_KEY_TABLE: tuple[tuple[str, str, str], ...] = (
    (r"word_embed\.(weight|bias)", r"word_embed.\1", "(C, Cvae), (C,)"),
    (r"class_emb\.weight", r"class_emb.weight", "(num_classes + 1, C); row num_classes = null class"),
    (r"pos_start", r"pos_start", "(1, first_l, C)"),
    (r"pos_1LC", r"pos_1LC", "(1, L, C)"),
    (r"lvl_embed\.weight", r"lvl_embed.weight", "(K, C)"),
    (r"shared_ada_lin\.1\.(weight|bias)", r"shared_ada_lin.1.\1", "(6C, C), (6C,); shared_aln only"),
    (r"blocks\.(\d+)\.attn\.mat_qkv\.weight", r"blocks.\1.attn.mat_qkv.weight", "(3C, C); no bias"),
    (r"blocks\.(\d+)\.attn\.(q_bias|v_bias)", r"blocks.\1.attn.\2", "(C,)"),
    (r"blocks\.(\d+)\.attn\.zero_k_bias", r"blocks.\1.attn.zero_k_bias", "(C,) buffer of zeros"),
    (r"blocks\.(\d+)\.attn\.scale_mul_1H11", r"blocks.\1.attn.scale_mul_1H11", "(1, H, 1, 1); attn_l2_norm only"),
    (r"blocks\.(\d+)\.attn\.proj\.(weight|bias)", r"blocks.\1.attn.proj.\2", "(C, C), (C,)"),
    (r"blocks\.(\d+)\.ffn\.fc1\.(weight|bias)", r"blocks.\1.ffn.fc1.\2", "(4C, C), (4C,)"),
    (r"blocks\.(\d+)\.ffn\.fc2\.(weight|bias)", r"blocks.\1.ffn.fc2.\2", "(C, 4C), (C,)"),
    (r"blocks\.(\d+)\.ada_lin\.1\.(weight|bias)", r"blocks.\1.ada_lin.1.\2", "(6C, C), (6C,); not shared_aln"),
    (r"blocks\.(\d+)\.ada_gss", r"blocks.\1.ada_gss", "(1, 1, 6, C); shared_aln only"),
    (r"head_nm\.ada_lin\.1\.(weight|bias)", r"head_nm.ada_lin.1.\1", "(2C, C), (2C,)"),
    (r"head\.(weight|bias)", r"head.\1", "(V, C), (V,)"),
)

#: Buffers of VAR's checkpoint that scalear derives from its schedule instead; dropped after being checked
#: against the model's schedule (:func:`check_var_transformer_buffers`).
VAR_TRANSFORMER_DROPPED_BUFFERS: dict[str, str] = {
    "lvl_1L": "(1, L) int64, scale index of every token (scalear: non-persistent, from ScaleSchedule.level_ids)",
    "attn_bias_for_masking": "(1, 1, L, L) float, 0 where lvl_1L[j] <= lvl_1L[i] else -inf (scalear: bool mask)",
}


def check_var_transformer_buffers(
    sd: dict[str, torch.Tensor], schedule: ScaleSchedule, source: str = "state dict"
) -> None:
    """Check VAR's ``lvl_1L`` and ``attn_bias_for_masking`` (where present) against ``schedule``.

    Raises:
        CheckpointMismatchError: naming the tokens per scale the checkpoint was trained with.
    """
    L, lvl_L = schedule.total_tokens, schedule.level_ids()
    hint = (
        "VAR's 512 px model needs schedule=ScaleSchedule.var_2d(512), or with load_var "
        "vae_overrides=dict(patch_nums=VAR_PATCH_NUMS[512])"
    )
    lvl = sd.get("lvl_1L")
    if lvl is not None:
        if lvl.shape != (1, L) or not torch.equal(lvl.reshape(-1).long(), lvl_L):
            counts = torch.bincount(lvl.reshape(-1).long()).tolist() if lvl.numel() and lvl.min() >= 0 else "?"
            raise CheckpointMismatchError(
                f"checkpoint {source!r} was trained on {lvl.numel()} tokens with {counts} tokens per scale "
                f"(lvl_1L); the model's schedule {schedule} has {list(schedule.tokens_per_scale)} ({hint})"
            )
    bias = sd.get("attn_bias_for_masking")
    if bias is not None:
        if bias.shape != (1, 1, L, L):
            raise CheckpointMismatchError(
                f"checkpoint {source!r}: attn_bias_for_masking has shape {tuple(bias.shape)}; the model's "
                f"schedule {schedule} needs (1, 1, {L}, {L}) ({hint})"
            )
        allowed_LL = lvl_L[None, :] <= lvl_L[:, None]
        bias_LL = bias[0, 0]
        if not (torch.equal(bias_LL == 0, allowed_LL) and torch.isneginf(bias_LL[~allowed_LL]).all()):
            raise CheckpointMismatchError(
                f"checkpoint {source!r}: attn_bias_for_masking is not the block-causal mask of {schedule}"
            )


def map_var_transformer_state_dict(
    sd: dict[str, torch.Tensor], schedule: ScaleSchedule | None = None, *, source: str = "state dict"
) -> dict[str, torch.Tensor]:
    """Map a VAR transformer state dict to scalear's keys (:data:`VAR_TRANSFORMER_KEY_TABLE`) and drop
    :data:`VAR_TRANSFORMER_DROPPED_BUFFERS`, checking them against ``schedule`` when it is given.

    Pure function: tensors are shared, not copied; the input dict is not modified.
    """
    if schedule is not None:
        check_var_transformer_buffers(sd, schedule, source)
    out: dict[str, torch.Tensor] = {}
    for key, v in sd.items():
        if key in VAR_TRANSFORMER_DROPPED_BUFFERS:
            continue
        new = key
        for pattern, repl, _ in VAR_TRANSFORMER_KEY_TABLE:
            m = re.fullmatch(pattern, key)
            if m:
                new = m.expand(repl)
                break
        if new in out:
            raise CheckpointMismatchError(f"two VAR keys map to {new!r}")
        out[new] = v
    return out


def var_transformer_config_overrides(sd: dict[str, torch.Tensor], source: str = "state dict") -> dict[str, Any]:
    """:class:`~scalear.transformer.TransformerConfig` fields read off a VAR transformer state dict: ``depth``
    (number of blocks), ``width``, ``num_heads`` (from ``scale_mul_1H11``, else VAR's rule heads = depth),
    ``latent_dim``, ``vocab_size``, ``num_classes``, ``shared_adaln`` and ``attn_l2_norm``."""
    blocks = {int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))}
    needed = ("word_embed.weight", "class_emb.weight", "head.weight")
    if not blocks or any(k not in sd for k in needed):
        raise CheckpointMismatchError(
            f"checkpoint {source!r} is not a VAR transformer state dict: expected keys {', '.join(needed)} "
            f"and blocks.{{i}}.*; found {', '.join(sorted(sd)[:5])}{' ...' if len(sd) > 5 else ''}"
        )
    depth = max(blocks) + 1
    scale_mul = sd.get("blocks.0.attn.scale_mul_1H11")
    C, Cvae = sd["word_embed.weight"].shape
    return dict(
        depth=depth,
        width=C,
        num_heads=scale_mul.shape[1] if scale_mul is not None else depth,
        latent_dim=Cvae,
        vocab_size=sd["head.weight"].shape[0],
        num_classes=sd["class_emb.weight"].shape[0] - 1,
        shared_adaln="shared_ada_lin.1.weight" in sd,
        attn_l2_norm=scale_mul is not None,
    )


def load_var_transformer(
    path: str | Path, depth: int | None = None, *, freeze: bool = False, **overrides: Any
) -> NextScaleTransformer:
    """Load VAR's ``var_d{16,20,24,30}.pth`` into scalear's ``"var-d{depth}"`` preset (strict), in eval mode.

    The architecture (width, heads, vocabulary, classes, shared AdaLN, attention L2 norm) is read off the
    checkpoint (:func:`var_transformer_config_overrides`); weights are loaded in float32 without running a
    random initialisation first (the model is built on the meta device), so VAR-d30's 2B parameters load fast.

    Args:
        path: VAR's transformer checkpoint (a plain state dict; ``torch.load(weights_only=True)`` or
            ``.safetensors``).
        depth: expected depth; inferred from the number of blocks when ``None``, checked against it otherwise.
        freeze: also turn off gradients (the model is returned in eval mode either way; call ``.train()``
            to fine-tune).
        **overrides: :class:`~scalear.transformer.TransformerConfig` fields, e.g. ``schedule`` (VAR's 512 px
            model needs ``ScaleSchedule.var_2d(512)``) or ``cond_drop_rate``.

    Raises:
        CheckpointMismatchError: naming the file and listing missing keys, unexpected keys and shape
            mismatches, or the schedule the checkpoint was trained on.
    """
    source = str(path)
    sd = _load_tensors(path)
    arch = var_transformer_config_overrides(sd, source)
    if depth is not None and depth != arch["depth"]:
        raise CheckpointMismatchError(
            f"checkpoint {source!r} holds a depth-{arch['depth']} VAR (width {arch['width']}), not depth {depth}"
        )
    depth = arch.pop("depth")
    preset = f"var-d{depth}" if f"var-d{depth}" in TRANSFORMER_PRESETS else "var-d16"
    with torch.device("meta"):  # no init: every tensor comes from the checkpoint
        model = create_transformer(preset, depth=depth, **{**arch, **overrides})
    sd = map_var_transformer_state_dict(sd, model.cfg.schedule, source=source)
    sd = {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}
    _check_compatible(model.state_dict(), sd, source)
    model.load_state_dict(sd, strict=True, assign=True)
    model.lvl_1L = model.cfg.schedule.level_ids().view(1, -1)  # the one non-persistent buffer
    still_meta = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if still_meta:
        raise RuntimeError(f"tensors not filled from {source!r}: {still_meta}")
    model.eval()
    if freeze:
        model.requires_grad_(False)
    return model


def load_var(
    vae_path: str | Path,
    var_path: str | Path,
    depth: int | None = None,
    *,
    vae_overrides: dict[str, Any] | None = None,
    **var_overrides: Any,
) -> tuple[VQVAE, NextScaleTransformer]:
    """Load VAR's tokenizer (frozen, :func:`load_var_vqvae`) and transformer (:func:`load_var_transformer`)
    on the tokenizer's schedule, and check that they fit together (vocabulary, latent channels, schedule).

    ``vae_overrides`` go to :func:`load_var_vqvae` (e.g. ``patch_nums=VAR_PATCH_NUMS[512]`` for VAR's 512 px
    model), ``var_overrides`` to :func:`load_var_transformer`.
    """
    vae = load_var_vqvae(vae_path, **(vae_overrides or {}))
    var_overrides.setdefault("schedule", vae.schedule)
    model = load_var_transformer(var_path, depth, **var_overrides)
    got = (model.cfg.vocab_size, model.cfg.latent_dim, model.cfg.schedule)
    want = (vae.config.vocab_size, vae.config.z_channels, vae.schedule)
    if got != want:
        raise CheckpointMismatchError(
            f"transformer {str(var_path)!r} (vocab {got[0]}, Cvae {got[1]}, {got[2]}) does not fit tokenizer "
            f"{str(vae_path)!r} (vocab {want[0]}, Cvae {want[1]}, {want[2]})"
        )
    return vae, model
