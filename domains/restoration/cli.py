"""``scalear restore``: restore photos, score a model per degradation, train Varformer.

``scalear restore --model DIR --input FILE|FOLDER|GLOB --out DIR`` (or ``scalear restore predict ...``)
restores images; ``scalear restore eval`` prints PSNR / SSIM per degradation and writes them as JSON;
``scalear restore fit --config configs/restoration/<preset>.yaml`` trains through
:func:`scalear.cli.run_lightning` (LightningCLI).

Exit codes of ``predict``: 0 when every input was written; 1 when some could not be read (named on stderr;
the others are still written); 2 for usage errors (no inputs, an output folder holding inputs, a bad model).
``eval`` returns 0, or 2 for usage errors.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from scalear.cli_args import (add_fit_verb, add_image_files, command_parser, device, non_negative_int, output_file,
                              positive_int, seed)
from scalear.cli_files import resolve_device

DESCRIPTION = """\
Image restoration with Varformer (VAR's multi-scale prior): restore photos, score a model, or train one.

  predict  (the default verb) restored copies of images in an output folder
           e.g. scalear restore --model runs/varformer/export/varformer --input photos/ --out restored
  eval     PSNR / SSIM (RGB and Y) per degradation, the gain over the inputs and the images made worse
           e.g. scalear restore eval --model DIR --degradations noise25,rain --out metrics.json
                scalear restore eval --model DIR --paired PolyU/CroppedImages   (or SIDD, Rain100L, SOTS, ...)
  fit      train through LightningCLI: scalear restore fit --config configs/restoration/varformer_tiny.yaml
           (first the prior: prior_tokenizer_tiny.yaml, then prior_transformer_tiny.yaml)

--model is an exported model folder (config.json + model.safetensors of a kind with restore(), e.g.
varformer), "identity" (returns the degraded input: the do-nothing baseline), or the released Varformer:
net_g_last.pth or a folder holding it (VAR's vae_ch160v4096z32.pth / var_d16.pth are read from beside it, or
--vae / --var); it runs at 256x256 as the official test does, and predict --size 256 writes that 256x256 output.
"""

PREDICT_DESCRIPTION = """\
Per input <name>.<ext>: <out>/<name>_restored.png, 16-bit when the input is a 16-bit PNG (--bits to force),
RGB (grey inputs give equal channels). Large images are restored in overlapping tiles (--tile) blended
seamlessly. <name> is the input's path below the inputs' common folder (photos/a/2.png and photos/b/2.png give
<out>/a/2_restored.png and <out>/b/2_restored.png). Inputs are never overwritten: no output may land in a folder
holding an input.
With no reference image, predict cannot tell whether an output is better than its input: it reports how much
the model changed each image; measure the model on pairs like yours with `scalear restore eval --paired`.
Exit status: 0 all written, 1 some inputs skipped (the rest written), 2 usage error.
"""

EVAL_DESCRIPTION = """\
Scores --model on degraded/clean pairs: a paired benchmark folder (--paired), or clean images (--clean-dir,
default: scikit-image's held-out photos) under each of --degradations ("none": the clean images themselves).
Each image is also scored before restoration: the table's "gain" is restored minus input PSNR and "worse"
counts the images the model made worse (listed after the table; per image in --out's JSON).

--paired detects these layouts as published (also one folder down: GoPro sequences, SIDD scenes):
  rainy/+norain/ (Rain100L/H: rain-001 -> norain-001), hazy/+clear/ (SOTS: 0001_0.8_0.2 -> 0001), low/+high/
  (LOL), blur/+sharp/ (GoPro), noisy/+clean/, noisy/+gt/, input/+target/ (AirNet, PromptIR), input/+gt/, lq/+gt/
  (equal names), and pairs in one folder: *_real/*_mean (PolyU), *NOISY*/*GT* (SIDD).
Other folders: --pair-dirs DEGRADED:CLEAN names the two sub-folders (same name twice: one folder);
--pair-rule DEGRADED:CLEAN says how a degraded file's name becomes its clean partner's (the last DEGRADED
replaced by CLEAN, letter case ignored; e.g. _noisy:_gt, or _x: to drop _x); files without a partner are an
error unless --unmatched skip.
"""


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="exported model folder, identity, or the released Varformer's "
                                                  "net_g_last.pth (or its folder)")
    p.add_argument("--vae", default=None, help="released Varformer: VAR's vae_ch160v4096z32.pth (default: beside it)")
    p.add_argument("--var", default=None, help="released Varformer: VAR's var_d16.pth (default: beside it)")
    p.add_argument("--tile", type=positive_int, default=None, help="restore in tiles of N x N pixels (default: whole images)")
    p.add_argument("--overlap", type=non_negative_int, default=32, help="minimum overlap of neighbouring tiles (default: %(default)s)")
    p.add_argument("--device", type=device, default="auto", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    p, sub = command_parser("scalear restore", DESCRIPTION, "{predict,eval,fit}")
    pr = sub.add_parser("predict", help="restore image files", description=PREDICT_DESCRIPTION,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_common(pr)
    add_image_files(pr, "output folder (must not hold any input)")
    pr.add_argument("--batch-size", type=positive_int, default=1,
                    help="images per model call; images of one size in a batch run together (default: %(default)s)")
    pr.add_argument("--bits", choices=["auto", "8", "16"], default="auto",
                    help="output PNG bit depth (auto: 16 for 16-bit PNG inputs, else 8)")
    pr.add_argument("--size", choices=["input", "256"], default="input",
                    help="released Varformer: outputs at the input's size (resized back from 256x256; --tile 256 "
                         "restores full-resolution tiles instead) or 256x256 as the official test writes them")

    ev = sub.add_parser("eval", help="PSNR / SSIM per degradation", description=EVAL_DESCRIPTION,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_common(ev)
    ev.add_argument("--paired", default=None, help="paired benchmark folder (layouts above)")
    ev.add_argument("--pair-dirs", default=None, metavar="DEGRADED:CLEAN", help="with --paired: the sub-folder names")
    ev.add_argument("--pair-rule", default=None, metavar="DEGRADED:CLEAN",
                    help="with --paired: degraded name part -> clean name part (e.g. _real:_mean)")
    ev.add_argument("--unmatched", choices=["error", "skip"], default=None,
                    help="with --paired: files without a partner stop eval (error, the default) or are skipped")
    ev.add_argument("--clean-dir", default=None, help="folder of clean images to degrade (default: built-in photos)")
    ev.add_argument("--degradations", default=None,
                    help="comma-separated EVAL_SUITE keys or specs (default: the whole suite)")
    ev.add_argument("--crop", type=positive_int, default=None, help="centre crop of N x N pixels (default: full images)")
    ev.add_argument("--crop-border", type=non_negative_int, default=0, help="pixels ignored on each side by the metrics")
    ev.add_argument("--seed", type=seed, default=0, help="seed of the synthetic degradations")
    ev.add_argument("--out", type=output_file, default=None, help="write the metrics (per degradation and per image) as JSON here")
    add_fit_verb(sub)
    return p


def eval_dataset(a: argparse.Namespace):
    """The evaluation pairs of ``scalear restore eval``'s arguments."""
    from scalear.datasets.restoration.data import ImageFolder, PairedFolderDataset, SkimagePhotos, concat_eval_sets
    from scalear.datasets.restoration.degradations import EVAL_SUITE

    if a.paired:
        if a.clean_dir or a.degradations:
            raise ValueError("--paired holds its own degradation; drop --clean-dir and --degradations")
        dirs = a.pair_dirs.split(":") if a.pair_dirs else [None, None]
        if len(dirs) != 2 or (a.pair_dirs and not all(dirs)):
            raise ValueError(f"--pair-dirs {a.pair_dirs!r}: expected DEGRADED:CLEAN sub-folder names, e.g. noisy:clean")
        return PairedFolderDataset(a.paired, dirs[0], dirs[1], pair_rule=a.pair_rule, crop_size=a.crop, crop="center",
                                   on_unmatched=a.unmatched or "error")
    if a.pair_dirs or a.pair_rule or a.unmatched:
        raise ValueError("--pair-dirs, --pair-rule and --unmatched apply to --paired folders only")
    keys = list(EVAL_SUITE) if a.degradations is None else [k.strip() for k in a.degradations.split(",") if k.strip()]
    specs = {k: EVAL_SUITE.get(k, k) for k in keys}
    source = ImageFolder(a.clean_dir) if a.clean_dir else SkimagePhotos("heldout")
    return concat_eval_sets(source, specs, a.crop, a.seed)


def _predict(a: argparse.Namespace) -> int:
    from scalear.domains.restoration.predict import collect_inputs, load_restorer, restore_files

    from scalear.domains.restoration.tiling import check_tiling

    device = resolve_device(a.device)
    try:
        if a.tile is not None:
            check_tiling(a.tile, a.overlap, a.overlap // 4)
        if a.tile is not None and a.size == "256":
            raise ValueError("--size 256 writes the official 256x256 output; --tile restores at full resolution")
        inputs = collect_inputs(a.input)
        model = load_restorer(a.model, device, a.vae, a.var, 256 if a.size == "256" else "input")
        rep = restore_files(model, inputs, Path(a.out), tile=a.tile, overlap=a.overlap,
                            bits="auto" if a.bits == "auto" else int(a.bits), device=device, progress=not a.quiet,
                            batch_size=a.batch_size)
    except (FileNotFoundError, ValueError) as e:
        print(f"scalear restore: {e}", file=sys.stderr)
        return 2
    print(f"restored {len(rep.written)} of {len(inputs)} image(s) into {a.out}")
    if rep.change:
        most = max(rep.change, key=rep.change.get)
        print(f"no reference: predict cannot tell whether the outputs are better than the inputs; the model changed "
              f"them by {min(rep.change.values()):.1f} to {rep.change[most]:.1f} levels of 255 (RMS; most: "
              f"{Path(most).name}). A restoration model can soften photos that lack the degradations it was trained "
              "for: measure it on pairs like yours with `scalear restore eval --paired` (README: what the "
              "quickstart model does per degradation).")
    if rep.failed:
        print(f"skipped {len(rep.failed)} unreadable image(s): " + ", ".join(Path(p).name for p in rep.failed),
              file=sys.stderr)
        return 1
    return 0


def _eval(a: argparse.Namespace) -> int:
    from torch.utils.data import DataLoader

    from scalear.domains.restoration.predict import evaluate, load_restorer

    from scalear.domains.restoration.tiling import check_tiling

    device = resolve_device(a.device)
    try:
        if a.tile is not None:
            check_tiling(a.tile, a.overlap, a.overlap // 4)
        model = load_restorer(a.model, device, a.vae, a.var)
        ds = eval_dataset(a)
        loader = DataLoader(ds, batch_size=1)
        ev = evaluate(model, loader, tile=a.tile, overlap=a.overlap, crop_border=a.crop_border, device=device,
                      progress=not a.quiet, total=len(loader))
    except (FileNotFoundError, ValueError, KeyError) as e:
        print(f"scalear restore eval: {e}", file=sys.stderr)
        return 2
    print(f"model {a.model}  pairs {len(ds)}")
    print(ev.format_table())
    if worse := ev.worse_than_input():
        shown = ", ".join(f"{r['name']} ({r['degradation']}, {r['gain']:+.2f} dB)" for r in worse[:10])
        more = f" and {len(worse) - 10} more" if len(worse) > 10 else ""
        print(f"worse than input: {len(worse)} of {len(ev.records)} image(s): {shown}{more}")
    if a.out:
        ev.to_json(a.out, per_image=True)
        print(f"wrote {a.out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``scalear restore`` (registered in the ``scalear.domains`` entry-point group); the verb
    defaults to ``predict`` (``scalear restore --model ... --input ...``)."""
    from scalear.cli import run_domain_verbs

    return run_domain_verbs(argv, build_parser, {"predict": _predict, "eval": _eval}, default_verb="predict")


if __name__ == "__main__":
    raise SystemExit(main())
