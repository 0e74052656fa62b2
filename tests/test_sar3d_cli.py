"""`scalear sar3d`: generate / render / eval on tiny randomly initialised models, and the evaluation helpers."""

import json

import numpy as np
import pytest
import torch
import trimesh

from scalear.domains.sar3d.cli import main
from scalear.domains.sar3d.evaluate import reconstruction_by_scale
from scalear.gen3d.fields import mesh_is_valid, meshes_to_points
from scalear.gen3d.metrics import generation_by_class
from scalear.datasets.meshes.render import load_condition, save_condition_png
from scalear.domains.sar3d.generator import create_generator
from scalear.domains.sar3d.tokenizer import create_tokenizer
from scalear.io import save_pretrained
from conftest import check_generate_refuses_bad_requests, write_ball_and_box_meshes


@pytest.fixture(scope="module")
def export(tmp_path_factory, single_thread):
    """A class-conditional and an image-conditional export folder (random weights; the SDF head's bias is
    offset so that decoded fields cross zero)."""
    root = tmp_path_factory.mktemp("sar3d_export")
    torch.manual_seed(0)
    tok = create_tokenizer("tiny").eval()
    for cond in ("class", "image"):
        gen = create_generator("tiny", tokenizer=tok, condition=cond, num_classes=2,
                               class_names=("ball", "box") if cond == "class" else ()).eval()
        save_pretrained(gen, root / cond / "generator")
        save_pretrained(tok, root / cond / "tokenizer")
    return root


def test_generate_writes_valid_meshes_with_previews_reproducibly(export, tmp_path):
    args = ["generate", "--model", str(export / "class"), "--class", "box", "--n", "2", "--format", "ply",
            "--resolution", "24", "--quiet"]
    rc = main([*args, "--out", str(tmp_path / "a")])
    assert rc in (0, 1)  # 1: some random-weight objects decoded to an empty field (named)
    manifest = json.loads((tmp_path / "a" / "generated.json").read_text())
    assert manifest["seed"] == 0 and manifest["format"] == "ply"
    assert sorted(manifest["objects"] + [f"{e}.ply" for e in manifest["empty"]]) == ["box_0.ply", "box_1.ply"]
    for name in manifest["objects"]:
        mesh = trimesh.load(tmp_path / "a" / name, force="mesh")
        assert mesh_is_valid(mesh) and len(mesh.faces) > 0
        assert (tmp_path / "a" / name.replace(".ply", ".png")).is_file()
    assert main([*args, "--out", str(tmp_path / "b")]) == rc
    for name in manifest["objects"]:  # the same seed gives the same objects
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_generate_rejects_unknown_class_bad_folder_and_missing_image(export, tmp_path, capsys):
    check_generate_refuses_bad_requests(main, export, tmp_path, capsys, "SAR3D")


def test_condition_png_round_trip_and_image_generation(export, tmp_path):
    box = trimesh.creation.box((0.6, 0.4, 0.5))
    box.export(tmp_path / "box.obj")
    img = load_condition(tmp_path / "box.obj", 64)
    assert img.shape == (4, 64, 64) and img.max() <= 1 and img.min() >= 0 and (img[0] > 0).any()
    save_condition_png(img, tmp_path / "box_condition.png")
    back = load_condition(tmp_path / "box_condition.png", 64)
    assert torch.allclose(back, img, atol=1 / 255 + 1e-6)  # 8-bit quantisation
    rc = main(["generate", "--model", str(export / "image"), "--image", str(tmp_path / "box_condition.png"), "--n", "1",
               "--resolution", "24", "--no-preview", "--quiet", "--out", str(tmp_path / "gen")])
    assert rc in (0, 1)
    manifest = json.loads((tmp_path / "gen" / "generated.json").read_text())
    assert manifest["condition"] == "image" and len(manifest["objects"] + manifest["empty"]) == 1
    (tmp_path / "photo.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="photo.png"):
        load_condition(tmp_path / "photo.png", 64)


def test_render_writes_conditions_and_previews_and_names_bad_files(shared_data, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("ballA.off", "fandisk.obj"):
        (src / name).write_bytes((shared_data / "meshes" / name).read_bytes())
    (src / "empty.ply").write_bytes((shared_data / "meshes" / "bad" / "empty.ply").read_bytes())
    assert main(["render", "--input", str(src), "--out", str(tmp_path / "out"), "--size", "32"]) == 1
    assert "empty.ply" in capsys.readouterr().err
    for stem in ("ballA", "fandisk"):
        assert load_condition(tmp_path / "out" / f"{stem}_condition.png", 32).shape == (4, 32, 32)
        assert (tmp_path / "out" / f"{stem}_preview.png").is_file()
    assert main(["render", "--input", str(src), "--out", str(src)]) == 2  # never next to the inputs


def test_reconstruction_metrics_of_an_exact_decoder():
    """A stand-in tokenizer whose decoded field is the true SDF of a sphere (radius 0.3): Chamfer is at the
    sampling floor, F-score and normal consistency near one, the IoU exact, one row per number of scales."""
    sphere = lambda p: p.norm(dim=-1) - 0.3  # noqa: E731
    g = torch.Generator().manual_seed(0)
    surface = torch.nn.functional.normalize(torch.randn(2, 4096, 3, generator=g), dim=-1)
    points = torch.rand(2, 512, 3, generator=g) - 0.5
    batch = {"grid": torch.zeros(2, 1, 4, 4, 4), "points": points, "sdf": sphere(points), "surface": 0.3 * surface,
             "normals": surface}

    class Exact(torch.nn.Module):  # the tokenizer interface reconstruction_by_scale uses
        schedule = type("S", (), {"num_scales": 2})

        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(1))

        def grid_to_indices(self, grid):
            return [grid, grid]

        def indices_to_fhat(self, indices, upto=None):
            return indices[0]

        def decode_triplane(self, f_hat):
            return f_hat

        def query_sdf(self, features, pts):
            return sphere(pts)

        def sdf_fn(self, f_hat):
            return sphere

    res = reconstruction_by_scale(Exact(), [batch], resolution=32, n_surface=4096)
    assert list(res) == [1, 2]
    for m in res.values():
        assert m["objects"] == 2 and m["empty"] == 0 and m["iou"] == 1.0
        # CD-L1 floor: the mean nearest-neighbour gap of 4,096 points on the sphere is about 0.008
        assert m["chamfer_l1"] < 0.012 and m["fscore"] > 0.95 and m["normal_consistency"] > 0.95


def test_generation_by_class_prefers_the_own_class():
    g = torch.Generator().manual_seed(0)
    sphere = lambda n: torch.nn.functional.normalize(torch.randn(n, 256, 3, generator=g), dim=-1) * 0.4  # noqa: E731
    cube = lambda n: (torch.rand(n, 256, 3, generator=g) - 0.5) * 0.8  # noqa: E731
    gen, ref = {"ball": sphere(3), "box": cube(3)}, {"ball": sphere(4), "box": cube(4)}
    s = generation_by_class(gen, ref)
    assert s["own_class_closest"] == 1.0
    assert s["mmd"]["ball"]["ball"] < s["mmd"]["ball"]["box"] and s["mmd"]["box"]["box"] < s["mmd"]["box"]["ball"]
    assert 0 <= s["cov"]["ball"]["ball"] <= 1 and set(s["1nna"]) == {"ball", "box"}


def test_meshes_to_points_skips_empty_objects():
    pts, kept = meshes_to_points([None, trimesh.creation.icosphere(radius=0.3)], 128)
    assert kept == [1] and pts.shape == (1, 128, 3)
    assert np.allclose(pts.norm(dim=-1).numpy(), 0.3, atol=0.02)
    assert not mesh_is_valid(None)


def test_eval_lists_what_it_scored_and_what_it_skipped(export, tmp_path, capsys):
    """A mesh folder with a sub-folder of broken files: the good meshes are scored, every skipped file is named
    with its reason (nothing is dropped silently)."""
    root = write_ball_and_box_meshes(tmp_path / "meshes")
    (root / "broken").mkdir()
    (root / "broken" / "empty.obj").write_text("")
    (root / "broken" / "flat.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    with pytest.warns(UserWarning, match="skipping"):
        rc = main(["eval", "--tokenizer", str(export / "class" / "tokenizer"), "--root", str(root),
                   "--val-per-class", "1", "--resolution", "16", "--cache-dir", str(tmp_path / "cache")])
    text = capsys.readouterr().out
    assert rc == 0 and "scored 2 held-out objects" in text, text
    assert "skipped 2 file(s)" in text and "empty.obj" in text and "flat.obj" in text
