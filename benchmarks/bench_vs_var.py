"""scalear's sampler against VAR's own ``autoregressive_infer_cfg``, on the same weights, in one run.

Builds VAR's tokenizer and transformer from a local checkout of the official code (FoundationVision/VAR; its
``huggingface_hub`` import is stubbed when that package is missing), fills them from a seed, saves them in VAR's
checkpoint layout, loads those files into scalear (:func:`scalear.var_checkpoints.load_var`) and times class-
conditional sampling of images with both (tokens, f_hat and the decoded image), with VAR's demo recipe: CFG 1.5,
top-k 900, top-p 0.96, seeded. Prints both times, their ratio, whether every scale's tokens are the same and how
far the images differ.

Timing: one warm-up call each, then ``--repeats`` rounds that each time VAR and scalear back to back (the order
alternating), so that a load change on the machine hits both; the medians are reported. scalear's time is also
split into sampling (tokens and f_hat) and decoding. VAR's sampler decodes inside: its sampling is timed by a
call of its own whose last step, the decoder, is swapped for a no-op (``fhat_to_img`` returning ``f_hat``), and its
decoder on its own on the same ``f_hat`` (the sampling speed-up column compares the two samplers alone).

    python benchmarks/bench_vs_var.py --var-checkout ~/src/VAR --depth 16 --batch 4 --threads 1
Without ``--var-checkout`` the script says so and exits 0 (it is a developer-side comparison).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

import torch

from _common import add_common_args, environment, print_table, setup, synchronize


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--var-checkout", default=None, help="a local checkout of github.com/FoundationVision/VAR")
    p.add_argument("--depth", default="16", help="comma-separated VAR depths (default: %(default)s)")
    p.add_argument("--batch", type=int, default=4, help="images per call (default: %(default)s)")
    p.add_argument("--guidance", "--cfg", type=float, default=1.5, help="classifier-free guidance (VAR's cfg)")
    p.add_argument("--top-k", type=int, default=900)
    p.add_argument("--top-p", type=float, default=0.96)
    p.add_argument("--seed", type=int, default=0)
    add_common_args(p)
    args = p.parse_args(argv)
    args.depth = [int(d) for d in args.depth.split(",")]
    return args


def import_var(checkout: Path):
    """VAR's ``models`` package from ``checkout`` (its ``dist.py`` sits beside it)."""
    if not (checkout / "models" / "var.py").is_file():
        sys.exit(f"--var-checkout {checkout}: no models/var.py (not a FoundationVision/VAR checkout)")
    try:
        import huggingface_hub  # noqa: F401
    except ImportError:  # only PyTorchModelHubMixin is used, for from_pretrained on the Hub
        sys.modules["huggingface_hub"] = types.SimpleNamespace(PyTorchModelHubMixin=object)
    sys.path.insert(0, str(checkout))
    import models  # noqa: E402

    return models


def build_pair(models, depth: int, folder: Path, device: torch.device):
    """VAR's VQVAE + VAR-d<depth> with seeded weights, saved as VAR's files, and scalear's models loaded from them."""
    from scalear.var_checkpoints import load_var

    torch.manual_seed(depth)
    vae, var = models.build_vae_var(device=device, depth=depth, flash_if_available=False, fused_if_available=False)
    with torch.no_grad():  # build_vae_var skips the tokenizer's init (memory is uninitialised): seeded values
        for name, p in vae.named_parameters():
            if p.ndim == 1:
                p.fill_(1.0 if name.endswith("weight") else 0.0)  # norms' scales and every bias
            else:  # unit-variance activations (tiny weights would decay into slow denormal floats)
                p.copy_(torch.randn_like(p) / (p[0].numel() ** 0.5))
    torch.save(vae.state_dict(), folder / "vae_ch160v4096z32.pth")
    torch.save(var.state_dict(), folder / f"var_d{depth}.pth")
    tok, model = load_var(folder / "vae_ch160v4096z32.pth", folder / f"var_d{depth}.pth", depth)
    return var.eval(), tok.to(device).eval(), model.to(device).eval()


def var_tokens_equal(models, run_var, model, tok, labels, args) -> bool:
    """Whether VAR's sampled tokens (recorded from its ``sample_with_top_k_top_p_``) equal scalear's, every scale."""
    from scalear.sampling import sample

    var_module, recorded = sys.modules["models.var"], []
    original = var_module.sample_with_top_k_top_p_

    def record(*a, **kw):
        out = original(*a, **kw)
        recorded.append(out[:, :, 0].clone())
        return out

    var_module.sample_with_top_k_top_p_ = record
    try:
        run_var()
    finally:
        var_module.sample_with_top_k_top_p_ = original
    with torch.inference_mode():
        ours = sample(model, tok.quantize, args.batch, label_B=labels, guidance=args.guidance, top_k=args.top_k,
                      top_p=args.top_p, generator=torch.Generator(labels.device).manual_seed(args.seed)).indices
    return len(ours) == len(recorded) and all(torch.equal(a, b) for a, b in zip(ours, recorded))


def time_interleaved(fns: dict, device: torch.device, repeats: int) -> dict[str, float]:
    """Median seconds per call of each function of ``fns``, timed in rounds that call every one once (the order
    alternating between rounds), after one warm-up call each."""

    def once(fn) -> float:
        synchronize(device)
        t = time.perf_counter()
        fn()
        synchronize(device)
        return time.perf_counter() - t

    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(max(repeats, 1)):
        for name in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
            times[name].append(once(fns[name]))
    return {name: statistics.median(ts) for name, ts in times.items()}


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    if not args.var_checkout:
        print("bench_vs_var: no --var-checkout given; nothing to compare (see --help)")
        return []
    device = setup(args)
    models = import_var(Path(args.var_checkout).expanduser())
    from scalear.sampling import sample

    rows, results = [], []
    labels = (torch.arange(args.batch) * 97 % 1000).to(device)
    for depth in args.depth:
        print(f"building VAR-d{depth} ...", file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            var, tok, model = build_pair(models, depth, Path(tmp), device)

        def run_var() -> torch.Tensor:
            with torch.inference_mode():
                return var.autoregressive_infer_cfg(args.batch, labels, g_seed=args.seed, cfg=args.guidance,
                                                    top_k=args.top_k, top_p=args.top_p)

        def run_tokens():
            with torch.inference_mode():
                return sample(model, tok.quantize, args.batch, label_B=labels, guidance=args.guidance, top_k=args.top_k,
                              top_p=args.top_p, generator=torch.Generator(device).manual_seed(args.seed))

        def decode(vae: torch.nn.Module, f_hat: torch.Tensor) -> torch.Tensor:  # autoregressive_infer_cfg's last step
            with torch.inference_mode():
                return vae.fhat_to_img(f_hat).add_(1).mul_(0.5)

        def run_scalear() -> torch.Tensor:
            return decode(tok, run_tokens().f_hat)

        def run_var_tokens() -> torch.Tensor:
            """VAR's sampler without its last step, the decoder (an instance attribute shadows ``fhat_to_img``)."""
            vae = var.vae_proxy[0]
            vae.fhat_to_img = lambda f_hat: f_hat
            try:
                return run_var()
            finally:
                del vae.fhat_to_img

        same_tokens = var_tokens_equal(models, run_var, model, tok, labels, args)
        same = (run_var() - run_scalear()).abs().max().item()
        print(f"timing VAR-d{depth} ...", file=sys.stderr, flush=True)
        f_hat = run_tokens().f_hat
        t = time_interleaved({"var": run_var, "scalear": run_scalear, "var_tokens": run_var_tokens,
                              "tokens": run_tokens, "decode": lambda: decode(tok, f_hat),
                              "var_decode": lambda: decode(var.vae_proxy[0], f_hat)}, device, args.repeats)
        t = {k: v / args.batch for k, v in t.items()}
        rows.append([f"VAR-d{depth}", f"{t['var'] * 1e3:,.0f}", f"{t['var_tokens'] * 1e3:,.0f} + {t['var_decode'] * 1e3:,.0f}",
                     f"{t['scalear'] * 1e3:,.0f}", f"{t['tokens'] * 1e3:,.0f} + {t['decode'] * 1e3:,.0f}",
                     f"{t['var'] / t['scalear']:.2f}x", f"{t['var_tokens'] / t['tokens']:.2f}x",
                     "yes" if same_tokens else "NO", f"{same:.1e}"])
        results.append(dict(depth=depth, sec_var=t["var"], sec_var_tokens=t["var_tokens"], sec_var_decode=t["var_decode"],
                            sec_scalear=t["scalear"], sec_tokens=t["tokens"], sec_decode=t["decode"],
                            same_tokens=same_tokens, max_image_diff=same))
    caption = (f"{environment(device, 'fp32')}\nbatch {args.batch} (x2 with CFG), CFG {args.guidance}, top-k {args.top_k}, "
               f"top-p {args.top_p}, seed {args.seed}; sampling + decoding to images; medians of {args.repeats} "
               "interleaved rounds after a warm-up")
    print_table("Sampling: scalear vs VAR's autoregressive_infer_cfg (same weights)",
                ["model", "VAR ms/img", "VAR: sample\n+ decode", "scalear ms/img", "scalear: sample\n+ decode",
                 "speed-up", "sampling\nspeed-up", "same tokens", "max |image\ndiff|"], rows, caption)
    return results


if __name__ == "__main__":
    main()
