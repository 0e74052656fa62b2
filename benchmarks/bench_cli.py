"""Where the prediction commands spend their time: per image, the model's forward pass against the whole command
(reading, the model, colour maps, PNG / npy / JSON writing), and the wall time of ``--help`` and of whole calls.

``depth predict`` runs the tiny DAR and ``restore`` the tiny Varformer, both exported from a seeded initialisation
(DAR's weights are perturbed away from it, whose depth is nearly constant and would make the PNGs trivially
compressible), on scikit-image's photographs resized to ``--size`` (480x640 by default, NYU's). "model" is the
forward pass alone on a batch of ``--batch-size`` images (``predict_depth`` / ``restore_image``), "command" is
:func:`~scalear.domains.depth.predict.predict_files` / :func:`~scalear.domains.restoration.predict.restore_files`
over ``--images`` files in this process (model loaded, imports done); "overhead" is their difference, what the
command adds to the model. ``depth predict`` is timed with its pictures and with ``--no-pictures`` (the depth files
alone). The last rows time whole commands in fresh interpreters: ``--help`` and one call on one
image (imports, model loading, the work).

    python benchmarks/bench_cli.py                      # 8 images of 480x640, batch 1 and 4
    python benchmarks/bench_cli.py --threads 1 --images 16 --batch-sizes 1,8
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _common import environment, fmt_ms, image_size, print_table, setup, synchronize


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=image_size, default=(480, 640), help="input H,W (default: 480,640)")
    p.add_argument("--images", type=int, default=8, help="input files per command (default: 8)")
    p.add_argument("--batch-sizes", default="1,4", help="--batch-size values, comma-separated (default: 1,4)")
    p.add_argument("--commands", default="depth,restore", help="which commands: depth, restore (default: both)")
    p.add_argument("--no-process", action="store_true", help="skip the fresh-interpreter rows (--help, whole calls)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per cell, the least counts (default: 3)")
    args = p.parse_args(argv)
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b]
    args.commands = [c for c in args.commands.split(",") if c]
    if args.images < 1 or not args.batch_sizes or min(args.batch_sizes) < 1:
        p.error("--images and every --batch-sizes value must be >= 1")
    if bad := set(args.commands) - {"depth", "restore"}:
        p.error(f"--commands: unknown {sorted(bad)}; choose from depth, restore")
    return args


def write_photos(folder: Path, n: int, size: tuple[int, int]) -> list[Path]:
    """``n`` PNGs of scikit-image's photographs resized to ``size``."""
    import skimage.data
    import skimage.transform
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    names = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field")
    paths = []
    for i in range(n):
        rgb = getattr(skimage.data, names[i % len(names)])()
        rgb = (skimage.transform.resize(rgb, size, anti_aliasing=True) * 255).round().astype(np.uint8)
        paths.append(folder / f"{i:03d}.png")
        Image.fromarray(rgb).save(paths[-1])
    return paths


def export_models(folder: Path, commands: list[str]) -> dict[str, Path]:
    from scalear.io import save_pretrained

    out = {}
    if "depth" in commands:
        from scalear.domains.depth.dar import create_dar

        torch.manual_seed(0)
        dar = create_dar("tiny")
        with torch.no_grad():  # away from the initialisation's nearly constant depth
            for p in dar.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        out["depth"] = save_pretrained(dar, folder / "dar_tiny")
    if "restore" in commands:
        from scalear.domains.restoration.varformer import create_varformer

        torch.manual_seed(0)
        out["restore"] = save_pretrained(create_varformer("tiny"), folder / "varformer_tiny")
    return out


def measure(command: str, model_dir: Path, inputs: list[Path], batch: int, work: Path, args: argparse.Namespace,
            device: torch.device, pictures: bool = True) -> list[str]:
    """One row: model and command seconds per image, the overhead and its ratio to the model (``pictures=False``:
    depth predict's ``--no-pictures``)."""
    from PIL import Image

    images = [np.asarray(Image.open(p).convert("RGB")) for p in inputs[:batch]]
    x_B3HW = torch.from_numpy(np.stack(images)).to(device).permute(0, 3, 1, 2).float().div(255)
    if command == "depth":
        from scalear.domains.depth.predict import predict_files
        from scalear.domains.depth.models import load_predictor

        model = load_predictor(model_dir, map_location=device)

        def forward() -> None:
            with torch.no_grad():
                model.predict_depth(x_B3HW)

        def run() -> None:
            predict_files(model, inputs, out, device=device, progress=False, batch_size=batch, pictures=pictures)
    else:
        from scalear.domains.restoration.predict import load_restorer, restore_files, restore_image

        model = load_restorer(model_dir, device)

        def forward() -> None:
            with torch.no_grad():
                restore_image(model, x_B3HW)

        def run() -> None:
            restore_files(model, inputs, out, device=device, progress=False, batch_size=batch)

    out = work / f"{command}_b{batch}"
    model_s = best_of(forward, device, args.repeats) / batch
    command_s = best_of(run, device, args.repeats) / len(inputs)
    shutil.rmtree(out, ignore_errors=True)
    over = command_s - model_s
    name = f"scalear {command}{' predict' if command == 'depth' else ''}{'' if pictures else ' --no-pictures'}"
    return [name, f"tiny, {args.size[0]}x{args.size[1]}",
            str(batch), fmt_ms(model_s), fmt_ms(command_s), fmt_ms(over), f"{over / model_s:.2f}x"]


def best_of(fn, device: torch.device, repeats: int) -> float:
    """Least seconds of ``fn`` over ``repeats`` runs after a warm-up run (the least: other load only adds time)."""
    fn()
    times = []
    for _ in range(max(repeats, 1)):
        synchronize(device)
        t = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t)
    return min(times)


def wall(argv: list[str], repeats: int) -> float:
    """Least wall seconds of ``argv`` in a fresh interpreter over ``repeats`` runs."""
    best = float("inf")
    for _ in range(max(repeats, 1)):
        t = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True)
        best = min(best, time.perf_counter() - t)
    return best


def main(argv: list[str] | None = None) -> list[list[str]]:
    args = parse_args(argv)
    device = setup(args)
    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory(prefix="bench_cli_") as tmp:
        work = Path(tmp)
        inputs = write_photos(work / "photos", args.images, args.size)
        models = export_models(work, args.commands)
        for command in args.commands:
            for pictures in (True, False) if command == "depth" else (True,):
                for batch in args.batch_sizes:
                    rows.append(measure(command, models[command], inputs, batch, work, args, device, pictures))
        print_table("Prediction commands: model vs command time per image",
                    ["command", "model", "batch", "model ms/img", "command ms/img", "overhead ms/img", "overhead/model"],
                    rows, environment(device, "fp32") + f" | {args.images} images, least of {args.repeats} warm runs",
                    text_columns=2)
        if args.no_process:
            return rows
        scalear = [sys.executable, "-m", "scalear.cli"]
        calls = [("scalear --help", [*scalear, "--help"]), ("scalear depth --help", [*scalear, "depth", "--help"]),
                 ("scalear restore --help", [*scalear, "restore", "--help"])]
        for command in args.commands:
            verb = ["depth", "predict"] if command == "depth" else ["restore"]
            calls.append((f"scalear {' '.join(verb)}, 1 image (imports, loading, work)",
                          [*scalear, *verb, "--model", str(models[command]), "--input", str(inputs[0]), "--out",
                           str(work / f"call_{command}"), "--quiet", "--device", str(device)]))
        wall_rows = [[name, fmt_ms(wall(cmd, args.repeats))] for name, cmd in calls]
        print_table("Whole commands in a fresh interpreter", ["command", "wall ms"], wall_rows,
                    f"least of {args.repeats} runs; torch alone takes "
                    f"{fmt_ms(wall([sys.executable, '-c', 'import torch'], args.repeats))} ms to import here")
        rows += wall_rows
    return rows


if __name__ == "__main__":
    main()
