"""The SAR3D part of ``scalear quickstart``: train the tiny triplane tokenizer and class-conditional generator on
the procedural chairs / tables / mugs / lamps, reconstruct the held-out objects from 1..K scales, generate a few
objects per class, export them as meshes with previews, and score them per class.

Both stages run through the configs a user runs (``configs/sar3d/tokenizer_tiny.yaml``, ``generator_tiny.yaml``)
with the step counts of :data:`STEPS`. Reconstruction: :func:`~.evaluate.reconstruction_by_scale` on the held-out
objects. Generation: :data:`PER_CLASS` objects per class with SAR3D's sampling (cfg 4, top-k 10, top-p 0.5), each a
mesh that trimesh loads back, scored by MMD / COV (Chamfer-L2) against the held-out objects of every class.
Registered in the ``scalear.quickstart`` entry-point group as ``sar3d = "scalear.domains.sar3d.quickstart:run"``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from scalear.gen3d.quickstart import fit_tokenizer_and_generator, score_exported_tokenizer, tiny_data_module
from scalear.io import atomic_write
from scalear.quickstart import training_curves

#: training steps per stage (full run, fast run)
STEPS: dict[str, tuple[int, int]] = {"tokenizer": (150, 3), "generator": (200, 3)}
#: generator batch size (the config's 16 halved for the CPU budget)
GENERATOR_BATCH = 8
#: procedural objects per class for training (full, fast); 4 per class are held out
TRAIN_PER_CLASS: tuple[int, int] = (24, 3)
#: generated objects per class (full, fast)
PER_CLASS: tuple[int, int] = (6, 2)
#: marching-cubes resolution of reconstructions and generated objects (full, fast)
RESOLUTION: tuple[int, int] = (48, 24)


def train(out: Path, fast: bool) -> dict[str, float]:
    """Both stages; returns the wall time of each in seconds."""
    i = 1 if fast else 0
    return fit_tokenizer_and_generator("sar3d", out, {k: v[i] for k, v in STEPS.items()}, TRAIN_PER_CLASS[i], ["--data.init_args.batch_size", str(GENERATOR_BATCH)])


def _data(out: Path, fast: bool):
    return tiny_data_module("sar3d", out, TRAIN_PER_CLASS[1 if fast else 0])


def run(out: Path, fast: bool = False) -> str:
    """Train, reconstruct, generate, export and score; returns the Markdown section of the report."""
    import trimesh

    from scalear.datasets.meshes.io import load_mesh, normalize_mesh
    from scalear.datasets.meshes.render import shaded_preview
    from scalear.domains.sar3d.evaluate import reconstruction_by_scale
    from scalear.gen3d.fields import mesh_summary, meshes_to_points
    from scalear.gen3d.metrics import generation_by_class
    from scalear.domains.sar3d.generate import generate_to_folder, load_generator
    from scalear.domains.sar3d.generator import indices_to_meshes
    from scalear.viz import labelled, read_png, save_png, stack_rows, tile_row

    out = Path(out) / "sar3d"
    res = RESOLUTION[1 if fast else 0]
    seconds = train(out, fast)
    dm = _data(out, fast)
    val = dm.val_dataset
    tok, by_scale, seconds["reconstruction"] = score_exported_tokenizer(
        out, val, lambda tok, loader: reconstruction_by_scale(tok, loader, res))

    # one held-out object per class, decoded from 1..K scales (coarse to fine), then the truth
    K, pics, rows = tok.schedule.num_scales, out / "pictures", []
    first = {}
    for i in range(len(val)):
        first.setdefault(val.label_names[i], i)
    for cls, i in sorted(first.items()):
        item = val[i]
        idx = tok.grid_to_indices(item["grid"][None])
        paths = []
        for k in range(1, K + 1):
            mesh = indices_to_meshes(tok, idx, res, upto=k)[0]
            paths.append(None if mesh is None else shaded_preview(mesh, pics / f"{cls}_scales_1-{k}.png", size=128, views=1))
        truth = normalize_mesh(load_mesh(val.records[i].path))
        paths.append(shaded_preview(truth, pics / f"{cls}_truth.png", size=128, views=1))
        rows.append(tile_row([None if p is None else read_png(p) for p in paths], 128))
    save_png(labelled(stack_rows(rows), sorted(first), [*(f"1-{k}" for k in range(1, K + 1)), "truth"]),
             out / "reconstruction_by_scale.png")

    t = time.perf_counter()
    gen, gtok = load_generator(out / "export")
    n = PER_CLASS[1 if fast else 0]
    rep = generate_to_folder(gen, gtok, out / "generated", n=n, fmt="obj", seed=0, resolution=res,
                             progress=False)
    seconds["generation"] = time.perf_counter() - t
    loaded = {p.stem: trimesh.load(p, force="mesh") for p in rep.written}
    classes = list(dm.classes)
    generated, reference = {}, {}
    for c in classes:
        generated[c] = meshes_to_points([loaded.get(f"{c}_{i}") for i in range(n)], 1024)[0]
        ref_idx = [i for i in range(len(val)) if val.label_names[i] == c]
        reference[c] = torch.stack([val[i]["surface"][:1024] for i in ref_idx])
    scores = generation_by_class(generated, reference)
    rows = [[shaded_preview(loaded[f"{c}_{i}"], pics / f"generated_{c}_{i}.png", size=128, views=1)
             for i in range(n) if f"{c}_{i}" in loaded] for c in classes]
    save_png(labelled(stack_rows([tile_row([read_png(p) for p in row], 128) for row in rows if row]),
                      [c for c, row in zip(classes, rows) if row]), out / "generated_per_class.png")

    curves = training_curves({"tokenizer": (out / "tokenizer", ["train/loss", "train/sdf_l1", "train/vq", "train/usage"]),
                              "generator": (out / "generator", ["train/loss", "train/acc", "train/acc_tail"])},
                             out, "sar3d")
    metrics = {"reconstruction_by_scale": {str(k): v for k, v in by_scale.items()}, "generation": scores,
               "generated": {"written": len(rep.written), **mesh_summary(list(loaded.values())), "empty": rep.empty,
                             "per_class": n},
               "steps": {k: v[1 if fast else 0] for k, v in STEPS.items()}, "seconds": seconds,
               "tokens": tok.schedule.total_tokens, "resolution": res, "threads": torch.get_num_threads(), "fast": fast}
    atomic_write(out / "metrics.json", lambda p: Path(p).write_text(json.dumps(metrics, indent=2)))
    return _markdown(metrics, classes, tok, curves)


def _markdown(m: dict, classes: list[str], tok, curves: str = "") -> str:
    from scalear.domains.sar3d.cli import format_reconstruction_table

    rec = {int(k): v for k, v in m["reconstruction_by_scale"].items()}
    g = m["generation"]
    mmd_rows = ["| generated \\ reference | " + " | ".join(classes) + " |", "|---" * (len(classes) + 1) + "|"]
    for c in classes:
        if c in g["mmd"]:
            best = min(g["mmd"][c], key=g["mmd"][c].get)
            cells = [(f"**{g['mmd'][c][r] * 1e3:.2f}**" if r == best else f"{g['mmd'][c][r] * 1e3:.2f}") for r in classes]
            mmd_rows.append(f"| {c} | " + " | ".join(cells) + " |")
    s, gen = m["seconds"], m["generated"]
    sched = ", ".join(str(sh[0]) for sh in tok.schedule.shapes)
    return f"""## SAR3D: 3D objects on procedural chairs, tables, mugs and lamps

Built-in data: watertight procedural objects of four classes (trimesh + manifold3d unions of primitives with
random proportions), SDF samples and 32^3 SDF grids ray-cast with open3d. Tiny triplane VQ-VAE (three planes
of side {sched}: {m['tokens']} tokens, one cosine codebook of {tok.config.vocab_size} codes;
{m['steps']['tokenizer']} steps, {s['tokenizer'] / 60:.1f} min) and class-conditional next-scale transformer
({m['steps']['generator']} steps, {s['generator'] / 60:.1f} min) on {m['threads']} CPU thread(s).

Held-out objects reconstructed from their first k scales (marching cubes at {m['resolution']}^3; Chamfer on surface
samples, F-score at 0.02, IoU of the SDF signs at the query points):

{format_reconstruction_table(rec)}

One held-out object per class from its first 1, 2, ..., K scales, then the true mesh:

![reconstruction by scale](sar3d/reconstruction_by_scale.png)

Generated: {gen['per_class']} objects per class (cfg 4, top-k 10, top-p 0.5), {gen['written']} written as OBJ
with previews: {gen['valid']} load back with a finite volume, {gen['watertight']} are closed (watertight; at most
{gen['max_components']} pieces in one object), {len(gen['empty'])} empty fields
({s['generation']:.1f} s in all). MMD (Chamfer-L2 x 1e3, lower is closer) of each class's samples to the
held-out objects of each class; the row's best in bold; own class closest for {g['own_class_closest']:.0%} of the
classes:

{chr(10).join(mmd_rows)}

Generated objects, one row per class ({', '.join(classes)}):

![generated per class](sar3d/generated_per_class.png)

{curves}

Your objects: `scalear sar3d generate --model OUT/sar3d/export --class chair --n 4 --format glb --out objects`.
"""


__all__ = ["STEPS", "GENERATOR_BATCH", "TRAIN_PER_CLASS", "PER_CLASS", "RESOLUTION", "train", "run"]
