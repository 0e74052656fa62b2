"""3D geometry metrics on point tensors: nearest neighbours, Chamfer, F-score, normal consistency, volume IoU,
and the generation set metrics COV / MMD / 1-NNA.

Point sets are batched ``(B, N, d)`` tensors (``d = 3`` in practice); every per-shape metric returns one value
per batch item, ``(B,)``. All ops work on any device and float dtype and are differentiable in the point
coordinates: neighbours are found without gradients, and their distances are recomputed in torch through a
gather. The neighbour search (``backend="auto"``) is scipy's ``cKDTree`` for points on the CPU (exact, about 100x
faster than a dense search from 1k points up: 30k x 30k points in 0.03 s on one core), ``pytorch3d.ops.knn_points``
for CUDA tensors when it is importable, else the exact dense torch search, which runs on any device. All backends
give the same neighbours up to ties between equally near points.

Conventions, with ``d(p, Q) = min_q ||p - q||`` (Euclidean) the distance of a point to a set:

* CD-L2 (PointFlow, PoinTr ``ChamferDistanceL2``): ``mean_x d(x, Y)^2 + mean_y d(y, X)^2`` (sum of the two
  directions, squared distances). The generation metrics use this one, as PointFlow does.
* CD-L1 (PoinTr ``ChamferDistanceL1``, Occupancy Networks' "Chamfer-L1"):
  ``0.5 * (mean_x d(x, Y) + mean_y d(y, X))`` (average of the two directions, unsquared distances).
* F-score@t (Tatarchenko et al., CVPR 2019): precision = fraction of predicted points with ``d(x, GT) < t``,
  recall = fraction of GT points with ``d(y, pred) < t``, ``F = 2PR / (P + R)`` (0 when P = R = 0).
* Normal consistency (Mescheder et al., Occupancy Networks, CVPR 2019): ``0.5 * (mean_x |<n_x, n_NN(x)>| +
  mean_y |<n_y, n_NN(y)>|)`` with unit normals and NN the nearest point of the other set (sign-invariant).
* Volume IoU (Occupancy Networks): ``|A & B| / |A | B|`` of occupancies at the same query points.
* EMD (PointFlow's ``emd_approx`` made exact): ``mean_i ||x_i - y_pi(i)||`` for the one-to-one matching ``pi``
  of two equal-size sets with the least total Euclidean distance (mean, not sum, of unsquared distances).
* COV, MMD (Achlioptas et al., ICML 2018) and 1-NNA (Yang et al., PointFlow, ICCV 2019) on CD-L2 matrices, and
  on EMD matrices when asked (:func:`generation_metrics`).

Example:
    >>> x = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]])
    >>> y = torch.tensor([[[0.0, 0.0, 0.0]]])
    >>> cd = chamfer_distance(x, y)
    >>> cd.l2.tolist(), cd.l1.tolist()
    ([0.5], [0.25])
"""

from __future__ import annotations

from typing import Literal, NamedTuple, Sequence

import torch

Backend = Literal["auto", "kdtree", "torch", "pytorch3d"]
Reduction = Literal["none", "mean", "sum"]

#: upper bound on the elements of one block of squared distances in the torch search (B * chunk * M)
KNN_BLOCK_ELEMENTS = 1 << 24

try:  # optional accelerator; never required
    from pytorch3d.ops import knn_points as _p3d_knn_points
except ImportError:  # pragma: no cover - depends on the environment
    _p3d_knn_points = None


class Chamfer(NamedTuple):
    """Per-item Chamfer distances (see the module docstring for both conventions)."""

    l2: torch.Tensor
    l1: torch.Tensor


class FScore(NamedTuple):
    """Per-item precision, recall and F-score at one threshold."""

    precision: torch.Tensor
    recall: torch.Tensor
    fscore: torch.Tensor


def _check_points(x: torch.Tensor, name: str, d: int | None = None) -> None:
    if x.dim() != 3 or x.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty batch of point sets (B, N, d), got shape {tuple(x.shape)}; "
                         "add a batch dimension with x[None]")
    if d is not None and x.shape[-1] != d:
        raise ValueError(f"{name} has {x.shape[-1]}-dimensional points, expected {d}")


def _check_pair(x: torch.Tensor, y: torch.Tensor, xn: str = "x", yn: str = "y") -> None:
    _check_points(x, xn)
    _check_points(y, yn, x.shape[-1])
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{xn} and {yn} have batch sizes {x.shape[0]} and {y.shape[0]}")


def _reduce(v_B: torch.Tensor, reduction: Reduction) -> torch.Tensor:
    if reduction == "none":
        return v_B
    if reduction == "mean":
        return v_B.mean()
    if reduction == "sum":
        return v_B.sum()
    raise ValueError(f"reduction must be 'none', 'mean' or 'sum', got {reduction!r}")


@torch.no_grad()
def _knn_idx_torch(x_BNd: torch.Tensor, y_BMd: torch.Tensor, k: int, chunk_size: int | None) -> torch.Tensor:
    """Indices ``(B, N, k)`` of the k nearest ``y`` of every ``x``, by exact distances in blocks."""
    B, N = x_BNd.shape[:2]
    M = y_BMd.shape[1]
    chunk = chunk_size or max(1, KNN_BLOCK_ELEMENTS // max(1, B * M))
    idx = []
    for s in range(0, N, chunk):
        # differences, not ||x||^2 + ||y||^2 - 2xy: exact (no cancellation, no TF32); memory B*c*M
        dist_BcM = torch.cdist(x_BNd[:, s : s + chunk], y_BMd, compute_mode="donot_use_mm_for_euclid_dist")
        if k == 1:
            idx.append(dist_BcM.argmin(-1, keepdim=True))
        else:
            idx.append(dist_BcM.topk(k, dim=-1, largest=False, sorted=True).indices)
    return torch.cat(idx, 1)


@torch.no_grad()
def _knn_idx_kdtree(x_BNd: torch.Tensor, y_BMd: torch.Tensor, k: int) -> torch.Tensor:
    """Indices ``(B, N, k)`` of the k nearest ``y`` of every ``x``, by one scipy ``cKDTree`` per item (float64)."""
    from scipy.spatial import cKDTree

    workers = max(1, torch.get_num_threads())
    idx = []
    for x_Nd, y_Md in zip(x_BNd.detach().cpu().double().numpy(), y_BMd.detach().cpu().double().numpy()):
        _, i = cKDTree(y_Md).query(x_Nd, k=k, workers=workers)
        idx.append(torch.from_numpy(i.reshape(len(x_Nd), k).astype("int64")))
    return torch.stack(idx).to(x_BNd.device)


def knn(x_BNd: torch.Tensor, y_BMd: torch.Tensor, k: int = 1, chunk_size: int | None = None,
        backend: Backend = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Exact k nearest neighbours in ``y`` of every point of ``x``: ``(dist2_BNk, idx_BNk)``, nearest first.

    ``dist2`` are squared Euclidean distances, differentiable in ``x`` and ``y``. ``backend="auto"`` searches with
    a KD-tree (``"kdtree"``) on the CPU, with pytorch3d's ``knn_points`` for CUDA tensors when it is installed, else
    densely (``"torch"``, ``chunk_size`` points of ``x`` at a time; default: blocks of at most
    :data:`KNN_BLOCK_ELEMENTS` distances). Ties between equally near points may be broken differently.
    """
    _check_pair(x_BNd, y_BMd)
    if not 1 <= k <= y_BMd.shape[1]:
        raise ValueError(f"k must be in [1, {y_BMd.shape[1]}] (the size of y), got {k}")
    if backend not in ("auto", "kdtree", "torch", "pytorch3d"):
        raise ValueError(f"backend must be 'auto', 'kdtree', 'torch' or 'pytorch3d', got {backend!r}")
    if backend == "pytorch3d" and _p3d_knn_points is None:
        raise ImportError("backend='pytorch3d' needs pytorch3d installed; use backend='torch'")
    if backend == "pytorch3d" or (backend == "auto" and _p3d_knn_points is not None and x_BNd.is_cuda):
        out = _p3d_knn_points(x_BNd, y_BMd, K=k, return_sorted=True)
        return out.dists, out.idx
    if backend == "kdtree" or (backend == "auto" and not x_BNd.is_cuda and not y_BMd.is_cuda):
        idx_BNk = _knn_idx_kdtree(x_BNd, y_BMd, k)
    else:
        idx_BNk = _knn_idx_torch(x_BNd, y_BMd, k, chunk_size)
    B, N, d = x_BNd.shape
    nn_BNkd = torch.gather(y_BMd, 1, idx_BNk.reshape(B, N * k, 1).expand(B, N * k, d)).reshape(B, N, k, d)
    dist2_BNk = ((x_BNd[:, :, None] - nn_BNkd) ** 2).sum(-1)
    return dist2_BNk, idx_BNk


def _nn_both(x_BNd: torch.Tensor, y_BMd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(dist2_x_BN, idx_x_BN, dist2_y_BM, idx_y_BM)``: each point's squared distance to, and index of, its
    nearest neighbour in the other set."""
    d2x, ix = knn(x_BNd, y_BMd)
    d2y, iy = knn(y_BMd, x_BNd)
    return d2x[..., 0], ix[..., 0], d2y[..., 0], iy[..., 0]


def _sqrt(d2: torch.Tensor) -> torch.Tensor:
    """``sqrt`` with a zero (not NaN) gradient at 0, for coincident points."""
    pos = d2 > 0
    return torch.where(pos, torch.where(pos, d2, torch.ones_like(d2)).sqrt(), torch.zeros_like(d2))


def chamfer_distance(x_BNd: torch.Tensor, y_BMd: torch.Tensor, reduction: Reduction = "none") -> Chamfer:
    """Chamfer distances ``Chamfer(l2, l1)``, each ``(B,)`` (or reduced over the batch).

    ``l2 = mean_x d(x,Y)^2 + mean_y d(y,X)^2`` (PointFlow / PoinTr ``ChamferDistanceL2``; Occupancy Networks'
    Chamfer-L2 is half of it); ``l1 = 0.5 * (mean_x d(x,Y) + mean_y d(y,X))`` (PoinTr ``ChamferDistanceL1``,
    Occupancy Networks' Chamfer-L1). Symmetric in ``x`` and ``y``; the sets may differ in size.
    """
    d2x_BN, _, d2y_BM, _ = _nn_both(x_BNd, y_BMd)
    l2_B = d2x_BN.mean(1) + d2y_BM.mean(1)
    l1_B = 0.5 * (_sqrt(d2x_BN).mean(1) + _sqrt(d2y_BM).mean(1))
    return Chamfer(_reduce(l2_B, reduction), _reduce(l1_B, reduction))


def fscore(x_pred_BNd: torch.Tensor, y_gt_BMd: torch.Tensor, threshold: float) -> FScore:
    """F-score at distance ``threshold`` (Tatarchenko et al., "What Do Single-view 3D Reconstruction Networks
    Learn?", CVPR 2019): ``FScore(precision, recall, fscore)``, each ``(B,)``.

    precision = fraction of predicted points with ``d(x, GT) < threshold`` (strict, as their code), recall =
    fraction of GT points with ``d(y, pred) < threshold``, ``F = 2PR / (P + R)``, 0 when both are 0.
    """
    if threshold <= 0:
        raise ValueError(f"threshold must be > 0, got {threshold}")
    _check_pair(x_pred_BNd, y_gt_BMd, "x_pred", "y_gt")
    d2x_BN, _, d2y_BM, _ = _nn_both(x_pred_BNd, y_gt_BMd)
    t2 = threshold**2
    p_B = (d2x_BN < t2).to(x_pred_BNd.dtype).mean(1)
    r_B = (d2y_BM < t2).to(x_pred_BNd.dtype).mean(1)
    pr_B = p_B + r_B
    f_B = 2 * p_B * r_B / torch.where(pr_B > 0, pr_B, torch.ones_like(pr_B))  # 0 / 1 = 0 when P = R = 0
    return FScore(p_B, r_B, f_B)


def normal_consistency(x_BNd: torch.Tensor, nx_BNd: torch.Tensor, y_BMd: torch.Tensor,
                       ny_BMd: torch.Tensor) -> torch.Tensor:
    """Normal consistency ``(B,)`` (Occupancy Networks, Mescheder et al. CVPR 2019, ``eval.py``):
    ``0.5 * (mean_x |<n_x, n_NN(x)>| + mean_y |<n_y, n_NN(y)>|)``, normals normalised to unit length first.

    NN is the nearest point of the other set; the absolute value makes it invariant to normal orientation.
    1 for identical surfaces with any signs, 0 for everywhere perpendicular normals.
    """
    _check_pair(x_BNd, y_BMd)
    if nx_BNd.shape != x_BNd.shape or ny_BMd.shape != y_BMd.shape:
        raise ValueError(f"normals must match their points' shapes: nx {tuple(nx_BNd.shape)} vs x "
                         f"{tuple(x_BNd.shape)}, ny {tuple(ny_BMd.shape)} vs y {tuple(y_BMd.shape)}")
    nx_BNd = torch.nn.functional.normalize(nx_BNd, dim=-1)
    ny_BMd = torch.nn.functional.normalize(ny_BMd, dim=-1)
    _, ix_BN, _, iy_BM = _nn_both(x_BNd, y_BMd)
    d = x_BNd.shape[-1]
    nnx_BNd = torch.gather(ny_BMd, 1, ix_BN[..., None].expand(-1, -1, d))  # normal of x's nearest y
    nny_BMd = torch.gather(nx_BNd, 1, iy_BM[..., None].expand(-1, -1, d))
    cx_B = (nx_BNd * nnx_BNd).sum(-1).abs().mean(1)
    cy_B = (ny_BMd * nny_BMd).sum(-1).abs().mean(1)
    return 0.5 * (cx_B + cy_B)


def volume_iou(occ_a_BP: torch.Tensor, occ_b_BP: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Volume IoU ``|A & B| / |A | B|`` per item, ``(B,)`` float (Occupancy Networks ``compute_iou``).

    Occupancies of the same ``P`` query points, ``(B, P, ...)``: booleans, or probabilities counted occupied
    when ``>= threshold``. Two empty shapes have IoU 1.
    """
    if occ_a_BP.shape != occ_b_BP.shape or occ_a_BP.dim() < 2:
        raise ValueError(f"occupancies must have the same shape (B, P, ...), got {tuple(occ_a_BP.shape)} and "
                         f"{tuple(occ_b_BP.shape)}")
    a, b = (o.flatten(1) if o.dtype == torch.bool else o.flatten(1) >= threshold for o in (occ_a_BP, occ_b_BP))
    inter_B = (a & b).sum(1)
    union_B = (a | b).sum(1)
    return torch.where(union_B > 0, inter_B / union_B.clamp(min=1), torch.ones_like(union_B, dtype=torch.float))


def pairwise_chamfer(set_a_ANd: torch.Tensor, set_b_BMd: torch.Tensor | None = None,
                     batch_size: int = 64) -> torch.Tensor:
    """``(A, B)`` matrix of CD-L2 between every shape of ``set_a`` and every shape of ``set_b``.

    ``batch_size`` pairs go through :func:`chamfer_distance` at a time. With ``set_b=None`` the matrix of
    ``set_a`` against itself is computed from its upper triangle (zero diagonal). No gradients.
    """
    return _pairwise(lambda a, b: chamfer_distance(a, b).l2, set_a_ANd, set_b_BMd, batch_size)


def coverage(D_gr: torch.Tensor) -> float:
    """COV (Achlioptas et al. 2018): fraction of reference shapes that are the nearest reference of at least one
    generated shape; ``D_gr`` is the ``(G, R)`` distance matrix, generated x reference. Higher is better."""
    if D_gr.dim() != 2 or 0 in D_gr.shape:
        raise ValueError(f"D_gr must be a non-empty (G, R) matrix, got shape {tuple(D_gr.shape)}")
    return D_gr.argmin(1).unique().numel() / D_gr.shape[1]


def mmd(D_gr: torch.Tensor) -> float:
    """MMD (Achlioptas et al. 2018, "minimum matching distance"): mean over reference shapes of the distance to
    their nearest generated shape; ``D_gr`` is ``(G, R)``. Lower is better (papers often print it x 1e3)."""
    if D_gr.dim() != 2 or 0 in D_gr.shape:
        raise ValueError(f"D_gr must be a non-empty (G, R) matrix, got shape {tuple(D_gr.shape)}")
    return D_gr.min(0).values.mean().item()


def one_nna(D_gg: torch.Tensor, D_rr: torch.Tensor, D_gr: torch.Tensor) -> float:
    """1-NNA (Yang et al., PointFlow 2019; Lopez-Paz & Oquab 2017): leave-one-out accuracy of the 1-nearest-
    neighbour classifier telling generated from reference shapes in ``G + R`` pooled shapes.

    ``D_gg`` ``(G, G)``, ``D_rr`` ``(R, R)``, ``D_gr`` ``(G, R)``. 0.5 is ideal (indistinguishable sets); 1.0
    means every shape's nearest neighbour is from its own set. Ties go to the lower pooled index, generated first.
    """
    G, R = D_gr.shape
    if D_gg.shape != (G, G) or D_rr.shape != (R, R):
        raise ValueError(f"expected D_gg ({G}, {G}), D_rr ({R}, {R}) for D_gr ({G}, {R}), got "
                         f"{tuple(D_gg.shape)} and {tuple(D_rr.shape)}")
    M = torch.cat([torch.cat([D_gg, D_gr], 1), torch.cat([D_gr.T, D_rr], 1)], 0).clone()
    M.fill_diagonal_(float("inf"))  # leave one out
    label = torch.cat([torch.ones(G, dtype=torch.bool), torch.zeros(R, dtype=torch.bool)]).to(M.device)
    return (label[M.argmin(1)] == label).float().mean().item()


def _assignment(x_Nd: torch.Tensor, y_Nd: torch.Tensor) -> torch.Tensor:
    """The permutation ``pi`` (N,) int64 minimising ``sum_i ||x_i - y_pi(i)||`` (scipy's Hungarian-type solver)."""
    from scipy.optimize import linear_sum_assignment

    a = x_Nd.detach().to("cpu", torch.float64)
    b = y_Nd.detach().to("cpu", torch.float64)
    cost_NN = ((a[:, None] - b[None]) ** 2).sum(-1).sqrt()  # exact differences, no matmul cancellation
    rows, cols = linear_sum_assignment(cost_NN.numpy())
    pi = torch.empty(len(rows), dtype=torch.int64)
    pi[torch.from_numpy(rows)] = torch.from_numpy(cols)
    return pi


def emd(x_BNd: torch.Tensor, y_BNd: torch.Tensor, reduction: Reduction = "none") -> torch.Tensor:
    """Exact Earth Mover's distance ``(B,)`` between equal-size point sets: the mean Euclidean distance of the
    optimal one-to-one matching, ``min_pi mean_i ||x_i - y_pi(i)||`` (PointFlow's EMD convention: mean of matched
    unsquared distances; PointFlow approximates the matching by auction, we solve it exactly).

    The matching is found by linear assignment (``scipy.optimize.linear_sum_assignment``) on the ``(N, N)``
    Euclidean distance matrix, on the CPU in float64, one item at a time: **O(N^3) time and O(N^2) memory**, meant
    for small sets (a few thousand points at most; 2048 points take about 2 s on one core). The distances of the
    matched pairs are recomputed in torch, so the result is differentiable in ``x`` and ``y``. Symmetric;
    0 iff the sets are equal as multisets; at least the one-sided nearest-neighbour means ``mean_x d(x, Y)``
    and ``mean_y d(y, X)``.

    Example:
        >>> x = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]])
        >>> emd(x, x.flip(1)).tolist(), emd(x, x + torch.tensor([0.0, 3.0, 4.0])).tolist()
        ([0.0], [5.0])
    """
    _check_pair(x_BNd, y_BNd)
    if x_BNd.shape[1] != y_BNd.shape[1]:
        raise ValueError(f"EMD needs sets of equal size, got {x_BNd.shape[1]} and {y_BNd.shape[1]} points; "
                         "subsample the larger one first (e.g. farthest point sampling)")
    pi_BN = torch.stack([_assignment(x, y) for x, y in zip(x_BNd, y_BNd)]).to(y_BNd.device)
    d = x_BNd.shape[-1]
    matched_BNd = torch.gather(y_BNd, 1, pi_BN[..., None].expand(-1, -1, d))
    return _reduce(_sqrt(((x_BNd - matched_BNd) ** 2).sum(-1)).mean(1), reduction)


def _pairwise(dist, set_a_ANd: torch.Tensor, set_b_BMd: torch.Tensor | None, batch_size: int) -> torch.Tensor:
    """``(A, B)`` matrix of ``dist(a_PNd, b_PMd) -> (P,)`` over all pairs (upper triangle when ``set_b`` is None)."""
    _check_points(set_a_ANd, "set_a")
    same = set_b_BMd is None
    set_b_BMd = set_a_ANd if same else set_b_BMd
    _check_points(set_b_BMd, "set_b", set_a_ANd.shape[-1])
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    A, B = set_a_ANd.shape[0], set_b_BMd.shape[0]
    dev = set_a_ANd.device
    if same:
        ia_P, ib_P = torch.triu_indices(A, A, offset=1, device=dev)
    else:
        ia_P, ib_P = (g.flatten() for g in torch.meshgrid(torch.arange(A, device=dev), torch.arange(B, device=dev),
                                                          indexing="ij"))
    D_AB = torch.zeros(A, B, dtype=set_a_ANd.dtype, device=dev)
    with torch.no_grad():
        for s in range(0, ia_P.numel(), batch_size):
            ia, ib = ia_P[s : s + batch_size], ib_P[s : s + batch_size]
            D_AB[ia, ib] = dist(set_a_ANd[ia], set_b_BMd[ib]).to(D_AB.dtype)
    return D_AB + D_AB.T if same else D_AB


def pairwise_emd(set_a_ANd: torch.Tensor, set_b_BNd: torch.Tensor | None = None, batch_size: int = 64) -> torch.Tensor:
    """``(A, B)`` matrix of exact :func:`emd` between every shape of ``set_a`` and every shape of ``set_b`` (all
    with the same number of points). With ``set_b=None``: ``set_a`` against itself from its upper triangle
    (symmetric, zero diagonal). ``A * B`` assignments of O(N^3) each: for small sets. No gradients."""
    if set_b_BNd is not None and set_b_BNd.dim() == 3 and set_a_ANd.dim() == 3 \
            and set_b_BNd.shape[1] != set_a_ANd.shape[1]:
        raise ValueError(f"EMD needs sets of equal size, got {set_a_ANd.shape[1]} and {set_b_BNd.shape[1]} points")
    return _pairwise(emd, set_a_ANd, set_b_BNd, batch_size)


def _set_metrics(D_gr: torch.Tensor, D_gg: torch.Tensor, D_rr: torch.Tensor) -> dict[str, float]:
    return {"cov": coverage(D_gr), "mmd": mmd(D_gr), "1nna": one_nna(D_gg, D_rr, D_gr)}


def generation_metrics(gen_GNd: torch.Tensor, ref_RMd: torch.Tensor, batch_size: int = 64,
                       distances: Sequence[str] = ("cd",)) -> dict[str, float]:
    """COV, MMD and 1-NNA of generated against reference point clouds (PointFlow's ``compute_all_metrics``
    protocol; normalise the clouds the same way first, as the papers do), for each of ``distances``:
    ``"cd"`` (CD-L2) and / or ``"emd"`` (exact :func:`emd`, which needs equal-size clouds and is slow: O(N^3) per
    pair, ``(G + R)^2 / 2`` pairs).

    Keys ``cov_<d>``, ``mmd_<d>``, ``1nna_<d>`` per distance, and, when ``"cd"`` is asked, also the unsuffixed
    ``cov``, ``mmd``, ``1nna`` (CD-L2; the keys of earlier versions). The default gives just those three.
    """
    unknown = [d for d in distances if d not in ("cd", "emd")]
    if unknown or not distances:
        raise ValueError(f"distances must be a non-empty subset of ('cd', 'emd'), got {tuple(distances)}")
    pair = {"cd": pairwise_chamfer, "emd": pairwise_emd}
    out: dict[str, float] = {}
    for name in dict.fromkeys(distances):
        m = _set_metrics(pair[name](gen_GNd, ref_RMd, batch_size), pair[name](gen_GNd, None, batch_size),
                         pair[name](ref_RMd, None, batch_size))
        if name == "cd":
            out.update(m)
        if tuple(distances) != ("cd",):
            out.update({f"{k}_{name}": v for k, v in m.items()})
    return out


def generation_by_class(generated: dict[str, torch.Tensor], reference: dict[str, torch.Tensor],
                        batch_size: int = 64, distance: str = "cd") -> dict:
    """Per generated class (point sets ``(G, N, 3)``) against every reference class (``(R, N, 3)``), with
    ``distance`` ``"cd"`` (Chamfer-L2) or ``"emd"`` (exact EMD, equal-size clouds):
    ``{"mmd": {gen: {ref: value}}, "cov": {...}, "1nna": {gen: value vs its own class},
    "own_class_closest": fraction of generated classes whose own class has the lowest MMD}``."""
    if distance not in ("cd", "emd"):
        raise ValueError(f"distance must be 'cd' or 'emd', got {distance!r}")
    pairwise = pairwise_chamfer if distance == "cd" else pairwise_emd
    classes = [c for c in generated if len(generated[c])]
    if not classes:
        raise ValueError("no generated objects with a surface to score")
    out: dict = {"mmd": {}, "cov": {}, "1nna": {}}
    for g in classes:
        out["mmd"][g], out["cov"][g] = {}, {}
        for r, ref in reference.items():
            D = pairwise(generated[g], ref, batch_size)
            out["mmd"][g][r], out["cov"][g][r] = mmd(D), coverage(D)
        if g in reference and len(generated[g]) > 1 and len(reference[g]) > 1:
            gen, ref = generated[g], reference[g]
            out["1nna"][g] = one_nna(pairwise(gen, None, batch_size), pairwise(ref, None, batch_size),
                                     pairwise(gen, ref, batch_size))
    own = [g for g in classes if g in reference and min(out["mmd"][g], key=out["mmd"][g].get) == g]
    out["own_class_closest"] = len(own) / len(classes)
    return out
