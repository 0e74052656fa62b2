"""The G3PT part of ``scalear quickstart``: train the tiny Cross-scale VQ tokenizer and the class-conditional
Cross-scale Querying Transformer on point clouds of the procedural chairs / tables / mugs / lamps, reconstruct the
held-out objects from 1..K levels of detail, generate shapes per class as point clouds and meshes with previews,
and score them (COV / MMD / 1-NNA with Chamfer and EMD).

Both stages run through the configs a user runs (``configs/g3pt/tokenizer_tiny.yaml``, ``generator_tiny.yaml``)
with the step counts of :data:`STEPS`. Registered in the ``scalear.quickstart`` entry-point group as
``g3pt = "scalear.domains.g3pt.quickstart:run"``.
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
STEPS: dict[str, tuple[int, int]] = {"tokenizer": (900, 3), "generator": (400, 3)}
#: procedural objects per class for training (full, fast); 4 per class are held out
TRAIN_PER_CLASS: tuple[int, int] = (150, 3)
#: generated shapes per class (full, fast)
PER_CLASS: tuple[int, int] = (6, 2)
#: marching-cubes resolution of reconstructions and generated shapes (full, fast)
RESOLUTION: tuple[int, int] = (40, 20)
#: surface points per generated / reference shape for the generation metrics (EMD on the first 256)
METRIC_POINTS = 1024


def train(out: Path, fast: bool) -> dict[str, float]:
    """Both stages; returns the wall time of each in seconds."""
    i = 1 if fast else 0
    return fit_tokenizer_and_generator("g3pt", out, {k: v[i] for k, v in STEPS.items()}, TRAIN_PER_CLASS[i])


def _data(out: Path, fast: bool):
    return tiny_data_module("g3pt", out, TRAIN_PER_CLASS[1 if fast else 0])


def run(out: Path, fast: bool = False) -> str:
    """Train, reconstruct, generate, export and score; returns the Markdown section of the report."""
    from scalear.datasets.meshes.io import load_mesh, normalize_mesh
    from scalear.datasets.meshes.render import camera_views, shade, splat_points
    from scalear.datasets.pointclouds.io import load_point_cloud
    from scalear.domains.g3pt.evaluate import generation_scores, reconstruction_by_level
    from scalear.domains.g3pt.generate import generate_to_folder, load_generator
    from scalear.gen3d.fields import mesh_summary, meshes_to_points
    from scalear.viz import labelled, read_png, save_png, stack_rows, tile_row

    out = Path(out) / "g3pt"
    i_fast = 1 if fast else 0
    res = RESOLUTION[i_fast]
    seconds = train(out, fast)
    dm = _data(out, fast)
    val = dm.val_dataset
    tok, by_level, seconds["reconstruction"] = score_exported_tokenizer(
        out, val, lambda tok, loader: reconstruction_by_level(tok, loader, res))

    # one held-out object per class: its input points, decoded from 1..K levels, then the true mesh
    K, size, eye, rows, first = tok.quantize.num_levels, 128, camera_views(1)[0], [], {}
    for i, rec in enumerate(val.records):
        first.setdefault(rec.label, i)
    for cls, i in sorted(first.items()):
        item = val[i]
        idx = tok.points_to_indices(item["points"][None])
        pics = [splat_points(item["points"].numpy(), eye, size)]
        for k in range(1, K + 1):
            mesh = tok.indices_to_meshes(idx, res, upto=k)[0]
            pics.append(None if mesh is None else shade(mesh, eye, size))
        pics.append(shade(normalize_mesh(load_mesh(val.records[i].path)), eye, size))
        rows.append(tile_row(pics, size))
    save_png(labelled(stack_rows(rows), sorted(first),
                      ["points", *(f"1-{k}" for k in range(1, K + 1)), "truth"]), out / "reconstruction_by_level.png")

    t = time.perf_counter()
    gen, gtok = load_generator(out / "export")
    n = PER_CLASS[i_fast]
    rep = generate_to_folder(gen, gtok, out / "generated", n=n, fmt="obj", points=METRIC_POINTS, seed=0,
                             resolution=res, progress=False)
    seconds["generation"] = time.perf_counter() - t
    classes = list(dm.classes)
    generated, reference, pics = {}, {}, []
    for c in classes:
        clouds = [out / "generated" / f"{c}_{i}_points.ply" for i in range(n)]
        clouds = [p for p in clouds if p.is_file()]
        generated[c] = torch.stack([torch.as_tensor(load_point_cloud(p), dtype=torch.float32) for p in clouds]) \
            if clouds else torch.empty(0, METRIC_POINTS, 3)
        ref_meshes = [normalize_mesh(load_mesh(val.records[i].path)) for i in range(len(val)) if val.records[i].label == c]
        reference[c] = meshes_to_points(ref_meshes, METRIC_POINTS)[0]
        pics.append(tile_row([splat_points(generated[c][i].numpy(), eye, size) for i in range(len(generated[c]))]
                           or [None], size))
    import trimesh

    meshes = mesh_summary([trimesh.load(out / "generated" / f"{s}.obj", force="mesh") for s in rep.written])
    t = time.perf_counter()
    scores = generation_scores(generated, reference)
    seconds["metrics"] = time.perf_counter() - t
    save_png(labelled(stack_rows(pics), classes), out / "generated_points_per_class.png")
    previews = [[read_png(p) for i in range(min(n, 2)) if (p := out / "generated" / f"{c}_{i}.png").is_file()]
                for c in classes]  # one row per class: two shapes, each mesh | points
    if any(previews):
        save_png(labelled(stack_rows([tile_row(row, gap=12) for row in previews if row]),
                          [c for c, row in zip(classes, previews) if row]), out / "generated_previews.png")

    curves = training_curves({"tokenizer": (out / "tokenizer", ["train/loss", "train/bce", "train/bce_prefix", "train/latent",
                                                                "train/usage"]),
                              "generator": (out / "generator", ["train/loss", "train/acc", "train/acc_tail"])},
                             out, "g3pt")
    metrics = {"reconstruction_by_level": {str(k): v for k, v in by_level.items()}, "generation": scores,
               "generated": {"written": len(rep.written), **meshes, "empty": rep.empty, "per_class": n},
               "steps": {k: v[i_fast] for k, v in STEPS.items()}, "seconds": seconds,
               "tokens": tok.schedule.total_tokens, "resolution": res, "threads": torch.get_num_threads(), "fast": fast}
    atomic_write(out / "metrics.json", lambda p: Path(p).write_text(json.dumps(metrics, indent=2)))
    return _markdown(metrics, classes, tok, curves)


def _mmd_table(by_class: dict, classes: list[str], scale: float) -> str:
    rows = ["| generated \\ reference | " + " | ".join(classes) + " |", "|---" * (len(classes) + 1) + "|"]
    for c in classes:
        if c in by_class["mmd"]:
            best = min(by_class["mmd"][c], key=by_class["mmd"][c].get)
            cells = [(f"**{by_class['mmd'][c][r] * scale:.2f}**" if r == best else f"{by_class['mmd'][c][r] * scale:.2f}")
                     for r in classes]
            rows.append(f"| {c} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _markdown(m: dict, classes: list[str], tok, curves: str = "") -> str:
    from scalear.domains.g3pt.evaluate import format_reconstruction_table

    rec = {int(k): v for k, v in m["reconstruction_by_level"].items()}
    g, s, gen = m["generation"], m["seconds"], m["generated"]
    a = g["all"]
    sizes = ", ".join(str(x) for x in tok.quantize.patch_nums)
    return f"""## G3PT: point clouds and meshes on procedural chairs, tables, mugs and lamps

Built-in data: the SAR3D procedural objects as point clouds (farthest-point samples of the surface) with
occupancy queries labelled by the generalized winding number. Tiny Cross-scale VQ tokenizer (levels of detail of {sizes}
tokens = {m['tokens']}, lookup-free quantization with {tok.quantize.vocab_size} codes; {m['steps']['tokenizer']} steps,
{s['tokenizer'] / 60:.1f} min) and class-conditional Cross-scale Querying Transformer ({m['steps']['generator']} steps,
{s['generator'] / 60:.1f} min) on {m['threads']} CPU thread(s).

Held-out objects reconstructed from their first k levels of detail (occupancy BCE / IoU at the query points;
Chamfer between the decoded mesh, marching cubes at {m['resolution']}^3, and the input points):

{format_reconstruction_table(rec)}

One held-out object per class: input points, decoded from levels 1, 1..2, ..., 1..K, then the true mesh:

![reconstruction by level](g3pt/reconstruction_by_level.png)

Generated: {gen['per_class']} shapes per class (cfg 3, top-p 0.9), {gen['written']} written as a point cloud (PLY),
a mesh (OBJ) and a preview: {gen['valid']} load back with a finite volume, {gen['watertight']} are closed (watertight;
at most {gen['max_components']} pieces in one object), {len(gen['empty'])} empty fields
({s['generation']:.1f} s in all). Against all {g['reference']} held-out objects: COV {a['cov_cd']:.2f} / MMD
{a['mmd_cd'] * 1e3:.2f} (CD-L2 x 1e3) / 1-NNA {a['1nna_cd']:.2f} with Chamfer, COV {a['cov_emd']:.2f} / MMD
{a['mmd_emd'] * 1e2:.2f} (x 1e2) / 1-NNA {a['1nna_emd']:.2f} with EMD ({g['emd_points']} points). MMD of each class's
samples to the held-out objects of each class (row's best in bold; own class closest for
{g['by_class_cd']['own_class_closest']:.0%} of the classes with Chamfer, {g['by_class_emd']['own_class_closest']:.0%}
with EMD), Chamfer-L2 x 1e3:

{_mmd_table(g['by_class_cd'], classes, 1e3)}

EMD x 1e2:

{_mmd_table(g['by_class_emd'], classes, 1e2)}

Generated point clouds, one row per class ({', '.join(classes)}), and mesh | points previews (two per class):

![generated point clouds](g3pt/generated_points_per_class.png)

![generated previews](g3pt/generated_previews.png)

{curves}

Your shapes: `scalear g3pt generate --model OUT/g3pt/export --class chair --n 4 --format glb --out shapes`.
"""


__all__ = ["STEPS", "TRAIN_PER_CLASS", "PER_CLASS", "RESOLUTION", "train", "run"]
