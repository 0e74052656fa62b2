"""``scalear quickstart``: every part end to end on built-in data, written to one folder with a report.

The core part trains VAR's two stages on scikit-learn's 1,797 real handwritten digits (8x8, upsampled to
16x16): the multi-scale VQ-VAE tokenizer, then the class-conditional next-scale transformer, both through the
same ``LightningCLI`` configs a user runs (``configs/core/digits_*.yaml``). It then samples a grid per class
with classifier-free guidance and reports how often a classifier trained on the real digits recognises each
generated digit as its class (chance: 10%). Domains add their parts through the ``scalear.quickstart`` entry
points (``scalear quickstart --domain NAME`` runs one).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from importlib.resources import files
from pathlib import Path

import torch

from scalear.io import atomic_write, from_pretrained
from scalear.sampling import sample
from scalear.viz import plot_training_curves, save_image_grid

#: sampling settings of the digits report
DIGITS_SAMPLING = dict(guidance=3.0, top_k=0, top_p=0.0, temperature=1.0)


def config_path(domain: str, name: str) -> Path:
    """Path of a packaged preset ``configs/<domain>/<name>.yaml``."""
    path = Path(str(files("scalear.configs") / domain / f"{name}.yaml"))
    if not path.is_file():
        raise FileNotFoundError(f"preset {domain}/{name}.yaml not found at {path}")
    return path


@dataclass
class PartResult:
    """What one quickstart part produced, for the report; a failed part has its one-line ``error`` instead
    (its traceback is in ``logs/<name>.log``)."""

    name: str
    markdown: str = ""
    metrics: dict = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None


def fit_with_cli(config: Path, root: Path, export_dir: Path, extra: list[str]) -> Path:
    """Run ``fit`` through the CLI machinery with all outputs under ``root``; returns the metrics.csv path.
    Both folders are made absolute: a relative export folder would resolve under Lightning's log folder."""
    from scalear.training.lightning_cli import run_lightning

    root, export_dir = Path(root).resolve(), Path(export_dir).resolve()
    cli = run_lightning([
        "fit", "--config", str(config),
        "--trainer.default_root_dir", str(root),
        "--trainer.logger.init_args.save_dir", str(root),
        "--model.init_args.export_dir", str(export_dir),
        *extra,
    ])
    return Path(cli.trainer.logger.log_dir) / "metrics.csv"


def training_curves(runs: dict[str, tuple[Path, list[str]]], folder: Path, part: str) -> str:
    """Plot the ``keys`` of each run (``{name: (run root of fit_with_cli, keys)}``; its newest
    ``logs/version_*/metrics.csv``) into ``folder/<name>_curves.png``; returns the report's Markdown image lines
    (``part/<name>_curves.png``), skipping runs that logged none of the keys (e.g. a few-step ``--fast`` run)."""
    lines = []
    for name, (root, keys) in runs.items():
        logs = sorted(Path(root).glob("logs/version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1]))
        try:
            plot_training_curves(logs[-1], folder / f"{name}_curves.png", keys, name)
        except (ValueError, IndexError):
            continue
        lines.append(f"![{name} training curves]({part}/{name}_curves.png)")
    return "\n".join(lines)


def digit_classifier(image_size: int):
    """An RBF-SVM trained on all real digits, seen through the same resize pipeline as generated ones."""
    from sklearn.svm import SVC

    from scalear.datasets.digits import load_digit_images, to_digit_features

    x, y = load_digit_images(image_size)
    return SVC(C=10, gamma="scale").fit(to_digit_features(x), y.numpy())


def run_core(out: Path, fast: bool = False, per_class: int = 20, seed: int = 0) -> PartResult:
    """Tokenizer, then transformer, then class-conditional samples scored by a real-digit classifier."""
    from scalear.datasets.digits import load_digit_images, to_digit_features

    t0 = time.time()
    out = out / "core"
    steps = ["--trainer.max_steps", "30", "--trainer.val_check_interval", "15"] if fast else []
    tok_csv = fit_with_cli(config_path("core", "digits_tokenizer"), out / "tokenizer", out / "export", steps)
    tok_dir = out / "export" / "tokenizer"
    var_csv = fit_with_cli(config_path("core", "digits_var"), out / "var", out / "export",
                   [*steps, "--model.init_args.tokenizer", str(tok_dir)])
    tokenizer, model = from_pretrained(tok_dir).eval(), from_pretrained(out / "export" / "transformer").eval()

    # one real digit per class and its reconstructions from the first 1, 2, ... scales
    x, y = load_digit_images(16)
    picks = torch.tensor([int((y == c).nonzero()[-1]) for c in range(10)])
    with torch.no_grad():
        recs = tokenizer.img_to_scale_recs(x[picks])
    save_image_grid(torch.cat([x[picks], *recs]), out / "reconstructions.png", nrow=10,
                    rows=["input", *(f"scales 1-{k}" for k in range(1, len(recs) + 1))], cols=[str(c) for c in range(10)])

    labels = torch.arange(10).repeat_interleave(per_class)
    gen = torch.Generator().manual_seed(seed)
    s = sample(model, tokenizer.quantize, len(labels), label_B=labels, generator=gen, **DIGITS_SAMPLING)
    with torch.no_grad():
        images = tokenizer.fhat_to_img(s.f_hat)
    shown = min(per_class, 10)
    save_image_grid(images.view(10, per_class, *images.shape[1:])[:, :shown].flatten(0, 1), out / "samples.png", nrow=shown,
                    rows=[f"class {c}" for c in range(10)])

    # memorisation check: distance of each generated digit to its nearest training digit, compared with the
    # same distance for held-out real digits (copies of training digits would sit much closer)
    from scalear.datasets.digits import stratified_split

    train_idx, val_idx = stratified_split(y, 0.1, seed=0)
    nn_gen = torch.cdist(images.flatten(1), x[train_idx].flatten(1)).min(1).values.mean().item()
    nn_val = torch.cdist(x[val_idx].flatten(1), x[train_idx].flatten(1)).min(1).values.mean().item()

    clf = digit_classifier(16)
    pred = clf.predict(to_digit_features(images))
    per_cls = [float((pred[labels.numpy() == c] == c).mean()) for c in range(10)]
    acc = float((pred == labels.numpy()).mean())
    plot_training_curves(tok_csv, out / "tokenizer_curves.png", ["train/rec", "train/vq", "train/usage_min", "val/psnr"], "tokenizer")
    plot_training_curves(var_csv, out / "transformer_curves.png", ["train/loss", "train/acc", "val/ce", "val/acc"], "transformer")
    metrics = {
        "generated_recognised_as_class": acc,
        "per_class": per_cls,
        "samples_per_class": per_class,
        "sampling": DIGITS_SAMPLING,
        "chance": 0.1,
        "tokenizer_val_psnr": _last(tok_csv, "val/psnr"),
        "transformer_val_acc": _last(var_csv, "val/acc"),
        "nearest_train_distance_generated": nn_gen,
        "nearest_train_distance_heldout": nn_val,
        "fast": fast,
    }
    atomic_write(out / "metrics.json", lambda p: Path(p).write_text(json.dumps(metrics, indent=2)))
    table = "| class | " + " | ".join(map(str, range(10))) + " | all |\n|" + "---|" * 12 + "\n"
    table += "| recognised | " + " | ".join(f"{a:.0%}" for a in per_cls) + f" | **{acc:.1%}** |\n"
    md = f"""## Core: class-conditional digits (VAR's two stages)

Built-in data: scikit-learn's 1,797 **real** handwritten digits (8x8, 17 gray levels), upsampled to 16x16.
Tokenizer: multi-scale VQ-VAE, 4x4x8 latent, scales 1,2,3,4 (30 tokens), 128 codes. Transformer: depth 4,
class-conditional AdaLN. Sampling: CFG {DIGITS_SAMPLING['guidance']} (linear ramp), seed {seed}.

Generated digits recognised as their class by an RBF-SVM trained on the real digits (chance 10%):

{table}
Tokenizer validation PSNR: {metrics['tokenizer_val_psnr']:.2f} dB; transformer validation token accuracy:
{metrics['transformer_val_acc']:.1%}. Memorisation check: mean L2 distance to the nearest training digit is
{nn_gen:.2f} for generated digits and {nn_val:.2f} for held-out real digits (copies would be near 0).

Real digits (top row) and their reconstructions from the first 1, 2, 3, 4 scales:

![reconstructions](core/reconstructions.png)

Samples, one row per class 0-9:

![samples](core/samples.png)

![tokenizer curves](core/tokenizer_curves.png)
![transformer curves](core/transformer_curves.png)

Train on your own images: `scalear core fit --config configs/core/digits_tokenizer.yaml --data ...` with any
`LightningDataModule` yielding `{{"image": [-1, 1] tensor, "label": class}}` batches.
"""
    return PartResult("core", md, metrics, time.time() - t0)


def _last(metrics_csv: Path, key: str) -> float:
    from scalear.viz import read_metrics_csv

    series = read_metrics_csv(metrics_csv).get(key)
    return series[-1][1] if series else float("nan")


def read_report_parts(out: Path) -> dict[str, PartResult]:
    """The parts of the report in ``out`` (its ``report.json``; none if there is no report or it is unreadable)."""
    import warnings

    path = out / "report.json"
    if not path.is_file():
        return {}
    try:
        return {n: PartResult(**p) for n, p in json.loads(path.read_text())["parts"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        warnings.warn(f"{path} is unreadable ({type(e).__name__}: {e}): the report keeps only this run's parts")
        return {}


def write_report(out: Path, parts: list[PartResult], seconds: float | None = None) -> Path:
    """Write or update ``report.md`` and ``report.html`` (every part's tables and pictures, or its error):
    ``parts`` replace the sections of the same parts; an existing report's other parts are kept, from its
    ``report.json`` (every part's :class:`PartResult`, written alongside). ``seconds``: this run's wall time."""
    merged = {**read_report_parts(out), **{p.name: p for p in parts}}
    report = [merged[n] for n in part_order(merged)]
    lines = [f"- **{p.name}**: FAILED: `{p.error}` (log: `logs/{p.name}.log`)" if p.error else
             f"- **{p.name}**: {p.seconds / 60:.1f} min" for p in report]
    total = ""
    if seconds is not None:
        total = (f"Wall time {seconds / 60:.1f} min in all. " if len(parts) == len(report) else
                 f"The last run ({', '.join(p.name for p in parts)}) took {seconds / 60:.1f} min; the other parts' "
                 "sections are from earlier runs. ")
    head = ("# scalear quickstart report\n\n" + "\n".join(lines) + "\n\n" + total +
            "Every part trains tiny models on built-in data (each section says what that data is and how to point "
            "the same commands at real data); checkpoints are under `<part>/*/checkpoints/`, exported weights under "
            "`<part>/export/`.\n\n")
    md = head + "\n".join(p.markdown for p in report if not p.error)
    sidecar = json.dumps({"parts": {p.name: asdict(p) for p in report}}, indent=1)
    atomic_write(out / "report.json", lambda p: Path(p).write_text(sidecar))
    atomic_write(out / "report.md", lambda p: Path(p).write_text(md))
    atomic_write(out / "report.html", lambda p: Path(p).write_text(markdown_to_html(md)))
    return out / "report.md"


def markdown_to_html(md: str) -> str:
    """The report's Markdown (CommonMark + tables, rendered by markdown-it-py) as a standalone HTML page."""
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark").enable("table").render(md)
    style = "body{font-family:sans-serif;max-width:60em;margin:2em auto}img{image-rendering:pixelated;max-width:100%}" \
            "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}" \
            "pre{background:#f6f6f6;padding:0.5em;overflow-x:auto}"
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>scalear report</title><style>{style}</style>"
            f"</head><body>{body}</body></html>")


def quickstart_parts() -> dict[str, str]:
    """Every quickstart part as ``{name: "module:function"}``: ``core`` and the domains' parts, entry-point group
    ``scalear.quickstart``, where ``function(out: Path, fast: bool) -> str`` runs the part under ``out/<name>/``
    and returns its Markdown. Parts are imported only when they run (:func:`_run_part`)."""
    from importlib.metadata import entry_points

    return {"core": "scalear.quickstart:run_core", **{ep.name: ep.value for ep in entry_points(group="scalear.quickstart")}}


#: the report's order of the parts (others follow alphabetically)
PART_ORDER = ["core", "depth", "restoration", "sar3d", "g3pt"]
#: rough minutes of each part on one CPU thread: the longest parts start first when they run in parallel
EXPECTED_MINUTES = {"g3pt": 9.4, "restoration": 6.6, "sar3d": 6.0, "core": 5.0, "depth": 2.5}


def part_order(names) -> list[str]:
    """``names`` in the report's order: :data:`PART_ORDER`, then the others alphabetically."""
    return sorted(names, key=lambda n: (PART_ORDER.index(n) if n in PART_ORDER else len(PART_ORDER), n))


def _one_line(e: BaseException) -> str:
    return " ".join(f"{type(e).__name__}: {e}".split())


def _run_part(name: str, target: str, out: str, fast: bool, threads: int | None = None,
              redirect: bool = False) -> PartResult:
    """Run the part ``target`` (``"module:function"``) and capture its failure: a part that raises gives a
    :class:`PartResult` with its ``error``, its traceback in ``out/logs/<name>.log``. In a worker process
    (``redirect``) all of the part's output goes to that log and torch uses ``threads``."""
    import os
    import sys
    import traceback
    from importlib.metadata import EntryPoint

    log = Path(out) / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    if redirect:  # at the file-descriptor level, so that every writer (rich, tqdm, C++) follows
        sys.stdout.flush()
        sys.stderr.flush()
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    if threads:
        torch.set_num_threads(threads)
    t0 = time.time()
    try:
        result = EntryPoint(name, target, "scalear.quickstart").load()(Path(out), fast)
        if isinstance(result, str):
            result = PartResult(name, result)
    except (Exception, SystemExit) as e:  # noqa: BLE001 - a failed part must not lose the others (CLI errors exit)
        trace = traceback.format_exc()
        sys.stderr.write(trace)
        if not redirect:
            atomic_write(log, lambda p: Path(p).write_text(trace))
        result = PartResult(name, error=_one_line(e))
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    result.seconds = time.time() - t0
    return result


def default_jobs(n_parts: int) -> int:
    """Parts run at once: one on a GPU (the parts share it), else one per CPU core (one torch thread each)."""
    import os

    return 1 if torch.cuda.is_available() else max(1, min(n_parts, os.cpu_count() or 1))


def _run_parallel(parts: dict[str, str], out: Path, fast: bool, jobs: int) -> list[PartResult]:
    """``parts`` (:func:`quickstart_parts`) in ``jobs`` spawned worker processes, longest first."""
    import os
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    from tqdm.auto import tqdm

    threads = max(1, (os.cpu_count() or 1) // jobs)
    order = sorted(parts, key=lambda n: -EXPECTED_MINUTES.get(n, 5.0))
    print(f"quickstart: {len(parts)} parts on {jobs} worker(s) x {threads} thread(s); "
          f"each part's log: {out / 'logs'}/<part>.log")
    results = {}
    with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool, \
            tqdm(total=len(parts), desc="quickstart parts", unit="part") as bar:
        futures = {pool.submit(_run_part, n, parts[n], str(out), fast, threads, True): n for n in order}
        for fut in as_completed(futures):
            name = futures[fut]
            try:
                results[name] = fut.result()
            except Exception as e:  # noqa: BLE001 - the worker itself died (e.g. out of memory)
                results[name] = PartResult(name, error=_one_line(e))
            r = results[name]
            bar.set_postfix_str(f"{name} FAILED" if r.error else f"{name} done in {r.seconds / 60:.1f} min")
            bar.update()
    return [results[n] for n in parts]


def run_quickstart(out: str | Path, domain: str = "all", fast: bool = False, jobs: int | None = None) -> int:
    """Run the core part and every installed domain's part (or those named in ``domain``, comma-separated) and
    write the report (a run of some parts updates their sections of an existing report, keeping the others).

    ``jobs`` parts run at once in worker processes (default :func:`default_jobs`: one per CPU core, one torch
    thread each; one on a GPU); with one job the parts run here, one after the other. Either way a failed part
    is reported and the others still run. Returns 1 if a part failed, else 0."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    available = quickstart_parts()
    known = part_order(available)
    wanted = known if domain == "all" else [d.strip() for d in domain.split(",") if d.strip()]
    if unknown := [d for d in wanted if d not in known]:
        raise SystemExit(f"scalear quickstart: unknown part(s) {', '.join(unknown)}; available: {', '.join(known)}")
    parts = {n: available[n] for n in known if n in wanted}
    jobs = default_jobs(len(parts)) if jobs is None else max(1, min(jobs, len(parts)))
    t0 = time.time()
    if jobs == 1:
        results = [_run_part(n, target, str(out), fast) for n, target in parts.items()]
    else:
        results = _run_parallel(parts, out, fast, jobs)
    report = write_report(out, results, time.time() - t0)
    print(f"\nreport: {report}  (and {report.with_suffix('.html')})")
    for r in results:
        if r.error:
            print(f"part {r.name} FAILED: {r.error} (log: {out / 'logs' / f'{r.name}.log'})")
        elif r.name == "core":
            m = r.metrics
            print(f"core: generated digits recognised as their class: {m['generated_recognised_as_class']:.1%} (chance 10%)")
    return 1 if any(r.error for r in results) else 0
