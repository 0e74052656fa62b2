"""SAR3D: triplane tokenizer, mesh extraction and generator properties (tiny models at reduced sizes, one thread)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from scalear.domains.sar3d.generator import create_generator, indices_to_meshes, indices_to_sdf_grids
from scalear.domains.sar3d.mesh import (MESH_FORMATS, EmptyFieldError, analytic_batch, box_sdf, export_mesh,
                                        extract_mesh, load_mesh, sdf_to_grid, sphere_sdf, voxel_centres)
from scalear.domains.sar3d.tokenizer import TRIPLANE_PRESETS, TriplaneVQVAE, create_tokenizer
from scalear.io import from_pretrained, save_pretrained
from scalear.sampling import sample

pytestmark = pytest.mark.usefixtures("single_thread")

#: the tiny preset shrunk to 16^3 grids and 4 scales up to 8x8 planes so that it trains in seconds
SMALL = dict(grid_resolution=16, patch_nums=(1, 2, 4, 8), enc_channels=(8, 16), plane_channels=16, vocab_size=128,
             decoder_upsample=0, feature_dim=8, mlp_hidden=32, restart_every=10)


def _train(tok: TriplaneVQVAE, data: dict, steps: int, lr: float = 3e-3, batch: int = 8) -> list[float]:
    opt = torch.optim.AdamW(tok.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    g = torch.Generator().manual_seed(0)
    losses = []
    tok.train()
    for _ in range(steps):
        i = torch.randint(0, data["grid"].shape[0], (batch,), generator=g)
        loss, logs = tok.loss({k: data[k][i] for k in ("grid", "points", "sdf")})
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(logs["sdf_l1"]))
    return losses


@pytest.fixture(scope="module")
def trained(single_thread):
    """A reduced tiny tokenizer trained on spheres, boxes and tori, with its loss curve and held-out shapes."""
    torch.manual_seed(0)
    kinds = ["sphere", "box", "torus"] * 8
    data = analytic_batch(kinds, 16, 512, seed=0)
    tok = create_tokenizer("tiny", **SMALL)
    losses = _train(tok, data, 160, lr=3e-3)
    return tok.eval(), losses, analytic_batch(kinds[:9], 16, 512, seed=1)


def _trunc_l1(pred: torch.Tensor, target: torch.Tensor, t: float) -> float:
    return float((pred.clamp(-t, t) - target.clamp(-t, t)).abs().mean())


# ------------------------------------------------------------------------------------------- tokenizer
def test_one_codebook_for_all_planes_and_scales():
    tok = create_tokenizer("tiny", **SMALL).eval()
    embeddings = [m for m in tok.modules() if isinstance(m, torch.nn.Embedding)]
    assert len(embeddings) == 1 and embeddings[0] is tok.quantize.embedding
    assert tok.quantize.use_cosine and tok.quantize.kind == "triplane"
    idx = tok.grid_to_indices(torch.randn(2, 1, 16, 16, 16))
    # every scale and every plane indexes the same table: a code used in one plane decodes the same vector anywhere
    assert [i.shape[1] for i in idx] == [3 * s * s for s in SMALL["patch_nums"]]
    assert all(int(i.max()) < tok.quantize.vocab_size for i in idx)
    paper = TRIPLANE_PRESETS["paper"]
    assert (paper.latent_dim, paper.vocab_size, paper.schedule.total_tokens) == (8, 16384, 3 * 680)


def test_indices_round_trip_equals_forward_fhat():
    tok = create_tokenizer("tiny", **SMALL).eval()
    grid = analytic_batch(["sphere", "box"], 16, 8)["grid"]
    f_hat, q = tok(grid)
    idx = tok.grid_to_indices(grid)
    assert all(torch.equal(a, b) for a, b in zip(idx, q.indices))
    torch.testing.assert_close(tok.indices_to_fhat(idx), f_hat, atol=1e-5, rtol=1e-5)
    # a prefix of scales is the running sum the quantizer accumulates
    fhats = tok.grid_to_fhats(grid)
    torch.testing.assert_close(tok.indices_to_fhat(idx, upto=2), fhats[1], atol=1e-5, rtol=1e-5)


def test_tokenizer_learns_analytic_sdfs(trained):
    _, losses, _ = trained
    assert np.mean(losses[-10:]) < np.mean(losses[:5]) / 3


def test_reconstruction_improves_as_scales_are_added(trained):
    tok, _, val = trained
    t = tok.config.truncation
    errs = [_trunc_l1(tok.reconstruct_sdf(val["grid"], val["points"], k), val["sdf"], t)
            for k in range(1, tok.schedule.num_scales + 1)]
    assert all(b <= a * 1.02 for a, b in zip(errs, errs[1:])), errs
    assert errs[-1] < 0.7 * errs[0], errs


def test_chamfer_distance_falls_as_scales_are_added(trained):
    from scalear.gen3d.metrics import chamfer_distance

    tok, _, val = trained
    gt = [torch.from_numpy(np.asarray(extract_mesh(g[0]).sample(512))).float() for g in val["grid"]]
    idx = tok.grid_to_indices(val["grid"])
    cd, empty = [], []
    for k in range(1, tok.schedule.num_scales + 1):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # coarse scales may decode to empty fields (None, with a warning)
            meshes = indices_to_meshes(tok, idx, 24, upto=k)
        empty.append(sum(m is None for m in meshes))
        cd.append([np.nan if m is None else float(chamfer_distance(
            torch.from_numpy(np.asarray(m.sample(512))).float()[None], g[None]).l1) for m, g in zip(meshes, gt)])
    cd = np.array(cd)  # (scales, objects)
    assert empty == sorted(empty, reverse=True) and empty[-1] == 0, empty
    means = [np.nanmean(c) for c in cd[1:]]  # scale 1 alone is a blob or empty
    assert all(b <= a * 1.05 for a, b in zip(means, means[1:])), means
    seen = ~np.isnan(cd[1])
    assert seen.any() and cd[-1][seen].mean() < 0.8 * cd[1][seen].mean(), cd


def test_decoder_geometry_follows_the_planes():
    """A point's features come from the texels of its own coordinates: xy plane indexed [x, y], etc."""
    from scalear.domains.sar3d.tokenizer import sample_triplane

    S = 4
    feat = torch.zeros(1, 1, 3, S, S)
    feat[0, 0, 0, 3, 0] = 1.0  # xy plane, x high, y low
    p = torch.tensor([[[0.5 - 0.5 / S, -0.5 + 0.5 / S, 0.0]]])
    f = sample_triplane(feat, p)[0, 0, :, 0]
    assert f.tolist() == [1.0, 0.0, 0.0]


# ------------------------------------------------------------------------------------------- meshes
def test_marching_cubes_sphere_radius_within_a_voxel():
    R, r, c = 32, 0.3, torch.tensor([0.05, -0.1, 0.02])
    mesh = extract_mesh(sphere_sdf(voxel_centres(R), c, r))
    radii = np.linalg.norm(mesh.vertices - c.numpy(), axis=1)
    assert abs(radii.mean() - r) < 1 / R and radii.std() < 0.5 / R
    assert mesh.volume > 0 and abs(mesh.volume - 4 / 3 * np.pi * r**3) < 0.05 * 4 / 3 * np.pi * r**3
    # axis order: a box elongated along x stays elongated along x
    box = extract_mesh(box_sdf(voxel_centres(R), torch.zeros(3), torch.tensor([0.4, 0.1, 0.2])))
    ext = box.bounds[1] - box.bounds[0]
    np.testing.assert_allclose(ext, [0.8, 0.2, 0.4], atol=1 / R)


def test_objects_reaching_the_grid_boundary_come_out_closed():
    """A sphere poking out of the cube, a box filling it along x and a random smooth field: every extracted mesh
    is watertight (the grid is padded outside), and the cut is closed at the outermost half voxel."""
    from scalear.gen3d.fields import mesh_summary

    R = 16
    c = voxel_centres(R)
    g = torch.Generator().manual_seed(0)
    noise = torch.nn.functional.interpolate(torch.randn(1, 1, 4, 4, 4, generator=g), size=(R, R, R), mode="trilinear")
    fields = [sphere_sdf(c, torch.tensor([0.45, 0.0, 0.0]), 0.3),
              box_sdf(c, torch.zeros(3), torch.tensor([0.6, 0.2, 0.2])),
              noise[0, 0]]
    meshes = [extract_mesh(f) for f in fields]
    assert all(m.is_watertight and m.volume > 0 for m in meshes)
    assert mesh_summary(meshes) == {"valid": 3, "watertight": 3, "max_components": max(len(m.split()) for m in meshes)}
    np.testing.assert_allclose(meshes[0].bounds[1, 0], 0.5, atol=1e-6)  # closed at x = 0.5, half a voxel out
    assert len(meshes[1].split()) == 1 and abs(meshes[1].bounds[0, 0] + 0.5) < 1e-6


def test_sdf_to_grid_matches_direct_evaluation():
    fn = lambda p: sphere_sdf(p, torch.zeros(3), 0.25)  # noqa: E731
    grid = sdf_to_grid(fn, 12, chunk=100, batch_size=2)
    assert grid.shape == (2, 12, 12, 12)
    torch.testing.assert_close(grid[1], fn(voxel_centres(12)))


@pytest.mark.parametrize("value", [1.0, -1.0])
def test_no_zero_crossing_raises(value):
    with pytest.raises(EmptyFieldError, match="no crossing"):
        extract_mesh(torch.full((8, 8, 8), value))


def test_exported_meshes_load_back(tmp_path):
    mesh = extract_mesh(sphere_sdf(voxel_centres(16), torch.zeros(3), 0.3))
    for fmt in MESH_FORMATS:
        path = export_mesh(mesh, tmp_path / f"sphere.{fmt}")
        back = load_mesh(path)
        assert len(back.faces) == len(mesh.faces), fmt
        np.testing.assert_allclose(back.bounds, mesh.bounds, atol=1e-4)
    assert not list(tmp_path.glob(".*tmp"))
    with pytest.raises(ValueError, match="unsupported mesh format"):
        export_mesh(mesh, tmp_path / "x.fbx")


# ------------------------------------------------------------------------------------------- generator
def _image_generator(tok):
    return create_generator("tiny", tokenizer=tok, condition="image", image_size=16, encoder_channels=(8, 16),
                            transformer=dict(depth=2, width=64, num_heads=2)).eval()


@pytest.mark.parametrize("condition", ["class", "image"])
def test_cached_greedy_sampling_equals_teacher_forced_argmax(condition):
    tok = create_tokenizer("tiny", **SMALL).eval()
    if condition == "class":
        gen = create_generator("tiny", tokenizer=tok, num_classes=3, transformer=dict(depth=2, width=64, num_heads=2)).eval()
        cond = {"labels": torch.tensor([0, 2])}
    else:
        gen = _image_generator(tok)
        cond = {"images": torch.randn(2, 4, 16, 16)}
    with torch.no_grad():  # random init gives near-uniform logits; sharpen the head so argmax is well separated
        gen.transformer.head.weight.mul_(50)
    out = gen.sample(tok, **cond, temperature=0.0, guidance=0.0)
    x_in = tok.quantize.teacher_forcing_input(out.indices)
    logits = gen(x_in, **cond, drop_B=torch.zeros(2, dtype=torch.bool))
    assert torch.equal(logits.argmax(-1), torch.cat(out.indices, 1))


@pytest.mark.parametrize("condition", ["class", "image"])
def test_cfg_zero_equals_unguided_and_seeds_reproduce(condition):
    tok = create_tokenizer("tiny", **SMALL).eval()
    if condition == "class":
        gen = create_generator("tiny", tokenizer=tok, num_classes=3, transformer=dict(depth=2, width=64, num_heads=2)).eval()
        cond = {"labels": torch.tensor([0, 1, 2])}
    else:
        gen = _image_generator(tok)
        cond = {"images": torch.randn(3, 4, 16, 16)}
    unguided = gen.generate(tok, **cond, seed=3, guidance=0.0, top_k=0, top_p=0.0)
    # guidance with a vanishing weight runs the doubled (conditional + null) batch; the conditional half decides
    guided = gen.generate(tok, **cond, seed=3, guidance=1e-9, top_k=0, top_p=0.0)
    assert all(torch.equal(a, b) for a, b in zip(unguided, guided))
    a, b, c = (gen.generate(tok, **cond, seed=s) for s in (7, 7, 8))  # SAR3D defaults: cfg 4, top-k 10, top-p 0.5
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))
    # the cfg > 0 path differs from the unguided one for a model whose condition matters
    with torch.no_grad():
        if condition == "class":
            gen.transformer.class_emb.weight.normal_(0, 5)
        gen.transformer.head.weight.mul_(20)
    kw = dict(return_logits=True, temperature=0, **gen.condition_kwargs(**cond))
    l0 = sample(gen.transformer, tok.quantize, 3, guidance=0.0, **kw).logits
    l4 = sample(gen.transformer, tok.quantize, 3, guidance=4.0, **kw).logits
    torch.testing.assert_close(l0[0], l4[0])  # the ramp starts at weight 0
    assert not torch.allclose(l0[-1], l4[-1])


def test_generator_save_load_round_trip(tmp_path):
    tok = create_tokenizer("tiny", **SMALL).eval()
    gen = _image_generator(tok)
    save_pretrained(gen, tmp_path / "gen")
    save_pretrained(tok, tmp_path / "tok")
    gen2, tok2 = from_pretrained(tmp_path / "gen").eval(), from_pretrained(tmp_path / "tok").eval()
    assert type(gen2) is type(gen) and type(tok2) is TriplaneVQVAE
    images = torch.randn(2, 4, 16, 16)
    a = gen.generate(tok, images=images, seed=0)
    b = gen2.generate(tok2, images=images, seed=0)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    grid = analytic_batch(["torus"], 16, 8)["grid"]
    torch.testing.assert_close(tok2.indices_to_fhat(tok2.grid_to_indices(grid)),
                               tok.indices_to_fhat(tok.grid_to_indices(grid)))


def test_mismatched_tokenizer_is_refused():
    tok = create_tokenizer("tiny", **SMALL)
    gen = create_generator("tiny", num_classes=2)  # the tiny preset's own 6-scale schedule
    with pytest.raises(ValueError, match="does not match"):
        gen.generate(tok, labels=torch.tensor([0]))


def test_class_conditional_generator_tells_classes_apart(trained):
    """Spheres (class 0) vs boxes (class 1): generated objects are nearer to their own class's training shapes."""
    tok, _, _ = trained
    data = analytic_batch(["sphere", "box"] * 8, 16, 8, seed=2)
    idx = tok.grid_to_indices(data["grid"])
    x_in = tok.quantize.teacher_forcing_input(idx)
    target = torch.cat(idx, 1)
    gen = create_generator("tiny", tokenizer=tok, num_classes=2, transformer=dict(depth=2, width=64, num_heads=2))
    opt = torch.optim.AdamW(gen.parameters(), lr=3e-3, betas=(0.9, 0.95))
    gen.train()
    for _ in range(50):
        loss = F.cross_entropy(gen(x_in, labels=data["label"]).transpose(1, 2), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    gen.eval()
    labels = torch.tensor([0, 1] * 6)
    samples = indices_to_sdf_grids(tok, gen.generate(tok, labels=labels, seed=0), resolution=16).clamp(-0.1, 0.1)
    refs = indices_to_sdf_grids(tok, idx, resolution=16).clamp(-0.1, 0.1)
    d = torch.cdist(samples.flatten(1), refs.flatten(1))  # (12 samples, 16 references)
    nearest_class = data["label"][d.argmin(1)]
    assert (nearest_class == labels).float().mean() >= 0.8
    meshes = indices_to_meshes(tok, gen.generate(tok, labels=labels[:2], seed=1), resolution=16)
    assert all(m is None or len(m.faces) > 0 for m in meshes)
