"""Parity of scalear's DepthART with the official code (bulatko/DepthART, HEAD b2bc093) on seeded random weights.

No weights can be downloaded, so both sides load the same state dict in the official key layout, filled by
:func:`fill_state_dict` (a fixed integer hash of each key: the same values on every machine and torch version).
The official model runs from a local checkout of its repository, imported with its ``rocket`` / hydra / hub
dependencies stubbed out (only ``mde/models/train_models/var_utils`` and the depth normaliser are imported), with
its own loader (``DepthVAR.init_from_ckpt``: safetensors, ``strict=False``) and its own inference
(``VARFull`` -> ``DepthART.forward_infer`` -> ``autoregressive_infer_cfg``: top-k 900, top-p 0.90, 5 codes per
token drawn with ``torch.multinomial`` from the global RNG, their embeddings averaged; decoding, mean over the 3
channels, bicubic resize to the input). scalear loads the file with
:func:`scalear.domains.depth.depthart_checkpoints.load_depthart_checkpoint` (strict) and is compared on:

* **greedy**: the official loop with argmax codes (``DepthVAR.autoregressive_infer_cfg``, the parent class's
  inference, on the DepthART model) against ``temperature=0``: codes equal, logits / ``f_hat`` / depth close;
* **sampler**: scalear's :func:`~scalear.sampling.sample_tokens` fed the official logits, scale by scale, with a
  generator seeded as the official global RNG was: the official codes exactly;
* **forced**: scalear's loop with the official sampled codes (all 5 per token) forced in: the official logits,
  ``f_hat`` and depth map of the sampled run, close. (Sampled codes themselves are not compared end to end: a
  1e-7 change of a logit can flip a draw, and the official draws change with the thread count.)

Depth maps are compared after flooring the official one at scalear's 1e-3 (scalear never predicts depth <= 0).

    python benchmarks/parity_depthart.py --official-checkout ~/src/DepthART          # variants small, paper-d2
    python benchmarks/parity_depthart.py --official-checkout ~/src/DepthART --variants paper   # VAR-d16 size
    python benchmarks/parity_depthart.py --official-checkout ~/src/DepthART --record tests/fixtures/depthart_official

``--record DIR`` writes what the tests compare against (``layouts.json``: every variant's key -> shape list of
the official ``model.safetensors``; ``<variant>.npz``: inputs and official outputs; ``--layout-only``: the
layouts alone); it needs only torch, numpy and safetensors (scalear is not imported), so it can run in a
scratch environment of its own. Without ``--official-checkout`` the script says so and exits 0.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
import tempfile
import time
import types
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

OFFICIAL_HEAD = "b2bc093"
NULL_CLASS = 1000  #: the official models keep VAR's 1000 ImageNet classes; label 1000 is the null class
SAMPLING = dict(top_k=900, top_p=0.90, num_samples=5)  #: hard-coded in DepthART.autoregressive_infer_cfg
DEPTH_FLOOR = 1e-3  #: scalear floors relative depth here (tokenizer_output_to_depth)
VAR_PATCH_NUMS = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)

#: Model variants in the official classes' hyper-parameters. ``paper`` is the released model (VAR-d16 on VAR's
#: tokenizer); ``paper-d2`` keeps its tokenizer, widths and heads with 2 blocks; ``small`` shrinks everything
#: (32 px, 6 scales, head width 64 as in the paper, so the attention scale is the released 1/32).
#: ``logit_scales``: how many scales' logits a fixture stores (all for ``small``; a comparison run keeps all).
VARIANTS: dict[str, dict[str, Any]] = {
    "small": dict(image_size=32, patch_nums=(1, 2, 3, 4, 6, 8), ch=32, ch_mult=(1, 2, 2), num_res_blocks=1,
                  z_channels=8, vocab_size=1024, depth=4, width=128, num_heads=2, batch=2, logit_scales=6),
    "paper-d2": dict(image_size=256, patch_nums=VAR_PATCH_NUMS, ch=160, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2,
                     z_channels=32, vocab_size=4096, depth=2, width=1024, num_heads=16, batch=1, logit_scales=4),
    "paper": dict(image_size=256, patch_nums=VAR_PATCH_NUMS, ch=160, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2,
                  z_channels=32, vocab_size=4096, depth=16, width=1024, num_heads=16, batch=1, logit_scales=2),
}
FILL_SEED = 0
SAMPLE_SEED = 1234  #: the official global RNG is seeded with this before the sampled run


# ------------------------------------------------------------------------------------------- the fill rule
def _hash_uniform(key: str, n: int, seed: int) -> torch.Tensor:
    """``n`` values in [0, 1) from a 32-bit integer hash of (seed, key, index), in float64 (exact everywhere)."""
    x = (torch.arange(n, dtype=torch.int64) * 2654435761 + zlib.crc32(f"{seed}:{key}".encode())) & 0xFFFFFFFF
    for _ in range(2):
        x = (((x >> 16) ^ x) * 0x45D9F3B) & 0xFFFFFFFF
    x = (x >> 16) ^ x
    return x.to(torch.float64) / 2.0**32


def fill_tensor(key: str, shape: tuple[int, ...], dtype: str, patch_nums: tuple[int, ...], seed: int = FILL_SEED
                ) -> torch.Tensor:
    """The value of one tensor of the official layout (the fill rule).

    ``lvl_1L``: every token's scale index; ``normalizer.alpha`` / ``.beta``: 2 and -1 (the official config);
    ``*zero_k_bias``: zeros. Every other tensor is uniform with mean ``m`` and standard deviation ``s``:
    normalisation weights (``norm*.weight``) m = 1, s = 0.1; other 1-D tensors and positional embeddings
    (``pos_start``, ``pos_1LC``) m = 0, s = 0.1; the rest (linear / conv / embedding weights) m = 0,
    s = 1 / sqrt(fan_in) with fan_in the product of the trailing dimensions.
    """
    if key == "lvl_1L":
        return torch.cat([torch.full((p * p,), i) for i, p in enumerate(patch_nums)]).view(shape).to(getattr(torch, dtype))
    if key in ("normalizer.alpha", "normalizer.beta"):
        return torch.tensor(2.0 if key.endswith("alpha") else -1.0).view(shape)
    if key.endswith("zero_k_bias"):
        return torch.zeros(shape)
    n = math.prod(shape)
    leaf = key.rsplit(".", 1)[-1]
    if len(shape) <= 1 or leaf in ("pos_start", "pos_1LC"):
        mean, std = (1.0 if "norm" in key and leaf == "weight" else 0.0), 0.1
    else:
        mean, std = 0.0, 1.0 / math.sqrt(math.prod(shape[1:]))
    u = _hash_uniform(key, n, seed)
    return ((u * 2 - 1) * (std * math.sqrt(3)) + mean).view(shape).to(getattr(torch, dtype))


def fill_state_dict(layout: list[list], patch_nums: tuple[int, ...], seed: int = FILL_SEED) -> dict[str, torch.Tensor]:
    """The official-layout state dict of ``layout`` (``[[key, shape, dtype], ...]``) filled by :func:`fill_tensor`."""
    return {k: fill_tensor(k, tuple(shape), dtype, patch_nums, seed) for k, shape, dtype in layout}


def test_image(variant: str) -> np.ndarray:
    """A fixed ``(B, S, S, 3)`` uint8 picture per variant: smooth ramps, a disc and stripes (no RNG)."""
    v = VARIANTS[variant]
    S, B = v["image_size"], v["batch"]
    y, x = np.meshgrid(np.linspace(0, 1, S), np.linspace(0, 1, S), indexing="ij")
    out = []
    for b in range(B):
        disc = ((x - 0.3 - 0.3 * b) ** 2 + (y - 0.6) ** 2 < 0.06).astype(float)
        r = 0.2 + 0.6 * y + 0.2 * disc
        g = 0.5 + 0.4 * np.sin(6.0 * x + 2.0 * b) * (1 - disc)
        bl = 0.3 + 0.5 * x * (np.sin(20 * y) > 0)
        out.append(np.stack([r, g, bl], -1))
    return (np.clip(np.stack(out), 0, 1) * 255).round().astype(np.uint8)


# ------------------------------------------------------------------------------------------- the official code
class Batch(dict):
    """The attribute dict the official adapters pass around (``adict`` in the official code)."""

    __getattr__ = dict.__getitem__
    __setattr__ = dict.__setitem__


def import_official(checkout: Path) -> types.SimpleNamespace:
    """The official modules, imported from ``checkout`` with the framework packages stubbed.

    ``mde/__init__.py`` and the ``models`` / ``capsules`` package inits pull in ``rocket``, hydra and the datasets;
    they are replaced by empty packages on the checkout's folders, so only the model files run as written.
    ``huggingface_hub`` (an unused mixin import), ``hydra`` / ``omegaconf`` (the adapter's unused imports) and
    ``scipy`` are stubbed when absent. flash-attn / xformers are not needed (the official code falls back to
    ``scaled_dot_product_attention``).
    """
    root = checkout / "mde"
    if not (root / "models/train_models/var_utils/depthart.py").is_file():
        raise FileNotFoundError(f"{checkout} is not a checkout of bulatko/DepthART (no mde/models/train_models/var_utils/depthart.py)")
    for name, attrs in (("huggingface_hub", {"PyTorchModelHubMixin": type("PyTorchModelHubMixin", (), {})}),
                        ("hydra", {}), ("omegaconf", {"DictConfig": dict, "OmegaConf": object}), ("scipy", {})):
        try:
            importlib.import_module(name)
        except ImportError:
            sys.modules[name] = types.SimpleNamespace(**attrs)
    for pkg in ("mde", "mde.models", "mde.models.train_models", "mde.models.adapters", "mde.capsules",
                "mde.capsules.normalizers"):
        mod = types.ModuleType(pkg)
        mod.__path__ = [str(checkout / pkg.replace(".", "/"))]
        sys.modules[pkg] = mod
    var_utils = importlib.import_module("mde.models.train_models.var_utils")
    return types.SimpleNamespace(
        VQVAE=var_utils.VQVAE, DepthVAR=var_utils.DepthVAR, DepthART=var_utils.DepthART,
        depthart_module=importlib.import_module("mde.models.train_models.var_utils.depthart"),
        NormalizerUTSQuant=importlib.import_module("mde.capsules.normalizers.normalizers").NormalizerUTSQuant,
        VARFull=importlib.import_module("mde.models.adapters.var").VARFull,
    )


def build_official(off: types.SimpleNamespace, variant: str) -> torch.nn.Module:
    """The official ``VARFull(DepthART(VQVAE))`` as ``config/launch/eval/depthART.yaml`` builds it, at ``variant``'s sizes."""
    v = VARIANTS[variant]
    pn = tuple(v["patch_nums"])
    vae = off.VQVAE(
        ddconfig=dict(dropout=0.0, z_channels=v["z_channels"], num_res_blocks=v["num_res_blocks"], in_channels=3,
                      ch=v["ch"], ch_mult=list(v["ch_mult"]), using_mid_sa=True, using_sa=True),
        quantconfig=dict(using_znorm=False, beta=0.25,
                         resiconfig=dict(quant_resi=0.5, share_quant_resi=4, default_qresi_counts=0)),
        vocab_size=v["vocab_size"], v_patch_nums=pn)
    model = off.DepthART(
        vae_local=vae, num_classes=NULL_CLASS, patch_nums=pn, embed_dim=v["width"], depth=v["depth"],
        normalizer=off.NormalizerUTSQuant(affine=True, alpha=2, beta=-1), shared_aln=False, cond_drop_rate=0.1,
        flash_if_available=True, fused_if_available=True, drop_path_rate=0.1 * v["depth"] / 24, rec_loss=True,
        BlockConfig=dict(num_heads=v["num_heads"], mlp_ratio=4.0, drop=0.0, attn_drop=0.0, tau=4, cos_attn=False))
    return off.VARFull(model, visualize=False, de=False).eval()


def official_layout(full: torch.nn.Module) -> list[list]:
    """``[[key, shape, dtype], ...]`` of the official ``model.safetensors`` (safetensors' ``save_model``, which keeps
    one name of the tensors ``vae_proxy.quantize`` and ``vae_quant_proxy`` share, as accelerate's checkpointer does)."""
    from safetensors.torch import load_file, save_model

    with tempfile.TemporaryDirectory() as tmp:
        save_model(full.model, f"{tmp}/model.safetensors")
        sd = load_file(f"{tmp}/model.safetensors")
    return [[k, list(t.shape), str(t.dtype).removeprefix("torch.")] for k, t in sorted(sd.items())]


def run_official(off: types.SimpleNamespace, full: torch.nn.Module, variant: str, ckpt: Path,
                 image_u8: np.ndarray, logit_scales: int | None = None) -> dict[str, np.ndarray]:
    """Load ``ckpt`` with the official loader and record the greedy and the sampled inference on ``image_u8``
    (the logits of the first ``logit_scales`` scales only, when given)."""
    from safetensors.torch import load_file

    model = full.model
    model.init_from_ckpt(str(ckpt))  # the official loader (safetensors.torch.load_model, strict=False)
    own, sd = model.state_dict(), load_file(str(ckpt))
    not_loaded = [k for k, t in sd.items() if not torch.equal(own[k], t)]
    if not_loaded or any(k not in sd and not k.startswith("vae_quant_proxy.") for k in own):
        raise RuntimeError(f"the official loader did not take every tensor of {ckpt}: {not_loaded[:5]}")
    image = torch.from_numpy(image_u8).permute(0, 3, 1, 2).float() / 255.0
    rec: dict[str, list] = {"logits": [], "codes": [], "fhat": [], "prefix": []}
    get_logits, prepare, decode = model.get_logits, model.prepare_to_var, model.vae_proxy.decode
    sampler = off.depthart_module.sample_with_top_k_top_p_

    def logits_hook(*a, **k):
        out = get_logits(*a, **k)
        rec["logits"].append(out.clone())
        return out

    def sampler_hook(logits, **k):
        idx = sampler(logits, **k)
        rec["codes"].append(idx.clone())
        return idx

    def prepare_hook(*a, **k):
        target, image_var = prepare(*a, **k)
        rec["prefix"].append(image_var.clone())
        return target, image_var

    def decode_hook(f_hat):
        rec["fhat"].append(f_hat.clone())
        return decode(f_hat)

    def infer(greedy: bool) -> dict[str, np.ndarray]:
        for v in rec.values():
            v.clear()
        model.get_logits, model.prepare_to_var, model.vae_proxy.decode = logits_hook, prepare_hook, decode_hook
        off.depthart_module.sample_with_top_k_top_p_ = sampler_hook
        if greedy:  # the parent class's loop (argmax), on the DepthART model
            model.autoregressive_infer_cfg = lambda B, image: off.DepthVAR.autoregressive_infer_cfg(model, B, image)
        try:
            batch = Batch(image=image.clone(), target=torch.ones(image.shape[0], 1, *image.shape[2:]),
                          metadata=Batch())
            with torch.no_grad():
                depth = full(batch).predict
        finally:
            for name in ("get_logits", "prepare_to_var", "autoregressive_infer_cfg"):
                model.__dict__.pop(name, None)
            model.vae_proxy.__dict__.pop("decode", None)
            off.depthart_module.sample_with_top_k_top_p_ = sampler
        logits = torch.cat(rec["logits"], 1)
        codes = logits.argmax(-1) if greedy else torch.cat(rec["codes"], 1)
        n_store = sum(p * p for p in VARIANTS[variant]["patch_nums"][:logit_scales])
        top2 = logits.topk(2, dim=-1).values
        return {"logits": logits[:, :n_store].numpy(), "codes": codes.to(torch.int16).numpy(),
                "fhat": rec["fhat"][0].numpy(), "depth": depth.numpy(), "prefix": rec["prefix"][0].numpy(),
                "min_top2_gap": np.float32((top2[..., 0] - top2[..., 1]).min())}

    out = {f"greedy_{k}": v for k, v in infer(greedy=True).items()}
    torch.manual_seed(SAMPLE_SEED)  # the only RNG the official sampler draws from
    out |= {f"sampled_{k}": v for k, v in infer(greedy=False).items()}
    out["image_u8"] = image_u8
    del out["sampled_prefix"]  # the same as the greedy run's
    if VARIANTS[variant]["width"] * sum(p * p for p in VARIANTS[variant]["patch_nums"]) > 200_000:
        del out["greedy_prefix"]  # keeps the fixtures small
    return out


# ------------------------------------------------------------------------------------------- scalear's side
def scalear_config(variant: str):
    """scalear's ``official`` DepthART preset at ``variant``'s sizes (what the loader should read off the file)."""
    from scalear.domains.depth.depthart import preset_config
    from scalear.vqvae import VQVAE_PRESETS

    v = VARIANTS[variant]
    tok = dict(VQVAE_PRESETS["var-f16"], ch=v["ch"], ch_mult=tuple(v["ch_mult"]), num_res_blocks=v["num_res_blocks"],
               z_channels=v["z_channels"], vocab_size=v["vocab_size"], patch_nums=tuple(v["patch_nums"]))
    return preset_config("official", tokenizer=tok, transformer=dict(
        depth=v["depth"], width=v["width"], num_heads=v["num_heads"], drop_path_rate=0.1 * v["depth"] / 24))


def compare(variant: str, layout: list[list], rec: dict[str, np.ndarray]) -> dict[str, float]:
    """Load the filled official-layout file into scalear and compare with the official record ``rec``.

    Returns max abs differences (``*_max_diff``) and exact-match flags (1.0 = equal) of every check in the module
    docstring.
    """
    from safetensors.torch import save_file

    from scalear.domains.depth.depthart_checkpoints import load_depthart_checkpoint
    from scalear.sampling import sample_tokens

    v = VARIANTS[variant]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.safetensors"
        save_file(fill_state_dict(layout, tuple(v["patch_nums"])), str(path))
        model = load_depthart_checkpoint(path)  # the architecture read off the file, as for the released one
    image = torch.from_numpy(rec["image_u8"]).permute(0, 3, 1, 2).float() / 255.0
    out: dict[str, float] = {}

    def diff(name: str, a: torch.Tensor, b: np.ndarray) -> None:
        out[f"{name}_max_diff"] = float((a.float() - torch.from_numpy(b).float()).abs().max())

    def official_depth(key: str) -> np.ndarray:
        return np.maximum(rec[key], DEPTH_FLOOR)

    n_logits = rec["greedy_logits"].shape[1]
    with torch.no_grad():
        if "greedy_prefix" in rec:
            diff("prefix", model.transformer.embed_prefix(model.image_prefix(image)), rec["greedy_prefix"])
        greedy = model.sample(image, temperature=0.0, num_samples=1, return_logits=True)
        codes = torch.cat(greedy.indices, 1)
        out["greedy_codes_equal"] = float(torch.equal(codes, torch.from_numpy(rec["greedy_codes"]).long()))
        diff("greedy_logits", torch.cat(greedy.logits, 1)[:, :n_logits], rec["greedy_logits"])
        diff("greedy_fhat", greedy.f_hat, rec["greedy_fhat"])
        diff("greedy_depth", model.predict_from_latent(greedy.f_hat, image.shape[-2:]), official_depth("greedy_depth"))

        rec_logits = torch.from_numpy(rec["sampled_logits"])
        rec_codes = torch.from_numpy(rec["sampled_codes"]).long()
        g, start, same = torch.Generator().manual_seed(SAMPLE_SEED), 0, True
        for p in v["patch_nums"]:  # every scale whose logits the record holds
            if start + p * p > rec_logits.shape[1]:
                break
            drawn = sample_tokens(rec_logits[:, start:start + p * p], SAMPLING["top_k"], SAMPLING["top_p"], 1.0,
                                  SAMPLING["num_samples"], generator=g)
            same &= torch.equal(drawn, rec_codes[:, start:start + p * p])
            start += p * p
        out["sampler_codes_equal"] = float(same)
        forced, start = [], 0
        for p in v["patch_nums"]:
            forced.append(rec_codes[:, start:start + p * p])
            start += p * p
        run = model.sample(image, forced_indices=forced, return_logits=True)
        diff("forced_logits", torch.cat(run.logits, 1)[:, :rec_logits.shape[1]], rec["sampled_logits"])
        diff("forced_fhat", run.f_hat, rec["sampled_fhat"])
        diff("forced_depth", model.predict_from_latent(run.f_hat, image.shape[-2:]), official_depth("sampled_depth"))
    return out


# ------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--official-checkout", type=Path, default=None,
                   help=f"a checkout of github.com/bulatko/DepthART (HEAD {OFFICIAL_HEAD}); without it the script skips")
    p.add_argument("--variants", default="small,paper-d2", help=f"comma-separated, from {sorted(VARIANTS)}")
    p.add_argument("--record", type=Path, default=None,
                   help="write layouts.json and <variant>.npz (the test fixtures) here instead of comparing")
    p.add_argument("--layout-only", action="store_true", help="with --record: write only the variants' layouts")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    args = p.parse_args(argv)
    bad = [v for v in args.variants.split(",") if v not in VARIANTS]
    if bad:
        p.error(f"--variants: unknown {bad}; choose from {sorted(VARIANTS)}")
    if args.layout_only and args.record is None:
        p.error("--layout-only needs --record DIR")
    return args


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    args = parse_args(argv)
    if args.official_checkout is None:
        print("parity_depthart: skipped (no --official-checkout PATH given: a checkout of bulatko/DepthART)")
        return {}
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    off = import_official(args.official_checkout.expanduser())
    results: dict[str, dict[str, float]] = {}
    layouts: dict[str, list] = {}
    for variant in args.variants.split(","):
        t0 = time.perf_counter()
        full = build_official(off, variant)
        layout = layouts[variant] = official_layout(full)
        if args.layout_only:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            from safetensors.torch import save_file

            ckpt = Path(tmp) / "model.safetensors"
            save_file(fill_state_dict(layout, tuple(VARIANTS[variant]["patch_nums"])), str(ckpt))
            stored = VARIANTS[variant]["logit_scales"] if args.record is not None else None
            rec = run_official(off, full, variant, ckpt, test_image(variant), stored)
        del full
        t_official = time.perf_counter() - t0
        if args.record is not None:
            args.record.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(args.record / f"{variant}.npz", **rec)
            print(f"{variant}: official run in {t_official:.1f} s, min top-2 logit gap (greedy) "
                  f"{float(rec['greedy_min_top2_gap']):.2e}; wrote {args.record / f'{variant}.npz'}")
            continue
        t0 = time.perf_counter()
        results[variant] = res = compare(variant, layout, rec)
        print(f"{variant}: official {t_official:.1f} s, scalear {time.perf_counter() - t0:.1f} s (torch "
              f"{torch.__version__}, {torch.get_num_threads()} threads)")
        for k, val in res.items():
            print(f"  {k:<24} {val:.3g}" if k.endswith("diff") else f"  {k:<24} {'yes' if val == 1.0 else 'NO'}")
    if args.record is not None:
        path = args.record / "layouts.json"
        old = json.loads(path.read_text()) if path.is_file() else {}
        path.write_text(json.dumps({**old, **layouts}, indent=0) + "\n")
        print(f"wrote {path}")
    return results


if __name__ == "__main__":
    main()
