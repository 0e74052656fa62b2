"""Per-image sampling time and peak memory with the KV cache vs recomputing every coarser scale at each scale.

Both paths run :func:`scalear.sampling.sample` with VAR's recipe (CFG 1.5, which doubles the batch, top-k 900,
top-p 0.96) on randomly initialised models: timing does not depend on the weights. ``use_cache=False`` reruns
the transformer over all tokens of scales ``0..k`` at scale ``k``, the baseline the KV cache is measured against.

    python benchmarks/bench_sampling.py          # tiny, small, var-d16 x digits, 256 on CPU: 1-3 min on 2 cores
    python benchmarks/bench_sampling.py --sizes tiny,small --schedule digits --threads 1
    python benchmarks/bench_sampling.py --sizes var-d16,var-d20,var-d24 --schedule 256,512 --batch 16 \\
        --device cuda --dtype bf16

Every size (a transformer preset: ``tiny``, ``small``, ``var-d16`` ... ``var-d30``) runs at every schedule, with
the schedule's vocabulary, latent width and number of classes. ``--cuda-graphs`` (CUDA) also times the cached
sampler with each scale's step replayed as a CUDA graph (``sample(..., cuda_graphs=True)``, captured in the warm-up
run) and checks that it draws the eager sampler's tokens.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch

from _common import (add_common_args, autocast, environment, fmt_ms, fmt_params, measure_cells, memory_method,
                     peak_memory, print_table, setup, time_runs)
from scalear.quant import MultiScaleVQ
from scalear.sampling import sample
from scalear.schedules import ScaleSchedule
from scalear.transformer import TRANSFORMER_PRESETS, create_transformer


@dataclass(frozen=True)
class ScheduleSpec:
    schedule: ScaleSchedule
    vocab_size: int
    latent_dim: int
    num_classes: int


#: ``digits``: the core quickstart's digits tokenizer (configs/core/digits_tokenizer.yaml); ``256``/``512``: VAR's.
SCHEDULES: dict[str, ScheduleSpec] = {
    "digits": ScheduleSpec(ScaleSchedule.square((1, 2, 3, 4)), 128, 8, 10),
    "256": ScheduleSpec(ScaleSchedule.var_2d(256), 4096, 32, 1000),
    "512": ScheduleSpec(ScaleSchedule.var_2d(512), 4096, 32, 1000),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="tiny,small,var-d16",
                   help=f"comma-separated transformer presets, from {sorted(TRANSFORMER_PRESETS)} (default: %(default)s)")
    p.add_argument("--schedule", default="digits,256",
                   help=f"comma-separated schedules, from {sorted(SCHEDULES)} (default: %(default)s)")
    p.add_argument("--batch", type=int, default=1, help="images per sampling call (default: 1)")
    p.add_argument("--cuda-graphs", action="store_true", help="also time the cached sampler with CUDA graphs (CUDA)")
    add_common_args(p)
    args = p.parse_args(argv)
    if args.cuda_graphs and not args.device.startswith("cuda"):
        p.error("--cuda-graphs needs --device cuda")
    for name, known in (("sizes", TRANSFORMER_PRESETS), ("schedule", SCHEDULES)):
        bad = [v for v in getattr(args, name).split(",") if v not in known]
        if bad:
            p.error(f"--{name}: unknown {bad}; choose from {sorted(known)}")
    if args.batch < 1:
        p.error("--batch must be >= 1")
    return args


def measure(size: str, sched_name: str, args: argparse.Namespace, device: torch.device) -> tuple[list[str], dict]:
    """One table row: time per image (s) and peak memory (MiB) with and without the KV cache."""
    spec = SCHEDULES[sched_name]
    model = create_transformer(size, schedule=spec.schedule, vocab_size=spec.vocab_size,
                               latent_dim=spec.latent_dim, num_classes=spec.num_classes).to(device).eval()
    quantizer = MultiScaleVQ(spec.vocab_size, spec.latent_dim, spec.schedule).to(device).eval()
    labels_B = torch.arange(args.batch, device=device) % spec.num_classes

    def run(use_cache: bool, cuda_graphs: bool = False) -> list[torch.Tensor]:
        gen = torch.Generator(device).manual_seed(0)
        with autocast(device, args.dtype):
            return sample(model, quantizer, args.batch, label_B=labels_B, guidance=1.5, top_k=900, top_p=0.96,
                          generator=gen, use_cache=use_cache, cuda_graphs=cuda_graphs).indices

    secs, mib = {}, {}
    for use_cache in (True, False):
        with peak_memory(device) as peak:
            secs[use_cache] = time_runs(lambda: run(use_cache), device, args.min_time, args.repeats) / args.batch
        mib[use_cache] = peak[0]
    s = spec.schedule
    row = [size, f"{sched_name}, {s.num_scales} scales", fmt_params(model.num_params()), str(s.total_tokens),
           fmt_ms(secs[True]), fmt_ms(secs[False]), f"{secs[False] / secs[True]:.2f}x",
           f"{mib[True]:,.0f}", f"{mib[False]:,.0f}"]
    result = dict(size=size, schedule=sched_name, sec_cached=secs[True], sec_recompute=secs[False],
                  mib_cached=mib[True], mib_recompute=mib[False])
    if args.cuda_graphs:
        from scalear.cuda_graphs import release

        same = all(torch.equal(a, b) for a, b in zip(run(True), run(True, cuda_graphs=True)))  # captures too
        graphed = time_runs(lambda: run(True, cuda_graphs=True), device, args.min_time, args.repeats) / args.batch
        release(model)
        row += [fmt_ms(graphed), f"{secs[True] / graphed:.2f}x", "yes" if same else "NO"]
        result.update(sec_graphed=graphed, graphed_same_tokens=same)
    return row, result


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the benchmark, print the table and return its numbers."""
    args = parse_args(argv)
    device = setup(args)
    cells = [(size, sched) for sched in args.schedule.split(",") for size in args.sizes.split(",")]
    rows, results = measure_cells(measure, cells, args, device, ("tiny", "digits"))
    columns = ["model", "schedule", "params", "tokens", "cached\nms/img", "recompute\nms/img", "speed-up",
               "cached\npeak MiB", "recompute\npeak MiB"]
    if args.cuda_graphs:
        columns += ["CUDA graphs\nms/img", "graphs\nspeed-up", "same\ntokens"]
    caption = (f"{environment(device, args.dtype)}\nbatch {args.batch} (x2 with CFG), CFG 1.5, top-k 900, top-p 0.96; "
               f"median of up to {args.repeats} runs after a warm-up\npeak MiB: {memory_method(device)}")
    print_table("Sampling: KV cache vs recomputing the prefix", columns, rows, caption, text_columns=2)
    return results


if __name__ == "__main__":
    main()
