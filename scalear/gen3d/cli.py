"""The options and reports shared by the 3D domains' verbs (SAR3D, G3PT): ``generate`` (export folder, classes or
condition images, sampling overrides, mesh format) and ``eval`` (exported tokenizer, mesh folder, held-out split),
and what an eval scored or skipped."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from scalear.cli_args import (add_fit_verb, command_parser, device, existing_dir, int_range, non_negative_float, non_negative_int,
                              output_dir, output_file, positive_int, probability, seed)


def domain_parser(prog: str, description: str, verbs: str, noun: str, generate_help: str, sampling: dict[str, str],
                  tokenizer: str, cache_dir: str, eval_help: str) -> tuple[argparse.ArgumentParser, Any, Any, Any]:
    """A 3D domain's command with its ``generate``, ``eval`` and ``fit`` verbs (options of
    :func:`add_generate_arguments` and :func:`add_eval_arguments`); ``verbs`` is the ``{...}`` list the help shows.
    Returns the parser, its sub-parsers (for the domain's other verbs) and the generate and eval parsers."""
    p, sub = command_parser(prog, description, verbs)
    g = sub.add_parser("generate", help=generate_help)
    add_generate_arguments(g, noun, sampling)
    e = sub.add_parser("eval", help=eval_help)
    add_eval_arguments(e, tokenizer, cache_dir)
    add_fit_verb(sub)
    return p, sub, g, e


def add_generate_arguments(g: argparse.ArgumentParser, noun: str, sampling: dict[str, str]) -> None:
    """The options of a 3D domain's ``generate`` verb (SAR3D, G3PT): export folder, classes or condition images,
    count, mesh format, output, seed, guidance and top-k / top-p (``sampling`` gives their default in words),
    marching-cubes resolution, previews, device, progress. :func:`generate_request` reads them back."""
    from scalear.gen3d import MESH_FORMATS

    g.add_argument("--model", required=True, help="export folder holding generator/ and tokenizer/")
    g.add_argument("--class", dest="classes", default=None,
                   help="comma-separated class names or indices (default: every class of the generator)")
    g.add_argument("--image", action="append", default=None,
                   help="image condition: a mesh file or a condition PNG (scalear sar3d render); repeatable")
    g.add_argument("--n", type=positive_int, default=4, help=f"{noun} per class or image (default: %(default)s)")
    g.add_argument("--format", choices=MESH_FORMATS, default="obj", help="mesh format (default: %(default)s)")
    g.add_argument("--out", type=output_dir, required=True, help="output folder")
    g.add_argument("--seed", type=seed, default=0, help="sampling seed (default: %(default)s)")
    g.add_argument("--guidance", "--cfg", type=non_negative_float, default=None,
                   help=f"classifier-free guidance (VAR's cfg), 0 = off (default: {sampling['guidance']})")
    g.add_argument("--top-k", type=non_negative_int, default=None, help=f"top-k sampling, 0 = off (default: {sampling['top_k']})")
    g.add_argument("--top-p", type=probability, default=None, help=f"top-p sampling in [0, 1], 0 = off (default: {sampling['top_p']})")
    g.add_argument("--resolution", type=int_range(2, 1024), default=64, help="marching-cubes grid (default: %(default)s)")
    g.add_argument("--no-preview", action="store_true", help="no preview PNGs")
    g.add_argument("--device", type=device, default="auto", help="cpu, cuda, ... (default: cuda if available)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")


def add_eval_arguments(e: argparse.ArgumentParser, tokenizer: str, cache_dir: str) -> None:
    """The options of a 3D domain's ``eval`` verb (SAR3D, G3PT): the exported ``tokenizer`` folder, the mesh folder
    (held-out split) or the procedural set, the sample cache (default ``cache_dir``), held-out objects per class,
    marching-cubes resolution, JSON output, device."""
    e.add_argument("--tokenizer", type=existing_dir, required=True, help=f"exported {tokenizer} folder")
    e.add_argument("--root", type=existing_dir, default=None,
                   help="mesh folder (default: the procedural set); its held-out split is scored")
    e.add_argument("--cache-dir", type=output_dir, default=cache_dir, help="sample cache (default: %(default)s)")
    e.add_argument("--val-per-class", type=positive_int, default=4, help="held-out objects per class (default: %(default)s)")
    e.add_argument("--resolution", type=int_range(2, 1024), default=48, help="marching-cubes grid (default: %(default)s)")
    e.add_argument("--out", type=output_file, default=None, help="write the metrics as JSON here")
    e.add_argument("--device", type=device, default="auto", help="cpu, cuda, ... (default: cuda if available)")


def report_objects(datasets: Sequence[Any], what: str = "held-out objects") -> None:
    """Print which objects an eval scored (the last of ``datasets``) and every file the datasets skipped, with why
    (datasets with ``records`` and ``skipped``: the mesh and point-cloud data)."""
    used = datasets[-1].records
    print(f"scored {len(used)} {what}: " + ", ".join(str(r.path.name) for r in used))
    skipped = [s for d in datasets if d is not None for s in d.skipped]
    if skipped:
        print(f"skipped {len(skipped)} file(s):")
        for path, reason in skipped:
            print(f"  {path}: {reason.removeprefix(str(path) + ': ')}")


def generate_request(a: argparse.Namespace) -> tuple[list[str] | None, dict[str, float]]:
    """The requested classes (None: all) and the sampling overrides of :func:`add_generate_arguments`' options."""
    from scalear.errors import UsageError

    classes = None if a.classes is None else [c.strip() for c in a.classes.split(",") if c.strip()]
    if classes == []:
        raise UsageError(f"--class {a.classes!r} names no class; give names or indices, e.g. --class 0,1")
    return classes, {k: v for k, v in (("guidance", a.guidance), ("top_k", a.top_k), ("top_p", a.top_p)) if v is not None}


def run_generate(prog: str, noun: str, a: argparse.Namespace, load_generator: Callable[..., tuple[Any, Any]],
                 generate_to_folder: Callable[..., Any], **options: Any) -> int:
    """A 3D domain's ``generate``: ``load_generator(folder, device)`` on the :func:`add_generate_arguments` options,
    then ``generate_to_folder(generator, tokenizer, out, n=, classes=, images=, fmt=, seed=, resolution=,
    preview=, progress=, **options, **sampling)``, which returns a report with ``written`` and ``empty``. Exit 0
    when everything was written, 1 when some samples decoded to an empty field (named on stderr), 2 on a usage
    error (a bad model folder, an unknown class, an unreadable condition)."""
    from scalear.cli_files import resolve_device

    try:
        gen, tok = load_generator(a.model, resolve_device(a.device))
        classes, sampling = generate_request(a)
        rep = generate_to_folder(gen, tok, a.out, n=a.n, classes=classes, images=a.image, fmt=a.format, seed=a.seed,
                                 resolution=a.resolution, preview=not a.no_preview, progress=not a.quiet,
                                 **options, **sampling)
    except (FileNotFoundError, ValueError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    print(f"wrote {len(rep.written)} {noun}(s) into {a.out}")
    if rep.empty:
        print(f"{len(rep.empty)} {noun}(s) decoded to an empty field, not written: {', '.join(rep.empty)}", file=sys.stderr)
        return 1
    return 0


def run_eval(prog: str, a: argparse.Namespace, tokenizer_type: type, what: str,
             data: Callable[[Any], Any], evaluate: Callable[[Any, Any], dict], table: Callable[[dict], str]) -> int:
    """A 3D domain's ``eval``: load the exported ``--tokenizer`` (a ``tokenizer_type``, called ``what`` in errors)
    on ``--device``, build its held-out split with ``data(tokenizer)`` (a data module), score it with
    ``evaluate(tokenizer, dataset)`` (``{steps: metrics}``), print which objects were scored or skipped and
    ``table(results)``, and write the results as JSON to ``--out``. Exit 2 on a bad folder or model."""
    from scalear.cli_files import resolve_device
    from scalear.io import atomic_write, from_pretrained

    try:
        tok = from_pretrained(a.tokenizer)
        if not isinstance(tok, tokenizer_type):
            raise ValueError(f"{a.tokenizer} holds a {type(tok).__name__}, not a {what}")
        tok = tok.to(resolve_device(a.device)).eval()
        dm = data(tok)
        dm.setup("validate")
        if dm.val_dataset is None:
            raise ValueError(f"{a.root or 'the procedural set'} has no held-out objects")
        results = evaluate(tok, dm.val_dataset)
    except (FileNotFoundError, ValueError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    print(f"tokenizer {a.tokenizer}  held-out objects {len(dm.val_dataset)}")
    report_objects([dm.train_dataset, dm.val_dataset])
    print(table(results))
    if a.out:
        atomic_write(a.out, lambda p: Path(p).write_text(json.dumps({str(k): v for k, v in results.items()}, indent=2)))
        print(f"wrote {a.out}")
    return 0
