"""The ``scalear`` command.

``scalear <domain> fit --config configs/<domain>/<preset>.yaml`` trains through Lightning's ``LightningCLI``:
the YAML's keys are exactly the constructor arguments of the Trainer, the LightningModule and the
LightningDataModule (``class_path`` / ``init_args``), and an unknown or mistyped key is an error. Domains
add their verbs through the ``scalear.domains`` entry-point group (``name = "module:main"``, where
``main(argv) -> int``); the core never imports a domain directly.
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Callable, Sequence

from scalear.cli_args import (ArgumentParser, exit_on_usage_error, existing_file, existing_path, non_negative_float,
                              non_negative_int, output_dir, output_file, positive_int, probability, seed)
from scalear.training.lightning_cli import run_lightning  # noqa: F401 (also scalear.cli.run_lightning)

CORE_HELP = """\
usage: scalear core {fit,validate} --config CONFIG.yaml [--section.key value ...]
       scalear core sample --model EXPORT_DIR [--tokenizer DIR] [--classes 0,1,..] [--out grid.png] ...
       scalear core export --ckpt LIGHTNING.ckpt --out DIR

Train, sample and export the core models (tokenizer and next-scale transformer).

  fit / validate   LightningCLI; e.g. scalear core fit --config configs/core/digits_tokenizer.yaml
                   (add --print_config to see every key; --ckpt_path last resumes)
  sample           class-conditional samples from an exported transformer as a PNG grid
  export           write the weights of a Lightning checkpoint as safetensors + config.json
"""


def domain_entry_points() -> dict[str, Callable[[list[str]], int]]:
    """Installed domains: name -> lazily loaded ``main(argv)``."""
    found = {}
    for ep in entry_points(group="scalear.domains"):
        found[ep.name] = lambda argv, ep=ep: ep.load()(argv)
    return found


def run_domain_verbs(argv: Sequence[str] | None, parser: Callable[[], argparse.ArgumentParser],
                     verbs: dict[str, Callable[[argparse.Namespace], int]], default_verb: str | None = None) -> int:
    """The ``main(argv)`` of a domain's CLI: ``fit ...`` goes to :func:`run_lightning` untouched (LightningCLI
    parses its own arguments), no arguments print the help, anything else is parsed and dispatched on ``verb``;
    ``default_verb`` is prepended when the first argument is not a verb (``scalear restore --model ...``). A
    :class:`~scalear.errors.UsageError` is one line on stderr and exit status 2 (:func:`exit_on_usage_error`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    p = parser()
    if argv and argv[0] == "fit":
        return exit_on_usage_error(f"{p.prog} fit", lambda: _lightning(["fit", *argv[1:]]), unwind_on_sigterm=False)
    if not argv:
        p.print_help()
        return 0
    if default_verb is not None and argv[0] not in (*verbs, "-h", "--help"):
        argv = [default_verb, *argv]
    a = p.parse_args(argv)
    return exit_on_usage_error(f"{p.prog} {a.verb}", lambda: verbs[a.verb](a))


def _lightning(argv: list[str]) -> int:
    run_lightning(argv)
    return 0


def core_main(argv: list[str]) -> int:
    """``scalear core``: fit / validate (LightningCLI), sample, export; usage errors exit 2 with one line."""
    if not argv or argv[0] in ("-h", "--help"):
        print(CORE_HELP)
        return 0
    verb, rest = argv[0], argv[1:]
    if verb in ("fit", "validate"):
        return exit_on_usage_error(f"scalear core {verb}", lambda: _lightning([verb, *rest]), unwind_on_sigterm=False)
    if verb == "sample":
        return exit_on_usage_error("scalear core sample", lambda: _core_sample(rest))
    if verb == "export":
        return exit_on_usage_error("scalear core export", lambda: _core_export(rest))
    print(f"scalear core: unknown command {verb!r}; choose from fit, validate, sample, export (scalear core --help)",
          file=sys.stderr)
    return 2


def _load_exported(folder: Path, kind: type, arg: str, what: str):
    """``from_pretrained(folder)`` in eval mode, refused (:class:`~scalear.errors.UsageError` naming ``arg``) unless
    it is a ``kind``; a missing or broken folder is a usage error too."""
    from scalear.errors import UsageError
    from scalear.io import from_pretrained

    try:
        model = from_pretrained(folder)
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(f"{arg}: {e}") from None
    if not isinstance(model, kind):
        raise UsageError(f"{arg} {folder} holds a {type(model).__name__}, not {what}")
    return model.eval()


def _load_var_files(var_path: Path, vae_path: Path | None):
    """VAR's released transformer ``var_d*.pth`` and tokenizer (``vae_path``, default ``vae_ch160v4096z32.pth``
    beside it) through :func:`scalear.var_checkpoints.load_var`, in eval mode; a wrong file is a usage error."""
    from scalear.errors import UsageError
    from scalear.var_checkpoints import CheckpointMismatchError, load_var

    if var_path.suffix.lower() not in (".pth", ".pt", ".ckpt", ".bin", ".safetensors"):
        raise UsageError(f"--model {var_path}: neither an exported model folder nor VAR's var_d*.pth")
    vae_path = vae_path or var_path.parent / "vae_ch160v4096z32.pth"
    if not vae_path.is_file():
        raise UsageError(f"--model {var_path}: VAR's tokenizer {vae_path} is not there; give it with --tokenizer")
    try:
        tok, model = load_var(vae_path, var_path)
    except (CheckpointMismatchError, FileNotFoundError, ValueError, KeyError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UsageError(f"--model {var_path} / --tokenizer {vae_path}: {first}") from None
    return tok.eval(), model.eval()


def _class_ids(text: str | None, num_classes: int) -> list[int]:
    """``--classes`` as ids in ``[0, num_classes)`` (None: every class; an unconditional model takes none)."""
    from scalear.errors import UsageError

    if text is None:
        return list(range(max(num_classes, 1)))
    if num_classes == 0:
        raise UsageError(f"--classes {text}: this transformer is unconditional (num_classes 0); leave --classes out")
    ids = [c.strip() for c in text.split(",") if c.strip()]
    bad = [c for c in ids if not (c.isdigit() and int(c) < num_classes)]
    if not ids or bad:
        raise UsageError(f"--classes {text!r}: give comma-separated class ids in 0..{num_classes - 1}")
    return [int(c) for c in ids]


def _core_sample(argv: list[str]) -> int:
    import torch

    from scalear.errors import UsageError
    from scalear.sampling import sample
    from scalear.transformer import NextScaleTransformer
    from scalear.viz import save_image_grid
    from scalear.vqvae import VQVAE

    p = ArgumentParser(prog="scalear core sample", description="class-conditional samples as a PNG grid; VAR's "
                       "released files run as its demo does with --cfg 4 --top-k 900 --top-p 0.95")
    p.add_argument("--model", type=existing_path, required=True,
                   help="exported transformer folder, or VAR's released var_d*.pth")
    p.add_argument("--tokenizer", type=existing_path,
                   help="exported tokenizer folder (default: <model>/../tokenizer), or VAR's vae_ch160v4096z32.pth "
                        "(default: beside var_d*.pth)")
    p.add_argument("--classes", default=None, help="comma-separated class ids (default: all)")
    p.add_argument("--per-class", type=positive_int, default=8, help="samples per class (default: %(default)s)")
    p.add_argument("--guidance", "--cfg", type=non_negative_float, default=1.5,
                   help="classifier-free guidance (VAR's cfg), 0 = off (default: %(default)s)")
    p.add_argument("--top-k", type=non_negative_int, default=0, help="top-k sampling, 0 = off (default: %(default)s)")
    p.add_argument("--top-p", type=probability, default=0.0, help="top-p sampling in [0, 1], 0 = off (default: %(default)s)")
    p.add_argument("--temperature", type=non_negative_float, default=1.0, help="0 = greedy (default: %(default)s)")
    p.add_argument("--seed", type=seed, default=0, help="sampling seed (default: %(default)s)")
    p.add_argument("--out", type=output_file, default="samples.png", help="PNG grid to write (default: %(default)s)")
    a = p.parse_args(argv)

    if a.model.is_file():  # VAR's released files: var_d*.pth + vae_ch160v4096z32.pth
        tok, model = _load_var_files(a.model, a.tokenizer)
    else:
        model = _load_exported(a.model, NextScaleTransformer, "--model", "an exported next-scale transformer")
        tok = _load_exported(a.tokenizer or a.model.parent / "tokenizer", VQVAE, "--tokenizer",
                             "an exported VQ-VAE tokenizer")
    if (model.cfg.schedule, model.cfg.vocab_size) != (tok.quantize.schedule, tok.config.vocab_size):
        raise UsageError(f"--model {a.model} was not trained on this tokenizer: its scales / vocabulary differ from "
                         f"{a.tokenizer or a.model.parent / 'tokenizer'}'s")
    n = model.cfg.num_classes
    classes = _class_ids(a.classes, n)
    labels = torch.tensor(classes).repeat_interleave(a.per_class)
    kw = {"label_B": labels} if n else {}
    out = sample(model, tok.quantize, len(labels), guidance=a.guidance, top_k=a.top_k, top_p=a.top_p,
                 temperature=a.temperature, generator=torch.Generator().manual_seed(a.seed), **kw)
    save_image_grid(tok.fhat_to_img(out.f_hat), a.out, nrow=a.per_class, rows=[f"class {c}" for c in classes])
    print(f"wrote {a.out}")
    return 0


def _core_export(argv: list[str]) -> int:
    from scalear.errors import UsageError
    from scalear.training.export import export_checkpoint

    p = ArgumentParser(prog="scalear core export", description="Lightning checkpoint -> safetensors")
    p.add_argument("--ckpt", type=existing_file, required=True, help="a checkpoint written by scalear ... fit")
    p.add_argument("--out", type=output_dir, required=True, help="export folder (one sub-folder per model)")
    a = p.parse_args(argv)
    try:
        print(f"exported to {export_checkpoint(a.ckpt, a.out)}")
    except (FileNotFoundError, ValueError) as e:  # an unreadable or foreign checkpoint, named by the loader
        raise UsageError(str(e)) from None
    return 0


def build_parser(domains: dict[str, Callable]) -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="scalear",
        description="scalear: next-scale prediction (VAR-style coarse-to-fine) for 3D and perception.",
        epilog="Run 'scalear <command> --help' for the options of a command.",
    )
    from scalear import __version__

    p.add_argument("--version", action="version", version=f"scalear {__version__}")
    sub = p.add_subparsers(dest="command", metavar="<command>", title="commands")
    qs = sub.add_parser("quickstart", help="train tiny models on built-in data end to end and write a report")
    qs.add_argument("--out", type=output_dir, default="scalear_runs/quickstart", help="output folder (default: %(default)s)")
    qs.add_argument("--domain", default="all", help="which parts to run, comma-separated: core and the domains with a quickstart part (default: all)")
    qs.add_argument("--fast", action="store_true", help="a much shorter run (smoke test; quality is not reached)")
    qs.add_argument("--jobs", type=positive_int, default=None,
                    help="parts run at once in worker processes (default: one per CPU core; 1 on a GPU)")
    sub.add_parser("core", help="train / sample / export the core tokenizer and transformer", add_help=False)
    for name in sorted(domains):
        sub.add_parser(name, help=f"the {name} domain (scalear {name} --help)", add_help=False)
    sub.add_parser("info", help="versions, devices and installed domains")
    return p


def _info(domains: dict) -> int:
    import lightning
    import torch

    from scalear import __version__

    dev = f"cuda ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "cpu"
    print(f"scalear {__version__}  torch {torch.__version__}  lightning {lightning.__version__}  device {dev}")
    print("domains: " + (", ".join(sorted(domains)) or "none installed"))
    from scalear.deps import status_3d

    print(f"3D data (meshes, point clouds, procedural RGB-D): {status_3d()}")
    return 0


def _quickstart(args: argparse.Namespace) -> int:
    from scalear.errors import UsageError
    from scalear.quickstart import part_order, quickstart_parts, run_quickstart

    known = part_order(quickstart_parts())
    wanted = [d.strip() for d in args.domain.split(",") if d.strip()]
    if args.domain != "all" and (not wanted or any(d not in known for d in wanted)):
        raise UsageError(f"--domain {args.domain!r}: choose all or some of {', '.join(known)} (comma-separated)")
    return run_quickstart(args.out, domain=args.domain, fast=args.fast, jobs=args.jobs)


def main(argv: Sequence[str] | None = None) -> int:
    """``scalear ...``: every verb exits 2 with one line on stderr for a usage error (a bad argument, input file
    or model folder), never with a traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    domains = domain_entry_points()
    parser = build_parser(domains)
    if not argv:
        parser.print_help()
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd == "core":
        return core_main(rest)
    if cmd in domains:
        return int(domains[cmd](rest) or 0)
    args = parser.parse_args(argv)
    if args.command == "quickstart":
        return exit_on_usage_error("scalear quickstart", lambda: _quickstart(args), unwind_on_sigterm=False)
    if args.command == "info":
        return _info(domains)
    parser.print_help()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
