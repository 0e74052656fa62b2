"""G3PT evaluation: tokenizer reconstruction per number of levels of detail, and generation quality.

Reconstruction ("reconstruction error falls as levels of detail are added"): each held-out object's point cloud
is tokenized, decoded from its first ``k`` levels for every ``k`` and scored against the truth by

* the occupancy BCE and IoU (occupied = logit > 0) at the data's query points (half near the surface, half
  uniform in the cube), and
* Chamfer-L1 / L2 between area-uniform samples of the decoded mesh (marching cubes at ``resolution^3``) and the
  object's input points (farthest-point samples of its true surface); objects whose decoded field has no surface
  are counted (``empty``) and left out of the Chamfer means.

Generation: COV, MMD and 1-NNA (:mod:`scalear.gen3d.metrics`) of generated surface samples against held-out objects,
with Chamfer-L2 and exact EMD, over all classes together and per class (each class's samples against every
class's held-out objects: class-conditional samples should be closest to their own class).
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F

from scalear.domains.g3pt.tokenizer import G3PTTokenizer
from scalear.gen3d.fields import EmptyFieldError, extract_mesh, surface_samples
from scalear.gen3d.metrics import chamfer_distance, generation_by_class, generation_metrics


@torch.no_grad()
def occupancy_scores(logits_BQ: torch.Tensor, occupancy_BQ: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per object: occupancy BCE and IoU of ``logits > 0`` against the labels (IoU 1 when both are empty)."""
    occ = occupancy_BQ.float()
    bce = F.binary_cross_entropy_with_logits(logits_BQ, occ, reduction="none").mean(1)
    pred, true = logits_BQ > 0, occ > 0.5
    union = (pred | true).sum(1)
    iou = torch.where(union > 0, (pred & true).sum(1).float() / union.clamp(min=1), torch.ones_like(bce))
    return bce, iou


@torch.no_grad()
def reconstruction_by_level(tokenizer: G3PTTokenizer, batches: Iterable[dict], resolution: int | None = 48,
                            n_surface: int = 2048) -> dict[int, dict[str, float]]:
    """``{k: {"bce", "iou", "chamfer_l1", "chamfer_l2", "objects", "empty"}}`` for reconstructions from levels
    ``1..k`` of the held-out ``batches`` (``points``, ``query``, ``occupancy``); means over objects.
    ``resolution=None``: occupancy scores only (no meshes, no Chamfer; ``empty`` is then 0)."""
    tokenizer.eval()
    K = tokenizer.quantize.num_levels
    sums = {k: {"bce": 0.0, "iou": 0.0, "chamfer_l1": 0.0, "chamfer_l2": 0.0} for k in range(1, K + 1)}
    count, meshed = 0, {k: 0 for k in sums}
    for batch in batches:
        if "query" not in batch:
            raise ValueError("reconstruction needs occupancy queries: evaluate on meshes (point clouds have none)")
        idx = tokenizer.points_to_indices(batch["points"])
        count += batch["points"].shape[0]
        for k in sums:
            f_hat = tokenizer.indices_to_fhat(idx, k)
            bce, iou = occupancy_scores(tokenizer.occupancy_logits(f_hat, batch["query"]), batch["occupancy"])
            sums[k]["bce"] += float(bce.sum())
            sums[k]["iou"] += float(iou.sum())
            if resolution is None:
                meshed[k] += batch["points"].shape[0]
                continue
            for b, grid in enumerate(tokenizer.fhat_to_grid(f_hat, resolution)):
                try:
                    mesh = extract_mesh(grid, level=0.0)
                except EmptyFieldError:
                    continue
                pts = surface_samples(mesh, n_surface, seed=b)[0][None]
                cd = chamfer_distance(pts, batch["points"][b : b + 1].float())
                sums[k]["chamfer_l1"] += float(cd.l1[0])
                sums[k]["chamfer_l2"] += float(cd.l2[0])
                meshed[k] += 1
    if not count:
        raise ValueError("no held-out objects to evaluate")
    out = {}
    for k, s in sums.items():
        m = {"bce": s["bce"] / count, "iou": s["iou"] / count, "objects": count, "empty": count - meshed[k]}
        if meshed[k] and resolution is not None:
            m |= {"chamfer_l1": s["chamfer_l1"] / meshed[k], "chamfer_l2": s["chamfer_l2"] / meshed[k]}
        out[k] = m
    return out


def generation_scores(generated: dict[str, torch.Tensor], reference: dict[str, torch.Tensor],
                      emd_points: int = 256) -> dict:
    """COV / MMD / 1-NNA of generated against reference point sets (``{class: (G, N, 3)}``), with Chamfer-L2 on
    all ``N`` points and exact EMD on the first ``emd_points`` (EMD is O(N^3) per pair):
    ``{"all": generation_metrics(...), "by_class_cd": ..., "by_class_emd": ...}``."""
    gen = torch.cat([g for g in generated.values() if len(g)])
    ref = torch.cat(list(reference.values()))
    n = min(emd_points, gen.shape[1], ref.shape[1])
    all_cd = generation_metrics(gen, ref, distances=("cd",))
    all_emd = generation_metrics(gen[:, :n].contiguous(), ref[:, :n].contiguous(), distances=("emd",))
    sub = lambda d: {c: v[:, :n].contiguous() for c, v in d.items()}  # noqa: E731
    return {"all": {**{f"{k}_cd": v for k, v in all_cd.items()}, **all_emd},
            "by_class_cd": generation_by_class(generated, reference, distance="cd"),
            "by_class_emd": generation_by_class(sub(generated), sub(reference), distance="emd"),
            "emd_points": n, "generated": int(gen.shape[0]), "reference": int(ref.shape[0])}


def format_reconstruction_table(by_level: dict[int, dict[str, float]]) -> str:
    cols = ("bce", "iou", "chamfer_l1", "chamfer_l2")
    lines = ["| levels | " + " | ".join(cols) + " | objects | empty |", "|---" * (len(cols) + 3) + "|"]
    for k, m in by_level.items():
        cells = [f"{m[c]:.4f}" if c in m else "-" for c in cols]
        lines.append(f"| 1..{k} | " + " | ".join(cells) + f" | {m['objects']} | {m['empty']} |")
    return "\n".join(lines)


__all__ = ["occupancy_scores", "reconstruction_by_level", "generation_scores", "format_reconstruction_table"]
