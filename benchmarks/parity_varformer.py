"""Parity of scalear's official Varformer preset with the official code (siywang541/Varformer, HEAD f45d3a2),
on seeded random weights in the official key layout.

No weights can be downloaded, so both sides run the same state dict: every parameter of the official
``VarFormer2`` (``basicsr/options/test.yml``: depth 16, ``attn_l2_norm``, 4 enhancement layers, ``dec_adjust``
off, ``ch_mult`` 1,1,2,2,4, 2 res blocks) filled by :func:`fill_tensor` (an integer hash of each key: the same
values on every machine and torch version), every buffer as the official constructor makes it (the fill rule
reproduces them; ``--record`` checks that). The official side runs the official test script's steps
(``basicsr/varformer_test.py``): ``cv2.imread`` (BGR), ``/255``, ``cv2.resize`` to 256x256 (``INTER_LINEAR``),
BGR -> RGB, ``normalize(0.5, 0.5)``, ``model(img)`` (VAR loop with ``top_k=1``, CFG mix of two null-class
branches), ``tensor2img`` (RGB -> BGR, ``round(x * 255)``), under ``torch.no_grad()`` (the script keeps the
graph; the values are the same). The official code does not import as published; this script supplies, in
``sys.modules`` only, what is missing: a ``dist`` module (``get_device`` -> CPU), ``RACMoudle4`` = ``RAC.RcaMoudle4``
(same signature; never defined upstream), placeholders for the undefined ``MainDecoder`` / ``MainDecoder9``,
and, when they do not import, ``timm.layers`` (``trunc_normal_``, ``to_2tuple``, ``DropPath``), torchvision's
``normalize`` / ``make_grid`` and ``einops``; the ``archs`` package is imported without its ``__init__`` (which
imports every other architecture file); ``var_cross_c`` of ``test.yml`` (rejected by the constructor) is dropped
and the constructor's VAR paths are set to None (the weights come from the filled state dict).

scalear loads the saved ``net_g`` file (``{'params', 'params_ema'}``, as BasicSR saves it) with
:func:`scalear.domains.restoration.varformer_checkpoints.load_official_varformer` (strict) and runs
:func:`~scalear.domains.restoration.varformer_official.run_official_test` on the same PNG; compared: the degraded
image's token indices, the VAR loop's token indices (first), logits, ``f_hat``, the model input and output (float
and 8-bit).

    python benchmarks/parity_varformer.py --official-checkout ~/src/Varformer            # record + compare
    python benchmarks/parity_varformer.py --official-checkout ~/src/Varformer --official-python /tmp/vf/bin/python
    python benchmarks/parity_varformer.py --official-checkout ~/src/Varformer --record tests/fixtures/varformer_official

The official side runs in a subprocess (``--official-python``, default this interpreter), which needs torch,
numpy, opencv-python(-headless) and pyyaml, not scalear; then this process compares, so the two ~12 GB peaks
never overlap. ``--record DIR`` writes what the tests compare against: ``layout.json`` (every key of the
official state dict with shape, dtype and param/buffer) and ``official.npz`` (inputs and outputs); with
``--checkpoint PATH`` also the 3.7 GB ``net_g`` file. Without ``--official-checkout`` the script says so and
exits 0.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import subprocess
import sys
import tempfile
import time
import types
import zlib
from pathlib import Path

import numpy as np
import torch

OFFICIAL_HEAD = "f45d3a2"
PATCH_NUMS = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
FILL_SEED = 0
FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "varformer_official"
LOGIT_SCALES = 4  #: scales whose full logits official.npz keeps (1 + 4 + 9 + 16 tokens x 4096)


# ------------------------------------------------------------------------------------------- the fill rule
def _hash_unit(key: str, n: int, seed: int) -> torch.Tensor:
    """``n`` values in [0, 1) from a 32-bit integer hash of (seed, key, index), exact in float64."""
    x = (torch.arange(n, dtype=torch.int64) * 2654435761 + zlib.crc32(f"{seed}/{key}".encode())) & 0xFFFFFFFF
    for _ in range(2):
        x = (((x >> 16) ^ x) * 0x45D9F3B) & 0xFFFFFFFF
    return ((x >> 16) ^ x).to(torch.float64) / 2.0**32


def _swin_index(ws: int) -> torch.Tensor:
    """Relative-position index of a ``ws x ws`` window (Swin): (dy + ws - 1) * (2 ws - 1) + dx + ws - 1."""
    yy, xx = torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")
    y, x = yy.flatten(), xx.flatten()
    return (y[:, None] - y[None, :] + ws - 1) * (2 * ws - 1) + (x[:, None] - x[None, :] + ws - 1)


def _swin_mask(side: int, ws: int) -> torch.Tensor:
    """Shifted-window mask of a ``side x side`` map (shift ws // 2): -100 between tokens of different regions."""
    shift = ws // 2
    bands = torch.zeros(side, dtype=torch.long)
    bands[side - ws:] = 1
    bands[side - shift:] = 2
    region = (bands[:, None] * 3 + bands[None, :]).view(side // ws, ws, side // ws, ws).permute(0, 2, 1, 3)
    region = region.reshape(-1, ws * ws)
    return torch.where(region[:, :, None] == region[:, None, :], 0.0, -100.0)


def fill_tensor(key: str, shape: tuple[int, ...], dtype: str, seed: int = FILL_SEED) -> torch.Tensor:
    """The value of one tensor of the official layout (the fill rule).

    Buffers, as the official constructor makes them: ``*relative_position_index`` / ``*attn_mask`` (Swin, from
    the shape: window = sqrt of the tokens per window, map side = window * sqrt of the windows), ``lvl_1L``
    (scale of every token), ``attn_bias_for_masking`` (0 / -inf block-causal), ``*zero_k_bias`` and
    ``quantize.ema_vocab_hit_SV`` (zeros). Parameters are uniform with mean ``m`` and standard deviation ``s``:
    1-D ``*.weight`` (normalisation scales) m = 1, s = 0.1; other tensors of at most one dimension m = 0,
    s = 0.1; the rest m = 0, s = 1 / sqrt(product of the trailing dimensions).
    """
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "relative_position_index":
        return _swin_index(math.isqrt(shape[0]))
    if leaf == "attn_mask":
        ws = math.isqrt(shape[1])
        return _swin_mask(ws * math.isqrt(shape[0]), ws)
    if key == "lvl_1L":
        return torch.cat([torch.full((p * p,), i) for i, p in enumerate(PATCH_NUMS)]).view(shape)
    if key == "attn_bias_for_masking":
        lvl = torch.cat([torch.full((p * p,), i) for i, p in enumerate(PATCH_NUMS)])
        return torch.where(lvl[:, None] >= lvl[None, :], 0.0, -torch.inf).view(shape)
    if leaf in ("zero_k_bias", "ema_vocab_hit_SV"):
        return torch.zeros(shape)
    if math.prod(shape) == 0:  # Swin's PatchEmbed.proj.weight (C, 0, 4, 4): built but never used
        return torch.zeros(shape, dtype=getattr(torch, dtype))
    if len(shape) <= 1:
        mean, std = (1.0 if leaf == "weight" else 0.0), 0.1
    else:
        mean, std = 0.0, 1.0 / math.sqrt(math.prod(shape[1:]))
    u = _hash_unit(key, math.prod(shape), seed)
    return ((u * 2 - 1) * (std * math.sqrt(3)) + mean).view(shape).to(getattr(torch, dtype))


def fill_state_dict(layout: list[list], seed: int = FILL_SEED) -> dict[str, torch.Tensor]:
    """The official state dict of ``layout`` (``[[key, shape, dtype, kind], ...]``) filled by :func:`fill_tensor`."""
    return {k: fill_tensor(k, tuple(shape), dtype, seed) for k, shape, dtype, _ in layout}


def test_image() -> np.ndarray:
    """The fixed degraded input (H 200, W 300, RGB uint8, no RNG): a smooth scene with a disc, stripes and a
    hash-noise overlay, so that the resize to 256x256 changes the aspect and every channel differs."""
    H, W = 200, 300
    y, x = np.meshgrid(np.linspace(0, 1, H), np.linspace(0, 1, W), indexing="ij")
    disc = ((y - 0.45) ** 2 + (x - 0.6) ** 2 < 0.06).astype(np.float64)
    stripes = 0.5 + 0.5 * np.sin(40 * x + 10 * y)
    rgb = np.stack([0.2 + 0.6 * x + 0.2 * disc, 0.3 + 0.4 * y * stripes, 0.8 - 0.5 * x * y + 0.1 * disc], -1)
    noise = _hash_unit("noise", H * W * 3, 7).numpy().reshape(H, W, 3) - 0.5
    return (np.clip(rgb + 0.15 * noise, 0, 1) * 255).round().astype(np.uint8)


# ------------------------------------------------------------------------------------------- the official side
def _stub(name: str, **attrs) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    sys.modules[name] = mod
    if "." in name:
        parent, leaf = name.rsplit(".", 1)
        setattr(sys.modules[parent], leaf, mod)
    return mod


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
        return True
    except Exception:  # e.g. a CUDA torchvision build next to a CPU torch raises RuntimeError
        for m in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            del sys.modules[m]
        return False


def import_official(checkout: Path) -> types.ModuleType:
    """``archs.varformer_arch`` of an official checkout, with what it lacks supplied (module docstring)."""
    root = checkout / "basicsr"
    if not (root / "archs" / "varformer_arch.py").is_file():
        raise SystemExit(f"{checkout}: not a Varformer checkout (no basicsr/archs/varformer_arch.py)")
    sys.path.insert(0, str(root))
    _stub("dist", get_device=lambda: torch.device("cpu"))
    if not _importable("timm.layers"):
        class DropPath(torch.nn.Module):
            def __init__(self, p: float = 0.0):
                super().__init__()
                assert p == 0.0, "the stub supports drop_path 0 only (the official test's value)"

            def forward(self, x):
                return x

        _stub("timm")
        _stub("timm.layers", trunc_normal_=torch.nn.init.trunc_normal_, DropPath=DropPath,
              to_2tuple=lambda x: tuple(x) if isinstance(x, (tuple, list)) else (x, x))
    if not _importable("torchvision.transforms.functional"):
        def normalize(t, mean, std, inplace=False):
            m, s = (torch.as_tensor(v, dtype=t.dtype).view(-1, 1, 1) for v in (mean, std))
            return t.sub_(m).div_(s) if inplace else (t - m) / s

        _stub("torchvision")
        _stub("torchvision.transforms")
        _stub("torchvision.transforms.functional", normalize=normalize)
        _stub("torchvision.utils", make_grid=None)
    if not _importable("einops"):
        _stub("einops", rearrange=None)  # used by TWAM only (dec_adjust, off in test.yml)
    archs = types.ModuleType("archs")
    archs.__path__ = [str(root / "archs")]
    sys.modules["archs"] = archs
    vq = importlib.import_module("archs.var_vqgan_arch")

    class Undefined(torch.nn.Module):
        def __init__(self, *a, **k):
            raise RuntimeError("MainDecoder / MainDecoder9 are not defined in the official code")

    vq.RACMoudle4 = importlib.import_module("archs.RAC").RcaMoudle4
    vq.MainDecoder = vq.MainDecoder9 = Undefined
    return importlib.import_module("archs.varformer_arch")


def record(checkout: Path, out: Path, checkpoint: Path | None) -> None:
    """Build the official model, fill it, run the official test steps on :func:`test_image`, write the records."""
    import cv2
    import yaml

    t0 = time.perf_counter()
    va = import_official(checkout)
    from utils import tensor2img  # the official package's

    from torchvision.transforms.functional import normalize

    opt = yaml.safe_load((checkout / "basicsr" / "options" / "test.yml").read_text())
    net = dict(opt["network_g"])
    net.pop("type")
    net.pop("var_cross_c", None)
    net.update(vqgan_path=None, var_path=None)
    model = va.VarFormer2(**net)
    params = {n for n, _ in model.named_parameters()}
    layout, sd = [], model.state_dict()
    with torch.no_grad():
        for k, t in sd.items():
            v = fill_tensor(k, tuple(t.shape), str(t.dtype).removeprefix("torch."))
            if k not in params and not torch.equal(v, t):
                raise SystemExit(f"the fill rule does not reproduce the official buffer {k}")
            t.copy_(v)
            layout.append([k, list(t.shape), str(t.dtype).removeprefix("torch."), "param" if k in params else "buffer"])
    print(f"official model built and filled: {sum(t.numel() for n, t in sd.items() if n in params):,} parameters "
          f"({time.perf_counter() - t0:.0f} s)", flush=True)
    if checkpoint is not None:
        torch.save({"params": sd, "params_ema": sd}, checkpoint)  # BasicSR's layout (one storage for both)
        print(f"wrote {checkpoint}", flush=True)

    rec: dict[str, list] = {"logits": [], "idx": [], "lq_idx": [], "halves_equal": []}
    sample = va.sample_with_top_k_top_p_

    def sample_rec(logits_BlV, **kw):
        rec["logits"].append(logits_BlV.clone())
        idx = sample(logits_BlV, **kw)
        rec["idx"].append(idx[:, :, 0].clone())
        return idx

    va.sample_with_top_k_top_p_ = sample_rec
    cls = type(model)
    to_idx, get_logits, fhat_to_img = cls.encoder_out_to_idxBl, cls.get_logits, cls.fhat_to_img

    def to_idx_rec(self, f, *a, **k):
        out = to_idx(self, f, *a, **k)
        rec["lq_idx"] = [i.clone() for i in out]
        return out

    def get_logits_rec(self, h, cond):
        out = get_logits(self, h, cond)
        B = out.shape[0] // 2
        rec["halves_equal"].append(bool(torch.equal(out[:B], out[B:])))
        return out

    def fhat_rec(self, *a, f_hat, **k):
        rec["f_hat"] = f_hat.clone()
        return fhat_to_img(self, *a, f_hat=f_hat, **k)

    cls.encoder_out_to_idxBl, cls.get_logits, cls.fhat_to_img = to_idx_rec, get_logits_rec, fhat_rec

    out.mkdir(parents=True, exist_ok=True)
    png = out / "input.png"
    cv2.imwrite(str(png), test_image()[:, :, ::-1])  # RGB -> BGR for cv2
    # --- the official test script's steps (basicsr/varformer_test.py)
    img = cv2.imread(str(png), cv2.IMREAD_UNCHANGED)
    img = img.astype(np.float32) / 255.0
    img = cv2.resize(img, (opt["input_size"], opt["input_size"]), interpolation=cv2.INTER_LINEAR)
    if img.shape[2] == 3:
        img = img[:, :, [2, 1, 0]]
    img = torch.from_numpy(np.ascontiguousarray(np.transpose(img, (2, 0, 1)))).float()
    normalize(img, opt["mean"], opt["std"], inplace=True)
    model.eval()
    t1 = time.perf_counter()
    with torch.no_grad():
        output, _ = model(img.unsqueeze(0))
    seconds = time.perf_counter() - t1
    out_u8_bgr = tensor2img(output.detach().cpu())
    # ---
    logits = torch.cat(rec["logits"], 1)[0]
    top2 = logits.topk(2, dim=-1).values
    n_kept = sum(p * p for p in PATCH_NUMS[:LOGIT_SCALES])
    np.savez(out / "official.npz",
             model_input=img.numpy(), output=output[0].numpy(), output_u8_bgr=out_u8_bgr,
             indices=torch.cat(rec["idx"], 1)[0].numpy().astype(np.int16),
             lq_indices=torch.cat(rec["lq_idx"], 1)[0].numpy().astype(np.int16),
             logits_first=logits[:n_kept].numpy(), top2=top2.numpy(), f_hat=rec["f_hat"][0].numpy(),
             seconds=np.float64(seconds))
    (out / "layout.json").write_text("[\n" + ",\n".join(json.dumps(e) for e in layout) + "\n]\n")
    gap = (top2[:, 0] - top2[:, 1]).min().item()
    print(f"official forward {seconds:.1f} s; CFG halves bit-equal at every scale: {all(rec['halves_equal'])}; "
          f"smallest top-2 logit gap {gap:.3g}; wrote {out}/layout.json, official.npz, input.png", flush=True)


# ------------------------------------------------------------------------------------------- the comparison
def compare(official: Path, checkpoint: Path) -> dict[str, float]:
    """Load ``checkpoint`` with scalear, run it on ``official/input.png`` and print the differences."""
    from scalear.domains.restoration.varformer_checkpoints import load_official_varformer
    from scalear.domains.restoration.varformer_official import run_official_test

    ref = np.load(official / "official.npz")
    t0 = time.perf_counter()
    model = load_official_varformer(checkpoint)
    print(f"scalear loaded {checkpoint} strictly ({time.perf_counter() - t0:.0f} s)", flush=True)
    t1 = time.perf_counter()
    res = run_official_test(model, official / "input.png")
    seconds = time.perf_counter() - t1
    return report(res, ref, seconds)


def report(res, ref, seconds: float) -> dict[str, float]:
    """Print and return the differences between a scalear result and the official record."""
    diffs = {
        "lq token mismatches": int((res.lq_indices.numpy() != ref["lq_indices"]).sum()),
        "VAR token mismatches": int((res.indices.numpy() != ref["indices"]).sum()),
        "model input": float(np.abs(res.model_input.numpy() - ref["model_input"]).max()),
        f"logits (scales 1-{LOGIT_SCALES})": float(np.abs(res.logits[: len(ref["logits_first"])].numpy()
                                                          - ref["logits_first"]).max()),
        "top-2 logits": float(np.abs(res.logits.topk(2, dim=-1).values.numpy() - ref["top2"]).max()),
        "f_hat": float(np.abs(res.f_hat.numpy() - ref["f_hat"]).max()),
        "output [0, 1]": float(np.abs(res.output.numpy() - ref["output"]).max()),
        "output 8-bit levels": int(np.abs(res.output_u8_bgr.astype(int) - ref["output_u8_bgr"].astype(int)).max()),
    }
    gap = ref["top2"][:, 0] - ref["top2"][:, 1]
    print(f"official forward {float(ref['seconds']):.1f} s, scalear {seconds:.1f} s; smallest official top-2 gap "
          f"{gap.min():.3g}")
    for k, v in diffs.items():
        print(f"  {k:<24} {v:.3g}" if isinstance(v, float) else f"  {k:<24} {v}")
    return diffs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--official-checkout", type=Path, default=None,
                   help=f"local checkout of github.com/siywang541/Varformer (tested at {OFFICIAL_HEAD})")
    p.add_argument("--official-python", default=sys.executable,
                   help="interpreter with torch, numpy, opencv and pyyaml for the official side (default: this one)")
    p.add_argument("--record", type=Path, default=None, help="only run the official side and write its records here")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="also write (with --record) or keep the net_g file here")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.official_checkout is None:
        print("parity_varformer: no --official-checkout given; nothing to compare (clone "
              f"github.com/siywang541/Varformer at {OFFICIAL_HEAD} and pass its path).")
        return 0
    if a.record is not None:
        record(a.official_checkout.expanduser(), a.record, a.checkpoint)
        return 0
    with tempfile.TemporaryDirectory(prefix="varformer_parity_") as tmp:
        ckpt = a.checkpoint or Path(tmp) / "net_g_last.pth"
        cmd = [a.official_python, __file__, "--official-checkout", str(a.official_checkout.expanduser()),
               "--record", tmp, "--checkpoint", str(ckpt)] + (["--threads", str(a.threads)] if a.threads else [])
        subprocess.run(cmd, check=True)
        compare(Path(tmp), ckpt)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
