"""3D metrics: brute-force and hand-computed values (PoinTr / PointFlow / Occupancy Networks conventions)."""

import math

import pytest
import torch

from scalear.gen3d import metrics as metrics3d
from scalear.gen3d.metrics import (
    chamfer_distance,
    coverage,
    emd,
    fscore,
    generation_metrics,
    knn,
    mmd,
    normal_consistency,
    one_nna,
    pairwise_chamfer,
    pairwise_emd,
    volume_iou,
)

pytestmark = pytest.mark.usefixtures("single_thread")


def _pts(*rows):
    return torch.tensor([rows], dtype=torch.float64)


def test_knn_matches_brute_force_and_chunks():
    x, y = torch.randn(2, 50, 3, dtype=torch.float64), torch.randn(2, 40, 3, dtype=torch.float64)
    d2_BNM = ((x[:, :, None] - y[:, None]) ** 2).sum(-1)
    ref_d2, ref_idx = d2_BNM.topk(4, dim=-1, largest=False, sorted=True)
    for chunk in (None, 1, 7, 50, 1000):
        d2, idx = knn(x, y, k=4, chunk_size=chunk, backend="torch")
        assert idx.shape == (2, 50, 4) and torch.equal(idx, ref_idx)
        torch.testing.assert_close(d2, ref_d2)
    d2, idx = knn(x, y, backend="torch")
    assert torch.equal(idx[..., 0], d2_BNM.argmin(-1))


def test_kdtree_search_equals_the_dense_search():
    """The CPU default (scipy cKDTree) finds the same neighbours as the exact dense search; distances and their
    gradients come through the same gather; Chamfer agrees with the dense search's to 1e-6 relative."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(2, 3000, 3, generator=g), torch.rand(2, 2500, 3, generator=g)
    for k in (1, 3):
        d2_kd, i_kd = knn(x, y, k=k, backend="kdtree")
        d2_t, i_t = knn(x, y, k=k, backend="torch")
        assert torch.equal(i_kd, i_t) and torch.equal(d2_kd, d2_t)
    assert torch.equal(knn(x, y)[1], knn(x, y, backend="kdtree")[1])  # auto on the CPU is the KD-tree
    xg = x.clone().requires_grad_(True)
    knn(xg, y, backend="kdtree")[0].sum().backward()
    assert torch.isfinite(xg.grad).all() and xg.grad.abs().sum() > 0
    cd_auto = chamfer_distance(x, y)
    d2x, _ = knn(x, y, backend="torch")
    d2y, _ = knn(y, x, backend="torch")
    l2 = d2x[..., 0].mean(1) + d2y[..., 0].mean(1)
    torch.testing.assert_close(cd_auto.l2, l2, rtol=1e-6, atol=0)


def test_knn_gradients_and_errors():
    x = torch.randn(1, 5, 3, requires_grad=True)
    y = torch.randn(1, 6, 3)
    d2, _ = knn(x, y, backend="torch")
    d2.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="batch"):
        knn(torch.randn(5, 3), y)
    with pytest.raises(ValueError, match="k must be"):
        knn(x, y, k=7)
    with pytest.raises(ValueError, match="batch sizes"):
        knn(torch.randn(2, 5, 3), y)


def test_chamfer_zero_symmetric_and_translation():
    x, y = torch.randn(3, 20, 3), torch.randn(3, 15, 3)
    cd = chamfer_distance(x, x)
    assert torch.equal(cd.l2, torch.zeros(3)) and torch.equal(cd.l1, torch.zeros(3))
    a, b = chamfer_distance(x, y), chamfer_distance(y, x)
    torch.testing.assert_close(a.l2, b.l2)
    torch.testing.assert_close(a.l1, b.l1)
    assert a.l2.shape == (3,) and chamfer_distance(x, y, reduction="mean").l2.shape == ()
    torch.testing.assert_close(chamfer_distance(x, y, reduction="sum").l1, a.l1.sum())
    t = torch.tensor([1.0, 2.0, -2.0], dtype=torch.float64)  # |t|^2 = 9, |t| = 3
    p = _pts([0.5, 0.0, 1.0])
    cd = chamfer_distance(p, p + t)
    assert cd.l2.item() == pytest.approx(2 * 9.0) and cd.l1.item() == pytest.approx(3.0)


def test_chamfer_hand_computed():
    # x = {(0,0,0), (2,0,0)}, y = {(0,0,0), (0,1,0), (0,0,3)}
    x = _pts([0, 0, 0], [2, 0, 0])
    y = _pts([0, 0, 0], [0, 1, 0], [0, 0, 3])
    # x -> y: 0, 2 (d^2 0, 4); y -> x: 0, 1, 3 (d^2 0, 1, 9)
    cd = chamfer_distance(x, y)
    assert cd.l2.item() == pytest.approx((0 + 4) / 2 + (0 + 1 + 9) / 3)
    assert cd.l1.item() == pytest.approx(0.5 * ((0 + 2) / 2 + (0 + 1 + 3) / 3))


def test_chamfer_gradient_finite_at_coincident_points():
    x = torch.zeros(1, 2, 3, requires_grad=True)
    cd = chamfer_distance(x, torch.zeros(1, 1, 3))
    (cd.l1 + cd.l2).sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_fscore():
    y = torch.rand(2, 30, 3)
    p, r, f = fscore(y, y, 0.01)
    assert torch.equal(f, torch.ones(2)) and torch.equal(p, torch.ones(2))
    # pred = 4 points; 3 lie on GT points, 1 far away. GT = the 3 + 3 far points on the other side.
    gt = _pts([0, 0, 0], [1, 0, 0], [2, 0, 0], [0, 50, 0], [0, 60, 0], [0, 70, 0])
    pred = _pts([0, 0, 0.05], [1, 0, 0], [2, 0.05, 0], [-40, 0, 0])
    p, r, f = fscore(pred, gt, threshold=0.1)
    assert p.item() == pytest.approx(3 / 4) and r.item() == pytest.approx(3 / 6)
    assert f.item() == pytest.approx(2 * 0.75 * 0.5 / 1.25)
    # strict threshold, and F = 0 when nothing matches
    p, r, f = fscore(pred, gt, threshold=0.05)
    assert p.item() == pytest.approx(1 / 4)
    _, _, f = fscore(pred + 1000, gt, 0.1)
    assert f.item() == 0.0


def test_normal_consistency():
    x = torch.randn(2, 25, 3)
    n = torch.randn(2, 25, 3)
    assert torch.allclose(normal_consistency(x, n, x, n), torch.ones(2))
    flip = torch.where(torch.rand(2, 25, 1) < 0.5, -1.0, 1.0)
    assert torch.allclose(normal_consistency(x, n, x, 3.0 * flip * n), torch.ones(2))  # sign and scale invariant
    ez, ex = torch.tensor([0.0, 0, 1]).expand(2, 25, 3), torch.tensor([1.0, 0, 0]).expand(2, 25, 3)
    assert torch.allclose(normal_consistency(x, ez, x, ex), torch.zeros(2))
    # x[0] and y[0] coincide with opposite normals (|cos| 1); y[1], y[2] sit 0.1 either side of x[1] with
    # perpendicular normals (cos 0)
    xs, ys = _pts([0, 0, 0], [5, 0, 0]), _pts([0, 0, 0], [5, 0.1, 0], [5, -0.1, 0])
    nxs, nys = _pts([0, 0, 1], [0, 0, 1]), _pts([0, 0, -1], [1, 0, 0], [1, 0, 0])
    # x -> y: |cos| 1, 0 (x[1]'s nearest y is at distance 0.1, both perpendicular) -> 0.5;
    # y -> x: 1, 0, 0 -> 1/3
    assert normal_consistency(xs, nxs, ys, nys).item() == pytest.approx(0.5 * (0.5 + 1 / 3))


def test_volume_iou():
    a = torch.tensor([[1, 1, 0, 0, 1], [0, 0, 0, 0, 0]], dtype=torch.bool)
    b = torch.tensor([[1, 0, 1, 0, 1], [0, 0, 0, 0, 0]], dtype=torch.bool)
    torch.testing.assert_close(volume_iou(a, b), torch.tensor([2 / 4, 1.0]))
    probs = torch.tensor([[0.9, 0.5, 0.1, 0.2, 0.7]])  # >= 0.5 -> 1 1 0 0 1
    torch.testing.assert_close(volume_iou(probs, b[:1].float()), torch.tensor([2 / 4]))
    with pytest.raises(ValueError, match="same shape"):
        volume_iou(a, b[:, :3])


def test_pairwise_chamfer():
    a, b = torch.randn(5, 12, 3), torch.randn(4, 9, 3)
    D = pairwise_chamfer(a, b, batch_size=3)
    ref = torch.stack([torch.stack([chamfer_distance(a[i : i + 1], b[j : j + 1]).l2[0] for j in range(4)])
                       for i in range(5)])
    assert D.shape == (5, 4)
    torch.testing.assert_close(D, ref)
    Daa = pairwise_chamfer(a, batch_size=2)
    torch.testing.assert_close(Daa, Daa.T)
    assert torch.equal(Daa.diagonal(), torch.zeros(5))
    torch.testing.assert_close(Daa, pairwise_chamfer(a, a.clone(), batch_size=7))


def test_coverage_mmd_hand_computed():
    # 3 generated x 4 reference
    D = torch.tensor([[1.0, 5.0, 9.0, 2.0],
                      [3.0, 0.5, 8.0, 7.0],
                      [0.2, 6.0, 4.0, 3.0]])
    # nearest reference of each generated shape: 0, 1, 0 -> 2 of 4 covered
    assert coverage(D) == pytest.approx(2 / 4)
    # nearest generated of each reference: 0.2, 0.5, 4, 2
    assert mmd(D) == pytest.approx((0.2 + 0.5 + 4 + 2) / 4)


def test_one_nna_hand_computed():
    # 2 generated (g0, g1), 2 reference (r0, r1)
    D_gg = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    D_rr = torch.tensor([[0.0, 4.0], [4.0, 0.0]])
    D_gr = torch.tensor([[3.0, 2.0], [0.5, 6.0]])
    # NN: g0 -> g1 (1 < 3, 2) correct; g1 -> r0 (0.5) wrong; r0 -> g1 (0.5) wrong; r1 -> g0 (2 < 4) wrong
    assert one_nna(D_gg, D_rr, D_gr) == pytest.approx(1 / 4)
    assert one_nna(D_gg, D_rr, D_gr + 10) == pytest.approx(1.0)


def test_generation_metrics_same_and_disjoint_distributions():
    gen, ref = torch.randn(40, 16, 3), torch.randn(40, 16, 3)
    m = generation_metrics(gen, ref, batch_size=400)
    assert set(m) == {"cov", "mmd", "1nna"}
    assert abs(m["1nna"] - 0.5) < 0.15 and m["cov"] > 0.3
    far = generation_metrics(gen, ref + 10.0, batch_size=400)
    assert far["1nna"] == 1.0 and far["mmd"] > m["mmd"]
    self_m = generation_metrics(ref, ref, batch_size=400)
    assert self_m["cov"] == 1.0 and self_m["mmd"] == 0.0


@pytest.mark.skipif(metrics3d._p3d_knn_points is None, reason="pytorch3d is not installed (optional accelerator)")
def test_matches_pytorch3d():  # pragma: no cover - only where pytorch3d is installed
    from pytorch3d.loss import chamfer_distance as p3d_chamfer

    x, y = torch.randn(2, 60, 3), torch.randn(2, 50, 3)
    d2, idx = knn(x, y, k=3, backend="torch")
    d2p, idxp = knn(x, y, k=3, backend="pytorch3d")
    assert torch.equal(idx, idxp)
    torch.testing.assert_close(d2, d2p)
    ref, _ = p3d_chamfer(x, y, batch_reduction=None)  # mean_x + mean_y of squared distances
    torch.testing.assert_close(chamfer_distance(x, y).l2, ref)
    assert not math.isnan(ref.sum().item())


def test_emd_hand_computed():
    x = _pts([0, 0, 0], [1, 0, 0], [0, 2, 0])
    assert emd(x, x[:, [2, 0, 1]]).item() == 0.0  # a permutation of the same set
    t = torch.tensor([0.3, -1.2, 0.4], dtype=torch.float64)
    assert emd(x, x + t).item() == pytest.approx(t.norm().item())  # translated: every point moves by |t|
    # two points each: the crossing matching costs (sqrt(2) + sqrt(2)) / 2, the straight one (1 + 1) / 2
    a, b = _pts([0, 0, 0], [1, 0, 0]), _pts([1, 1, 0], [0, 1, 0])
    assert emd(a, b).item() == pytest.approx(1.0)
    # EMD is a matching, not nearest neighbours: both points of a lie next to b[0], one must go to b[1]
    a, b = _pts([0, 0, 0], [0.1, 0, 0]), _pts([0, 0, 0], [5, 0, 0])
    assert emd(a, b).item() == pytest.approx((0 + 4.9) / 2)
    assert chamfer_distance(a, b).l1.item() < emd(a, b).item()


def test_emd_bounds_symmetry_gradient_and_errors():
    x, y = torch.rand(3, 40, 3, dtype=torch.float64), torch.rand(3, 40, 3, dtype=torch.float64)
    e = emd(x, y)
    torch.testing.assert_close(e, emd(y, x))
    d2x, _ = knn(x, y)
    d2y, _ = knn(y, x)
    # every point's matched partner is at least as far as its nearest neighbour
    assert torch.all(e >= d2x[..., 0].sqrt().mean(1) - 1e-12) and torch.all(e >= d2y[..., 0].sqrt().mean(1) - 1e-12)
    assert torch.all(e >= chamfer_distance(x, y).l1 - 1e-12)
    # against brute force over all permutations on a tiny set
    import itertools

    a, b = torch.rand(1, 5, 3, dtype=torch.float64), torch.rand(1, 5, 3, dtype=torch.float64)
    best = min((a[0] - b[0, list(p)]).norm(dim=-1).mean().item() for p in itertools.permutations(range(5)))
    assert emd(a, b).item() == pytest.approx(best)
    xg = x.clone().requires_grad_(True)
    emd(xg, y).sum().backward()
    assert torch.isfinite(xg.grad).all() and xg.grad.abs().sum() > 0
    assert emd(x, y, reduction="mean").item() == pytest.approx(e.mean().item())
    with pytest.raises(ValueError, match="equal size"):
        emd(x, y[:, :30])


def test_pairwise_emd():
    a, b = torch.rand(4, 16, 3), torch.rand(3, 16, 3)
    D = pairwise_emd(a, b, batch_size=5)
    ref = torch.stack([torch.stack([emd(a[i : i + 1], b[j : j + 1])[0] for j in range(3)]) for i in range(4)])
    assert D.shape == (4, 3)
    torch.testing.assert_close(D, ref)
    Daa = pairwise_emd(a)
    torch.testing.assert_close(Daa, Daa.T)
    assert torch.equal(Daa.diagonal(), torch.zeros(4))
    with pytest.raises(ValueError, match="equal size"):
        pairwise_emd(a, b[:, :8])


def test_generation_metrics_with_emd():
    gen, ref = torch.randn(12, 16, 3), torch.randn(12, 16, 3)
    m = generation_metrics(gen, ref, distances=("cd", "emd"))
    cd_keys = {"cov", "mmd", "1nna"}
    assert set(m) == cd_keys | {f"{k}_{d}" for k in cd_keys for d in ("cd", "emd")}
    assert all(m[k] == m[f"{k}_cd"] for k in cd_keys)  # the unsuffixed keys stay CD-L2
    assert m == {**generation_metrics(gen, ref), **{k: v for k, v in m.items() if "_" in k}}
    only = generation_metrics(gen, ref + 10.0, distances=("emd",))
    assert set(only) == {"cov_emd", "mmd_emd", "1nna_emd"} and only["1nna_emd"] == 1.0
    self_m = generation_metrics(ref, ref, distances=("emd",))
    assert self_m["cov_emd"] == 1.0 and self_m["mmd_emd"] == 0.0
    with pytest.raises(ValueError, match="distances"):
        generation_metrics(gen, ref, distances=("l1",))
