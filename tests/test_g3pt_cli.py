"""`scalear g3pt`: generate / eval on tiny randomly initialised models, and the evaluation helpers."""

import json

import numpy as np
import pytest
import torch
import trimesh

from scalear.datasets.meshes.sampling import signed_distance
from scalear.datasets.pointclouds.io import load_point_cloud
from scalear.domains.g3pt.cli import main
from scalear.domains.g3pt.evaluate import generation_scores, occupancy_scores, reconstruction_by_level
from scalear.domains.g3pt.generator import create_generator
from scalear.domains.g3pt.tokenizer import create_tokenizer
from scalear.gen3d.fields import mesh_is_valid
from scalear.io import save_pretrained
from conftest import check_generate_refuses_bad_requests, write_ball_and_box_meshes

SMALL_TOK = dict(patch_nums=(1, 4, 16), width=32, heads=2, code_bits=6, num_freqs=3)
SMALL_GEN = dict(transformer=dict(depth=2, width=64, num_heads=2), image_size=16, encoder_channels=(8, 16))


@pytest.fixture(scope="module")
def export(tmp_path_factory, single_thread):
    """A class- and an image-conditional export folder (random weights)."""
    root = tmp_path_factory.mktemp("g3pt_export")
    torch.manual_seed(0)
    tok = create_tokenizer("tiny", **SMALL_TOK).eval()
    for cond in ("class", "image"):
        gen = create_generator("tiny", tokenizer=tok, condition=cond, num_classes=2,
                               class_names=("ball", "box") if cond == "class" else (), **SMALL_GEN).eval()
        save_pretrained(gen, root / cond / "generator")
        save_pretrained(tok, root / cond / "tokenizer")
    return root


@pytest.fixture()
def ball_field(monkeypatch):
    """Random tokenizers decode to a ball of radius 0.25 plus the network's output (logit + 2 - 8 |p|), so that
    their fields cross zero inside the cube."""
    from scalear.domains.g3pt import tokenizer as mod

    real = mod.G3PTTokenizer.occupancy_logits
    monkeypatch.setattr(mod.G3PTTokenizer, "occupancy_logits",
                        lambda self, f, q: real(self, f, q) + 2.0 - 8.0 * q.norm(dim=-1))


def test_generate_writes_point_clouds_meshes_and_previews_reproducibly(export, tmp_path, ball_field):
    args = ["generate", "--model", str(export / "class"), "--class", "box", "--n", "2", "--format", "glb",
            "--points", "500", "--resolution", "24", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    manifest = json.loads((tmp_path / "a" / "generated.json").read_text())
    assert manifest["shapes"] == ["box_0", "box_1"] and manifest["empty"] == [] and manifest["format"] == "glb"
    for name in manifest["shapes"]:
        pts = load_point_cloud(tmp_path / "a" / f"{name}_points.ply")
        assert pts.shape == (500, 3) and np.abs(pts).max() <= 0.5
        mesh = trimesh.load(tmp_path / "a" / f"{name}.glb", force="mesh")
        assert mesh_is_valid(mesh)
        # the points lie on the mesh surface
        assert np.abs(signed_distance(mesh, pts)).max() < 1e-4
        from PIL import Image

        with Image.open(tmp_path / "a" / f"{name}.png") as im:
            assert im.size == (2 * 192 + 4, 192)
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    for name in manifest["shapes"]:  # the same seed gives the same shapes
        assert (tmp_path / "a" / f"{name}_points.ply").read_bytes() == (tmp_path / "b" / f"{name}_points.ply").read_bytes()
    other = ["generate", "--model", str(export / "class"), "--class", "box", "--n", "1", "--resolution", "24",
             "--quiet", "--seed", "1", "--out", str(tmp_path / "c")]
    assert main(other) == 0
    assert (tmp_path / "a" / "box_0_points.ply").read_bytes() != (tmp_path / "c" / "box_0_points.ply").read_bytes()


def test_generate_from_a_condition_mesh(export, tmp_path, ball_field):
    trimesh.creation.box(extents=(0.3, 0.5, 0.8)).export(tmp_path / "thing.obj")
    rc = main(["generate", "--model", str(export / "image"), "--image", str(tmp_path / "thing.obj"), "--n", "1",
               "--resolution", "20", "--no-preview", "--quiet", "--out", str(tmp_path / "out")])
    assert rc == 0
    assert (tmp_path / "out" / "thing_0.obj").is_file() and (tmp_path / "out" / "thing_0_points.ply").is_file()
    assert not (tmp_path / "out" / "thing_0.png").exists()


def test_generate_rejects_unknown_class_bad_folder_and_missing_image(export, tmp_path, capsys):
    check_generate_refuses_bad_requests(main, export, tmp_path, capsys, "G3PT")
    (tmp_path / "photo.jpg").write_bytes(b"not an image")
    assert main(["generate", "--model", str(export / "image"), "--image", str(tmp_path / "photo.jpg"),
                 "--out", str(tmp_path / "o")]) == 2
    assert "photo.jpg" in capsys.readouterr().err


def test_eval_prints_the_reconstruction_per_level(export, tmp_path, capsys, ball_field):
    root = write_ball_and_box_meshes(tmp_path / "meshes")
    broken = root / "broken"  # a sub-folder of unusable files: named and skipped, the rest is scored
    broken.mkdir()
    trimesh.PointCloud(np.random.default_rng(0).uniform(-0.3, 0.3, (200, 3))).export(broken / "scan.ply")  # no faces
    (broken / "empty.obj").write_text("")
    out = tmp_path / "rec.json"
    with pytest.warns(UserWarning, match="skipping"):
        rc = main(["eval", "--tokenizer", str(export / "class" / "tokenizer"), "--root", str(root), "--val-per-class",
                   "1", "--points", "128", "--queries", "256", "--resolution", "16", "--cache-dir",
                   str(tmp_path / "cache"), "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "| 1..3 |" in text and "held-out objects 2" in text
    assert "scored 2 held-out objects" in text and "skipped 2 file(s)" in text
    assert "scan.ply: a point cloud (no faces); occupancy needs a mesh" in text and "empty.obj" in text
    rec = json.loads(out.read_text())
    assert sorted(rec) == ["1", "2", "3"] and rec["3"]["objects"] == 2
    assert main(["eval", "--tokenizer", str(tmp_path), "--out", str(out)]) == 2


def test_occupancy_scores_hand_computed():
    logits = torch.tensor([[2.0, -1.0, 3.0, -2.0], [-1.0, -1.0, -1.0, -1.0]])
    occ = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    bce, iou = occupancy_scores(logits, occ)
    torch.testing.assert_close(iou, torch.tensor([1 / 3, 1.0]))  # {0} & {0, 1} over {0, 1, 2}; both empty: 1
    want = torch.nn.functional.binary_cross_entropy_with_logits(logits, occ, reduction="none").mean(1)
    torch.testing.assert_close(bce, want)


def test_reconstruction_by_level_scores_a_perfect_decoder_as_perfect(monkeypatch):
    """With a decoder that returns the true sphere's occupancy, every level scores IoU 1 and a small Chamfer."""
    from scalear.domains.g3pt import tokenizer as mod

    tok = create_tokenizer("tiny", **SMALL_TOK).eval()
    monkeypatch.setattr(mod.G3PTTokenizer, "occupancy_logits", lambda self, f, q: 50.0 * (0.3 - q.norm(dim=-1)))
    g = torch.Generator().manual_seed(0)
    u = torch.randn(2, 512, 3, generator=g)
    query = torch.rand(2, 300, 3, generator=g) - 0.5
    batch = {"points": 0.3 * u / u.norm(dim=-1, keepdim=True), "query": query,
             "occupancy": (query.norm(dim=-1) < 0.3).float()}
    rec = reconstruction_by_level(tok, [batch], resolution=32, n_surface=1024)
    assert sorted(rec) == [1, 2, 3]
    for m in rec.values():
        assert m["iou"] > 0.99 and m["empty"] == 0 and m["chamfer_l1"] < 0.03
    fast = reconstruction_by_level(tok, [batch], resolution=None)  # occupancy only: no meshes, no Chamfer
    for k, m in fast.items():
        assert m == {"bce": rec[k]["bce"], "iou": rec[k]["iou"], "objects": 2, "empty": 0}
    with pytest.raises(ValueError, match="occupancy queries"):
        reconstruction_by_level(tok, [{"points": batch["points"]}])


def test_generation_scores_with_chamfer_and_emd():
    """Two well separated classes: each class's samples are closest to their own class with both distances."""
    g = torch.Generator().manual_seed(0)
    ball = lambda n, r: (lambda u: r * u / u.norm(dim=-1, keepdim=True))(torch.randn(n, 300, 3, generator=g))  # noqa: E731
    line = lambda n: torch.rand(n, 300, 1, generator=g) * torch.tensor([0.8, 0.0, 0.0]) - 0.4  # noqa: E731
    generated = {"ball": ball(3, 0.3), "line": line(3)}
    reference = {"ball": ball(4, 0.3), "line": line(4)}
    s = generation_scores(generated, reference, emd_points=64)
    assert s["by_class_cd"]["own_class_closest"] == 1.0 and s["by_class_emd"]["own_class_closest"] == 1.0
    assert s["emd_points"] == 64 and s["generated"] == 6 and s["reference"] == 8
    assert set(s["all"]) == {"cov_cd", "mmd_cd", "1nna_cd", "cov_emd", "mmd_emd", "1nna_emd"}
    assert 0 < s["all"]["cov_cd"] <= 6 / 8  # 6 samples cover at most 6 of the 8 references
