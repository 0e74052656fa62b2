"""``scalear depth``: predict depth for image files, evaluate on NYU / KITTI / procedural / Middlebury, fit.

``fit`` hands the rest of the command line to :func:`scalear.cli.run_lightning` (LightningCLI): the config's
``model`` is :class:`~scalear.domains.depth.training.DARModule`, DepthART's
:class:`~scalear.domains.depth.depthart_training.DepthARTModule`, or the core's tokenizer module (DepthART stage 1).

Exit codes of ``predict``: 0 when every input was written; 1 when some inputs could not be read (they are
named on stderr and in the summary; every other input is still written); 2 for usage errors (no inputs, an
output folder that holds inputs, a bad model spec). ``eval`` returns 0, or 2 for usage errors.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from pathlib import Path
from typing import Sequence

from scalear.cli_args import (add_image_files, command_parser, device, non_negative_float, output_file, positive_float,
                              positive_int)
from scalear.cli_files import resolve_device

DESCRIPTION = """\
Monocular depth: run a depth model on images, score it on a test set, or train one.

  predict  depth maps (16-bit PNG in mm, .npy in metres, colour PNGs, optional PLY) for images
           e.g. scalear depth predict --model runs/dar_export --input photos/ --out depth_out --ply
  eval     the standard metrics table (AbsRel SqRel RMSE RMSElog log10 SILog d1 d2 d3) on a test set
           e.g. scalear depth eval --model constant:2.5 --dataset procedural --out metrics.json
  fit      train DAR or DepthART through LightningCLI, e.g. scalear depth fit --config configs/depth/<preset>.yaml
           (the data modules: scalear.datasets.depth.data.{NyuDepthDataModule,KittiDepthDataModule})

--model is an exported model folder (config.json + model.safetensors of a kind with predict_depth: DAR, or
DepthART, whose relative depth eval median-scales per image), the released DepthART (a folder holding its
model.safetensors, plus VAR's vae_ch160v4096z32.pth if that file lacks the tokenizer; eval aligns it by
median(gt / pred) as the official code does) or constant:<metres> (the constant-depth baseline; see the
fit_constant helper for the best one).
"""

PREDICT_DESCRIPTION = """\
Per image <name>: <name>_depth_mm.png (16-bit, millimetres, 0 = none; <name>_depth_256.png in 1/256 m if
some depth exceeds 65.535 m), <name>_depth.json (units, intrinsics), <name>_depth.npy (float32 metres),
<name>_depth_color.png (magma, near = bright), <name>_side_by_side.jpg (input | depth) and, with --ply,
<name>.ply (coloured points, OpenCV camera axes); <name> is the image's path below the inputs' common folder
(photos/a/2.png and photos/b/2.png give <out>/a/2_* and <out>/b/2_*). Unreadable images are named on stderr and
skipped.
Exit status: 0 all written, 1 some inputs skipped (the rest written), 2 usage error.
"""

#: dataset name -> what --data-root and --split-file mean
EVAL_DATASETS = {
    "nyu": "NYU Depth v2 (Eigen crop, 1e-3..10 m): --data-root nyu_depth_v2_labeled.mat with --split-file splits.mat, "
           "or a folder of pairs with an optional --split-file (BTS list / DenseDepth CSV)",
    "kitti": "KITTI (Garg crop, 1e-3..80 m): --data-root KITTI raw root with --split-file eigen list "
             "[--depth-root annotated depth] [--gt velodyne]; or --data-root a flat folder (no --split-file): "
             "rgb/ + depth/ 16-bit PNGs of the same names, or with --gt velodyne image_2/ + velodyne/*.bin + "
             "calib/<name>.txt (object benchmark) or calib_cam_to_cam.txt + calib_velo_to_cam.txt, or --calib",
    "procedural": "built-in procedural scenes (no crop, their 0.1..10 m range): --size N --image-size H,W",
    "middlebury": "the Middlebury 2014 Motorcycle sample shipped with scikit-image (no crop, 1e-3..10 m)",
}


def _floats(text: str, n: int, what: str) -> tuple[float, ...]:
    """``n`` comma-separated finite numbers (``what`` says which, for the error)."""
    try:
        vals = tuple(float(x) for x in text.split(","))
    except ValueError:
        vals = ()
    if len(vals) != n or not all(math.isfinite(v) for v in vals):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
    return vals


def _intrinsics(text: str) -> tuple[float, float, float, float]:
    fx, fy, cx, cy = _floats(text, 4, "fx,fy,cx,cy in pixels with fx, fy > 0")
    if fx <= 0 or fy <= 0:
        raise argparse.ArgumentTypeError(f"must be fx,fy,cx,cy in pixels with fx, fy > 0, got {text!r}")
    return fx, fy, cx, cy


def _image_size(text: str) -> tuple[int, int]:
    hw = _floats(text, 2, "H,W: two positive integers")
    if not all(v >= 1 and v == int(v) for v in hw):
        raise argparse.ArgumentTypeError(f"must be H,W: two positive integers, got {text!r}")
    return int(hw[0]), int(hw[1])


def build_parser() -> argparse.ArgumentParser:
    p, sub = command_parser("scalear depth", DESCRIPTION, "{predict,eval,fit}")

    pr = sub.add_parser("predict", help="depth maps for image files", description=PREDICT_DESCRIPTION,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    pr.add_argument("--model", required=True, help="exported model folder, released DepthART folder or constant:<metres>")
    add_image_files(pr, "output folder (must not be a folder holding inputs)")
    pr.add_argument("--intrinsics", type=_intrinsics, default=None,
                    help="fx,fy,cx,cy in pixels for the point cloud (default fx=fy=1.2*max(H,W), cx=W/2, cy=H/2)")
    pr.add_argument("--ply", action="store_true", help="also write a coloured point cloud <name>.ply")
    pr.add_argument("--no-pictures", action="store_true",
                    help="write the depth files alone (16-bit PNG, .npy, .json): no colour picture, no side-by-side")
    pr.add_argument("--max-depth", type=positive_float, default=None, help="cap predicted depth at this many metres")
    pr.add_argument("--batch-size", type=positive_int, default=1,
                    help="images per model call; images of one size in a batch run together (default: %(default)s)")
    pr.add_argument("--device", type=device, default="auto", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    pr.add_argument("--quiet", action="store_true", help="no progress bar")

    ev = sub.add_parser("eval", help="standard depth metrics on a test set",
                        description="datasets:\n" + "\n".join(f"  {k:<11} {v}" for k, v in EVAL_DATASETS.items()),
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    ev.add_argument("--model", required=True, help="exported model folder, released DepthART folder or constant:<metres>")
    ev.add_argument("--dataset", required=True, choices=sorted(EVAL_DATASETS))
    ev.add_argument("--data-root", default=None, help="dataset file or folder (nyu, kitti)")
    ev.add_argument("--split-file", default=None, help="split list (kitti; nyu: splits.mat or a pair list)")
    ev.add_argument("--depth-root", default=None, help="root of the ground-truth depth if not under --data-root "
                    "(kitti flat folder: the depth or velodyne folder)")
    ev.add_argument("--gt", choices=("annotated", "velodyne"), default="annotated",
                    help="kitti ground truth: annotated 16-bit PNGs or projected Velodyne scans (default: %(default)s)")
    ev.add_argument("--calib", default=None, help="kitti flat folder, --gt velodyne: calibration for every frame (an "
                    "object-benchmark calib file, a folder of raw-data calib files, or a bare 3x4 projection)")
    ev.add_argument("--median-scaling", action="store_true",
                    help="also report the metrics after per-image median scaling (a row under the metric one)")
    ev.add_argument("--min-depth", type=non_negative_float, default=None, help="override the dataset's lower depth cap (metres)")
    ev.add_argument("--max-depth", type=positive_float, default=None, help="override the dataset's upper depth cap (metres)")
    ev.add_argument("--crop", choices=("none", "garg", "eigen_kitti", "eigen_nyu"), default=None,
                    help="override the dataset's evaluation crop")
    ev.add_argument("--kb-crop", action="store_true", help="kitti: predict on the 352x1216 KB crop (BTS/ZoeDepth)")
    ev.add_argument("--size", type=positive_int, default=64, help="procedural: number of test scenes (default: %(default)s)")
    ev.add_argument("--image-size", type=_image_size, default=(48, 64), help="procedural: H,W (default: 48,64)")
    ev.add_argument("--limit", type=positive_int, default=None, help="evaluate only the first N frames (a quick check)")
    ev.add_argument("--out", type=output_file, default=None, help="write metrics (mean and per image) as JSON here")
    ev.add_argument("--device", type=device, default="auto", help="cpu, cuda, ... (default: cuda if available)")
    ev.add_argument("--quiet", action="store_true", help="no progress bar")

    sub.add_parser("fit", help="train DAR or DepthART (LightningCLI: --config YAML; --help lists its keys)", add_help=False)
    return p


def build_eval_dataset(a: argparse.Namespace):
    """``(dataset, DepthEvalConfig, predictor wrapper or None, info dict)`` for ``a.dataset``."""
    from scalear.domains.depth.metrics import EVAL_PRESETS, DepthEvalConfig

    if a.dataset == "procedural":
        from scalear.datasets.procedural_rgbd import ProceduralRGBDDataset

        ds = ProceduralRGBDDataset("test", a.size, a.image_size)
        return ds, DepthEvalConfig(max_depth=ds.max_depth, min_depth=ds.min_depth), {
            "frames": len(ds), "image_size": list(a.image_size)}
    if a.dataset == "middlebury":
        from scalear.datasets.depth import load_middlebury_motorcycle

        s = load_middlebury_motorcycle()
        return [{k: s[k] for k in ("image", "depth", "valid", "name")}], DepthEvalConfig(max_depth=10.0), {"frames": 1}
    if a.data_root is None:
        raise ValueError(f"--dataset {a.dataset} needs --data-root: {EVAL_DATASETS[a.dataset]}")
    if a.dataset == "nyu":
        from scalear.datasets.depth.data import NyuDepthDataModule

        root = Path(a.data_root)
        if root.is_file():
            if a.split_file is None:
                raise ValueError("NYU from the labeled .mat needs --split-file splits.mat (the official 654 test frames)")
            dm = NyuDepthDataModule(mat_path=str(root), splits_file=a.split_file)
        else:
            dm = NyuDepthDataModule(root=str(root), test_list=a.split_file, depth_root=a.depth_root)
        ds = dm.dataset("test")
        from scalear.datasets.depth import describe_encoding

        gt = f"16-bit PNGs, {describe_encoding(ds.depth_encoding)}" if hasattr(ds, "depth_encoding") else "metres (.mat)"
        return ds, EVAL_PRESETS["nyu"], {"frames": len(ds), "ground_truth": gt}
    from scalear.datasets.depth import KittiFolderDataset, describe_encoding
    from scalear.datasets.depth.kitti import FOLDER_IMAGE_DIRS
    from scalear.datasets.depth.data import KittiDepthDataModule

    root = Path(a.data_root)
    if a.split_file is not None:
        if a.calib is not None:
            raise ValueError("--calib is for a flat KITTI folder; a raw tree's calibration is <root>/<date>/calib_*.txt")
        ds = KittiDepthDataModule(str(root), test_split=a.split_file, depth_root=a.depth_root, gt=a.gt).dataset("test")
        gt = f"16-bit PNGs, {describe_encoding('kitti')}" if a.gt == "annotated" else "Velodyne scans projected with <date>/calib_*.txt"
    elif root.is_dir() and not any((root / d).is_dir() for d in FOLDER_IMAGE_DIRS):
        raise ValueError(f"--data-root {root}: no {'/, '.join(FOLDER_IMAGE_DIRS)}/ folder of a flat KITTI folder; "
                         "a raw KITTI tree needs --split-file (e.g. eigen_test_files_with_gt.txt)")
    else:
        ds = KittiFolderDataset(root, gt=a.gt, gt_dir=a.depth_root, calib=a.calib)
        gt = ds.encoding
    info = {"frames": len(ds), "listed": ds.num_listed, "without_gt": len(ds.missing_gt), "ground_truth": gt}
    return ds, EVAL_PRESETS["kitti"], info


def _predict(a: argparse.Namespace) -> int:
    from scalear.domains.depth.predict import collect_inputs, predict_files
    from scalear.domains.depth.models import load_predictor

    device = resolve_device(a.device)
    try:
        inputs = collect_inputs(a.input)
        predictor = load_predictor(a.model, map_location=device)
        rep = predict_files(predictor, inputs, Path(a.out), intrinsics=a.intrinsics, ply=a.ply, max_depth=a.max_depth,
                            device=device, model_name=str(a.model), progress=not a.quiet,
                            batch_size=a.batch_size, pictures=not a.no_pictures)
    except (FileNotFoundError, ValueError) as e:
        print(f"scalear depth predict: {e}", file=sys.stderr)
        return 2
    print(f"wrote depth for {len(rep.written)} of {len(inputs)} image(s) to {a.out}")
    if rep.failed:
        print(f"skipped {len(rep.failed)} unreadable image(s): " + ", ".join(Path(p).name for p in rep.failed), file=sys.stderr)
        return 1
    return 0


def _eval(a: argparse.Namespace) -> int:
    from torch.utils.data import DataLoader, Dataset, Subset

    from scalear.domains.depth.predict import KBCropPredictor, eval_summary, evaluate_all, range_warning, write_eval_json
    from scalear.domains.depth.models import load_predictor

    device = resolve_device(a.device)
    try:
        predictor = load_predictor(a.model, map_location=device)
        ds, cfg, info = build_eval_dataset(a)
        overrides = {"min_depth": a.min_depth, "max_depth": a.max_depth, "crop": a.crop}
        cfg = dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    except (FileNotFoundError, ValueError) as e:
        print(f"scalear depth eval: {e}", file=sys.stderr)
        return 2
    if a.kb_crop:
        if a.dataset != "kitti":
            print("scalear depth eval: --kb-crop applies to --dataset kitti only", file=sys.stderr)
            return 2
        predictor = KBCropPredictor(predictor)
    model = getattr(predictor, "predictor", predictor)
    if not getattr(model, "metric_depth", True):  # relative depth (DepthART): scored median-scaled only, as its papers do
        rows = {"median-scaled (the model predicts relative depth)": dataclasses.replace(
            cfg, median_scaling=True, median_of_ratios=bool(getattr(model, "median_of_ratios", False)))}
    else:
        rows = {"metric": cfg} | ({"median-scaled": dataclasses.replace(cfg, median_scaling=True)} if a.median_scaling else {})
    if a.limit is not None:
        ds = Subset(ds, range(min(a.limit, len(ds))))
        info["frames"] = len(ds)
    if a.dataset == "kitti":
        print(f"KITTI: {info['listed'] - info['without_gt']} of {info['listed']} listed frames have ground truth "
              f"({info['without_gt']} without are left out); evaluating {info['frames']}")
    print(f"{a.dataset}  model {a.model}  crop {cfg.crop}  depth {cfg.min_depth:g}..{cfg.max_depth:g} m")
    if "ground_truth" in info:
        print(f"ground truth: {info['ground_truth']}")
    if warning := range_warning(predictor, cfg):
        print(f"warning: {warning}", file=sys.stderr)
    loader = DataLoader(ds if isinstance(ds, Dataset) else _ListDataset(ds), batch_size=1)
    try:
        evs = evaluate_all(predictor, loader, list(rows.values()), device, progress=not a.quiet, total=len(loader))
    except (FileNotFoundError, ValueError) as e:  # a frame that cannot be read, a crop that does not fit
        print(f"scalear depth eval: {e}", file=sys.stderr)
        return 2
    print(eval_summary(dict(zip(rows, evs))))
    if evs[0].skipped:
        print(f"{len(evs[0].skipped)} frame(s) without valid ground truth in range were skipped", file=sys.stderr)
    if a.out:
        first = evs[0].config
        extra = {"dataset": a.dataset, "model": str(a.model), "kb_crop": a.kb_crop, "median_scaling": first.median_scaling,
                 "median_of_ratios": first.median_of_ratios, "warnings": [warning] if warning else [], **info}
        if len(evs) > 1:
            extra["median_scaled"] = {"metrics": evs[1].compute(), "config": dataclasses.asdict(evs[1].config)}
        write_eval_json(evs[0], Path(a.out), extra)
        print(f"wrote {a.out}")
    return 0


class _ListDataset:  # a map-style dataset for DataLoader (torch.utils.data imported by eval only)
    def __init__(self, items: Sequence[dict]):
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``scalear depth`` (registered in the ``scalear.domains`` entry-point group)."""
    from scalear.cli import run_domain_verbs

    return run_domain_verbs(argv, build_parser, {"predict": _predict, "eval": _eval})


if __name__ == "__main__":
    raise SystemExit(main())
