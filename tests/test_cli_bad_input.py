"""Bad input to every ``scalear`` verb: exit status 2 and one line on stderr naming the argument or file, never a
traceback (issue 15, item 4); untrusted model folders and checkpoints are contained (item 5); outputs never
collide and leave no temporary files (item 6).

Most rows run ``scalear.cli.main`` in this process (an import costs ~2 s per subprocess); a few run the real
command in a subprocess. Models are tiny and randomly initialised; nothing trains.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import lightning.pytorch  # noqa: F401  (imported here, its log handler writes to pytest's stderr, not to a test's capsys)
import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from scalear.cli import main
from scalear.errors import UsageError
from scalear.io import atomic_write, from_pretrained, load_torch_file, save_pretrained
from scalear.schedules import ScaleSchedule
from scalear.training.export import module_class
from scalear.transformer import NextScaleTransformer, TransformerConfig
from scalear.vqvae import create_vqvae

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "core" / "digits_tokenizer.yaml"


def _transformer(patch_nums: tuple[int, ...]) -> NextScaleTransformer:
    return NextScaleTransformer(TransformerConfig(vocab_size=64, latent_dim=8, schedule=ScaleSchedule.square(patch_nums),
                                                  depth=1, width=32, num_heads=2, num_classes=3))


@pytest.fixture(scope="module")
def s(tmp_path_factory, single_thread) -> dict[str, Path]:
    """Paths the rows use: tiny exported models of every kind, image folders, a mesh, a text file, checkpoints."""
    from scalear.domains.depth.dar import create_dar
    from scalear.domains.g3pt.generator import create_generator as g3pt_generator
    from scalear.domains.g3pt.tokenizer import create_tokenizer as g3pt_tokenizer
    from scalear.domains.restoration.varformer import create_varformer
    from scalear.domains.sar3d.generator import create_generator as sar3d_generator
    from scalear.domains.sar3d.tokenizer import create_tokenizer as sar3d_tokenizer

    root = tmp_path_factory.mktemp("bad_input")
    torch.manual_seed(0)
    tok = create_vqvae("tiny", vocab_size=64, ch=8, norm_groups=4, patch_nums=(1, 2, 4, 8))
    save_pretrained(_transformer((1, 2, 4, 8)), root / "core" / "transformer")
    save_pretrained(tok, root / "core" / "tokenizer")
    save_pretrained(_transformer((1, 2, 3, 4)), root / "other_scales" / "transformer")
    save_pretrained(create_dar("tiny"), root / "dar")
    save_pretrained(create_varformer("tiny"), root / "varformer")
    t = sar3d_tokenizer("tiny")
    save_pretrained(sar3d_generator("tiny", tokenizer=t, num_classes=2, class_names=("ball", "box")), root / "sar3d" / "generator")
    save_pretrained(t, root / "sar3d" / "tokenizer")
    t = g3pt_tokenizer("tiny", patch_nums=(1, 4, 16), width=32, heads=2, code_bits=6, num_freqs=3)
    save_pretrained(g3pt_generator("tiny", tokenizer=t, num_classes=2, class_names=("ball", "box"),
                                   transformer=dict(depth=1, width=32, num_heads=2), image_size=16,
                                   encoder_channels=(8, 16)), root / "g3pt" / "generator")
    save_pretrained(t, root / "g3pt" / "tokenizer")
    for name, patch in {"huge": {"width": 60000}, "deep": {"depth": 10**8}, "typo": {"width": "64"}}.items():
        (root / name).mkdir()
        (root / name / "model.safetensors").write_bytes((root / "dar" / "model.safetensors").read_bytes())
        meta = json.loads((root / "dar" / "config.json").read_text())
        meta["config"].update(patch)
        (root / name / "config.json").write_text(json.dumps(meta))
    rng = np.random.default_rng(0)
    for sub in ("a", "b"):
        (root / "imgs" / sub).mkdir(parents=True)
        Image.fromarray((rng.random((12, 16, 3)) * 255).astype(np.uint8)).save(root / "imgs" / sub / "2.png")
    (root / "meshes").mkdir()
    trimesh.creation.box().export(root / "meshes" / "box.obj")
    (root / "text.txt").write_text("not a model, not an image")
    torch.save({"scalear_module": "os.system", "state_dict": {}}, root / "foreign.ckpt")
    torch.save({"scalear_module": "scalear.cli.main", "state_dict": {}}, root / "function.ckpt")
    paths = {k: root / k for k in ("core", "other_scales", "dar", "varformer", "sar3d", "g3pt", "huge", "deep", "typo",
                                    "imgs", "meshes")}
    return {"root": root, "text": root / "text.txt", "foreign": root / "foreign.ckpt", "function": root / "function.ckpt",
            **paths}


# (argv with {placeholders} of the fixture, a piece of the one stderr line: the argument or file it names)
ROWS = [
    # core sample
    ("core sample --model {core}/transformer --per-class 0 --out {root}/o.png", "--per-class"),
    ("core sample --model {core}/transformer --classes 99 --out {root}/o.png", "--classes"),
    ("core sample --model {core}/transformer --classes -5 --out {root}/o.png", "--classes"),
    ("core sample --model {core}/transformer --classes a,b --out {root}/o.png", "--classes"),
    ("core sample --model {dar} --tokenizer {core}/tokenizer --out {root}/o.png", "--model"),
    ("core sample --model {core}/tokenizer --out {root}/o.png", "--model"),
    ("core sample --model {core}/transformer --tokenizer {dar} --out {root}/o.png", "--tokenizer"),
    ("core sample --model {other_scales}/transformer --tokenizer {core}/tokenizer --out {root}/o.png", "--model"),
    ("core sample --model {root}/absent --out {root}/o.png", "--model"),
    ("core sample --model {text} --out {root}/o.png", "--model"),
    ("core sample --model {core}/transformer --top-p 2 --out {root}/o.png", "--top-p"),
    ("core sample --model {core}/transformer --top-p -0.5 --out {root}/o.png", "--top-p"),
    ("core sample --model {core}/transformer --temperature -1 --out {root}/o.png", "--temperature"),
    ("core sample --model {core}/transformer --guidance nan --out {root}/o.png", "--guidance"),
    ("core sample --model {core}/transformer --cfg inf --out {root}/o.png", "--cfg"),
    ("core sample --model {core}/transformer --top-k -3 --out {root}/o.png", "--top-k"),
    ("core sample --model {core}/transformer --out {imgs}", "--out"),
    ("core sample --model {core}/transformer --out {text}/grid.png", "--out"),
    ("core sample --model {core}/transformer --per-class abc", "--per-class"),
    ("core sample --model {core}/transformer --seed -5", "--seed"),
    ("core sample", "--model"),
    # core export
    ("core export --ckpt {imgs} --out {root}/exp", "--ckpt"),
    ("core export --ckpt {text} --out {root}/exp", "text.txt"),
    ("core export --ckpt {root}/absent.ckpt --out {root}/exp", "--ckpt"),
    ("core export --ckpt {foreign} --out {text}", "--out"),
    ("core export --ckpt {foreign} --out {root}/exp", "foreign.ckpt"),
    ("core export --ckpt {function} --out {root}/exp", "function.ckpt"),
    ("core bogus", "bogus"),
    # quickstart, info, the command itself
    ("quickstart --jobs 0 --out {root}/qs", "--jobs"),
    ("quickstart --domain nothing --out {root}/qs", "--domain"),
    ("quickstart --out {text}", "--out"),
    ("info --bogus", "--bogus"),
    ("bogus", "bogus"),
    # depth
    ("depth predict --model {dar} --input {imgs}/a --out {root}/d --max-depth -1", "--max-depth"),
    ("depth predict --model {dar} --input {imgs}/a --out {root}/d --max-depth nan", "--max-depth"),
    ("depth predict --model {dar} --input {imgs}/a --out {root}/d --device bogus", "--device"),
    ("depth predict --model {dar} --input {imgs}/a --out {root}/d --device cuda:99", "--device"),
    ("depth predict --model {dar} --input {imgs}/a --out {text}", "--out"),
    ("depth predict --model {dar} --input {root}/absent --out {root}/d", "absent"),
    ("depth predict --model {core}/transformer --input {imgs}/a --out {root}/d", "transformer"),
    ("depth predict --model {root}/absent --input {imgs}/a --out {root}/d", "absent"),
    ("depth predict --model constant:inf --input {imgs}/a --out {root}/d", "constant:inf"),
    ("depth predict --model constant:-2 --input {imgs}/a --out {root}/d", "constant:-2"),
    ("depth predict --model {dar} --input {imgs}/a --out {root}/d --intrinsics 0,0,0,0", "--intrinsics"),
    ("depth predict --model {dar} --input {imgs}/a --out {root}/d --intrinsics 1,2,3", "--intrinsics"),
    ("depth predict --model {dar} --input {imgs}/a --out {imgs}/a", "--out"),
    ("depth predict --model {huge} --input {imgs}/a --out {root}/d", "huge/config.json"),
    ("depth predict --model {deep} --input {imgs}/a --out {root}/d", "deep/model.safetensors"),
    ("depth predict --model {typo} --input {imgs}/a --out {root}/d", "'width'"),
    ("depth eval --model constant:2 --dataset procedural --size 0", "--size"),
    ("depth eval --model constant:2 --dataset procedural --limit 0", "--limit"),
    ("depth eval --model constant:2 --dataset procedural --image-size 0,4", "--image-size"),
    ("depth eval --model constant:2 --dataset procedural --out {imgs}", "--out"),
    ("depth eval --model constant:2 --dataset procedural --max-depth 0", "--max-depth"),
    ("depth eval --model constant:2 --dataset nyu", "--data-root"),
    ("depth eval --model {varformer} --dataset procedural --size 2", "varformer"),
    ("depth bogus", "bogus"),
    # restore (predict is the default verb)
    ("restore --model {varformer} --input {imgs}/a --out {root}/r --tile 0", "--tile"),
    ("restore --model {varformer} --input {imgs}/a --out {root}/r --tile 16 --overlap 16", "overlap"),
    ("restore --model {varformer} --input {imgs}/a --out {root}/r --overlap -1", "--overlap"),
    ("restore --model {dar} --input {imgs}/a --out {root}/r", "dar"),
    ("restore --model {root}/absent --input {imgs}/a --out {root}/r", "absent"),
    ("restore --model identity --input {imgs}/a --out {text}", "--out"),
    ("restore --model identity --input {root}/absent --out {root}/r", "absent"),
    ("restore --model identity --input {imgs}/*/2.png --out {imgs}", "--out"),
    ("restore --model identity --input {imgs}/a --out {root}/r --bits 12", "--bits"),
    ("restore --model identity", "--input"),
    ("restore eval --model identity --degradations noise25 --crop-border -1 --quiet", "--crop-border"),
    ("restore eval --model identity --degradations noise25 --out {imgs} --quiet", "--out"),
    ("restore eval --model identity --degradations bogus --quiet", "bogus"),
    ("restore eval --model identity --paired {root}/absent --quiet", "absent"),
    ("restore eval --model identity --degradations noise25 --seed 99999999999999999999 --quiet", "--seed"),
    # sar3d
    ("sar3d generate --model {sar3d} --out {root}/s --n 0", "--n"),
    ("sar3d generate --model {sar3d} --out {root}/s --cfg nan", "--cfg"),
    ("sar3d generate --model {sar3d} --out {root}/s --top-p 2", "--top-p"),
    ("sar3d generate --model {sar3d} --out {root}/s --top-k -1", "--top-k"),
    ("sar3d generate --model {sar3d} --out {root}/s --resolution 1", "--resolution"),
    ("sar3d generate --model {sar3d} --out {root}/s --seed 99999999999999999999", "--seed"),
    ("sar3d generate --model {sar3d} --out {text}", "--out"),
    ("sar3d generate --model {sar3d} --out {root}/s --device bogus", "--device"),
    ("sar3d generate --model {sar3d} --out {root}/s --class 7 --quiet", "'7'"),
    ("sar3d generate --model {sar3d} --out {root}/s --class , --quiet", "--class"),
    ("sar3d generate --model {g3pt} --out {root}/s --quiet", "g3pt"),
    ("sar3d render --input {meshes} --out {root}/rend --size 0", "--size"),
    ("sar3d render --input {meshes} --out {root}/rend --size 100000", "--size"),
    ("sar3d render --input {root}/absent --out {root}/rend", "absent"),
    ("sar3d render --input {meshes} --out {meshes}", "--out"),
    ("sar3d eval --tokenizer {sar3d}/generator", "generator"),
    ("sar3d eval --tokenizer {root}/absent", "--tokenizer"),
    ("sar3d eval --tokenizer {sar3d}/tokenizer --root {text}", "--root"),
    ("sar3d eval --tokenizer {sar3d}/tokenizer --cache-dir {text}", "--cache-dir"),
    ("sar3d eval --tokenizer {sar3d}/tokenizer --val-per-class 0", "--val-per-class"),
    # g3pt
    ("g3pt generate --model {g3pt} --out {root}/g --n 0", "--n"),
    ("g3pt generate --model {g3pt} --out {root}/g --points 0", "--points"),
    ("g3pt generate --model {g3pt} --out {root}/g --points 2000000000", "--points"),
    ("g3pt generate --model {g3pt} --out {root}/g --resolution 100000", "--resolution"),
    ("g3pt generate --model {g3pt} --out {root}/g --guidance inf", "--guidance"),
    ("g3pt generate --model {g3pt} --out {root}/g --top-p -1", "--top-p"),
    ("g3pt generate --model {sar3d} --out {root}/g --quiet", "sar3d"),
    ("g3pt generate --model {g3pt} --out {root}/g --image {meshes}/box.obj --quiet", "class-conditional"),
    ("g3pt eval --tokenizer {sar3d}/tokenizer", "tokenizer"),
    ("g3pt eval --tokenizer {g3pt}/tokenizer --queries 0", "--queries"),
    ("g3pt eval --tokenizer {g3pt}/tokenizer --out {imgs}", "--out"),
    ("g3pt eval --tokenizer {g3pt}/tokenizer --root {root}/absent", "--root"),
]


def _argv(row: str, s: dict[str, Path]) -> list[str]:
    return row.format(**{k: str(v) for k, v in s.items()}).split()


def _run(argv: list[str], capsys) -> tuple[int, str]:
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse exits; the `scalear` script turns main's return into the same status
        rc = e.code
    return rc, capsys.readouterr().err


def _assert_one_line(rc: int, err: str, names: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1, err
    assert names in lines[0], lines[0]


@pytest.mark.parametrize("row,names", ROWS, ids=[r.split(" --")[0] + f" [{n}]" for r, n in ROWS])
def test_bad_input_is_one_line_and_exit_2(row, names, s, capsys):
    _assert_one_line(*_run(_argv(row, s), capsys), names)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_device_cuda_without_cuda_says_so(s, capsys):
    rc, err = _run(_argv("depth predict --model {dar} --input {imgs}/a --out {root}/d --device cuda", s), capsys)
    _assert_one_line(rc, err, "--device")
    assert "CUDA" in err and "model.safetensors" not in err


@pytest.mark.parametrize("old,new", [("ch: 16", "ch: sixteen"), ("lr: 0.002", "lr: fast")], ids=["nested", "top-level"])
def test_fit_config_of_the_wrong_type_names_the_key(old, new, tmp_path, monkeypatch, capsys):
    """A mistyped value exits 2 naming its key: LightningCLI's own message for a top-level key (several lines of
    usage), scalear's one line for a key inside a dict argument (the tokenizer's vqvae config)."""
    (tmp_path / "bad.yaml").write_text(CONFIG.read_text().replace(old, new))
    monkeypatch.chdir(tmp_path)
    rc, err = _run(["core", "fit", "--config", str(tmp_path / "bad.yaml")], capsys)
    key = new.split(":")[0]
    assert rc == 2 and "Traceback" not in err and (f"'{key}'" in err or f'"{key}"' in err), err
    if key == "ch":
        assert err.strip().splitlines()[-1].startswith("scalear core fit: VQVAEConfig key 'ch' must be an int")


def test_fit_with_a_zero_batch_size_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rc, err = _run(["core", "fit", "--config", str(CONFIG), "--data.init_args.batch_size", "0",
                    "--trainer.default_root_dir", str(tmp_path), "--trainer.logger.init_args.save_dir", str(tmp_path)],
                   capsys)
    assert rc == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == "scalear core fit: data batch_size must be a positive integer, got 0"


SUBPROCESS_ROWS = [
    ("core sample --model {core}/transformer --per-class 0", "--per-class"),
    ("core export --ckpt {foreign} --out {root}/exp", "foreign.ckpt"),
    ("depth predict --model {huge} --input {imgs}/a --out {root}/d", "huge/config.json"),
    ("restore --model {dar} --input {imgs}/a --out {root}/r", "dar"),
]


@pytest.mark.parametrize("row,names", SUBPROCESS_ROWS, ids=[r.split(" --")[0] for r, _ in SUBPROCESS_ROWS])
def test_the_real_command_prints_one_line_and_exits_2(row, names, s):
    r = subprocess.run([sys.executable, "-m", "scalear.cli", *_argv(row, s)], capture_output=True, text=True,
                       cwd=s["root"], timeout=300)
    _assert_one_line(r.returncode, r.stderr, names)


# --------------------------------------------------------------------------------- untrusted folders (item 5)


def test_from_pretrained_checks_the_config_before_allocating(s, monkeypatch):
    with pytest.raises(UsageError, match=r"huge/config\.json: .*M-parameter model needs about .* GiB"):
        from_pretrained(s["huge"])  # 137 G parameters: more than any machine running the tests has
    with pytest.raises(ValueError, match=r"deep/model\.safetensors does not match its config\.json"):
        from_pretrained(s["deep"])  # 10^8 blocks: the build stops at the file's tensor count
    with pytest.raises(UsageError, match=r"typo/config\.json: .*DAR config key 'width' must be an int, got '64'"):
        from_pretrained(s["typo"])
    (s["root"] / "list").mkdir(exist_ok=True)
    (s["root"] / "list" / "config.json").write_text("[1, 2]")
    with pytest.raises(UsageError, match=r"list/config\.json is not a scalear model config"):
        from_pretrained(s["root"] / "list")
    # a tiny model refused on a machine with too little memory, the file named; loads when there is enough
    import scalear.io

    monkeypatch.setattr(scalear.io, "available_memory", lambda device="cpu": 1000)
    with pytest.raises(UsageError, match=r"dar/config\.json: this 0\.4M-parameter model needs"):
        from_pretrained(s["dar"])
    monkeypatch.undo()
    assert type(from_pretrained(s["dar"])).__name__ == "DARModel"


def test_checkpoints_import_only_scalear_modules_and_load_no_pickle(s, tmp_path):
    from scalear.training.tokenizer import TokenizerModule

    assert module_class({"scalear_module": "scalear.training.tokenizer.TokenizerModule"}, "c") is TokenizerModule
    for name, why in [("os.system", "not a class of the scalear package"), ("scalear.cli.main", "not a ScalearModule"),
                      ("scalear.training.absent.Module", "no class of the installed scalear"),
                      ("scalear..x", "not a class of the scalear package")]:
        with pytest.raises(UsageError, match=why):
            module_class({"scalear_module": name}, "c.ckpt")

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {tmp_path / 'pwned'}",)

    torch.save({"state_dict": {}, "x": Payload()}, tmp_path / "pickle.ckpt")
    with pytest.raises(ValueError, match="pickle.ckpt could not be read"):
        load_torch_file(tmp_path / "pickle.ckpt")
    assert not (tmp_path / "pwned").exists()


# ------------------------------------------------------------------------------------ outputs (item 6)


def test_inputs_with_the_same_name_in_two_folders_give_two_outputs(s, tmp_path, capsys):
    imgs = s["imgs"]
    assert main(["restore", "--model", "identity", "--input", f"{imgs}/*/2.png", "--out", str(tmp_path / "r"),
                 "--quiet"]) == 0
    assert "restored 2 of 2" in capsys.readouterr().out
    for sub in ("a", "b"):  # identity: each output is its own input, so none overwrote the other
        out = np.asarray(Image.open(tmp_path / "r" / sub / "2_restored.png"))
        assert np.array_equal(out, np.asarray(Image.open(imgs / sub / "2.png")))
    assert main(["depth", "predict", "--model", "constant:2", "--input", f"{imgs}/*/2.png", "--out",
                 str(tmp_path / "d"), "--quiet"]) == 0
    assert "depth for 2 of 2" in capsys.readouterr().out
    written = sorted(p.relative_to(tmp_path / "d").as_posix() for p in (tmp_path / "d").rglob("*.npy"))
    assert written == ["a/2_depth.npy", "b/2_depth.npy"]
    assert json.loads((tmp_path / "d" / "a" / "2_depth.json").read_text())["npy"] == "2_depth.npy"
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_atomic_write_removes_what_a_killed_write_left(tmp_path):
    target = tmp_path / "out.png"
    stale = tmp_path / f".out.png.{_dead_pid()}.abc123.tmp"
    live = tmp_path / f".out.png.{os.getpid()}.def456.tmp"  # another write of this process, still running
    stale.write_text("half"), live.write_text("half")
    atomic_write(target, lambda p: Path(p).write_text("done"))
    assert target.read_text() == "done" and not stale.exists() and live.exists()


def test_atomic_write_lists_a_folder_once_and_removes_only_its_outputs_leftovers(tmp_path, monkeypatch):
    import scalear.io as sio

    dead = _dead_pid()
    dotted = tmp_path / f".a.b_depth.png.{dead}.k2x_9q.tmp"  # an output name with dots
    other = tmp_path / f".c_depth.png.{dead}.zz81ab.tmp"
    mine = tmp_path / ".notes.tmp"  # a user's hidden file, not a temporary of atomic_write
    for f in (dotted, other, mine):
        f.write_text("half")
    listings = []
    monkeypatch.setattr(sio, "_list_stale_temporaries",
                        lambda folder, list_=sio._list_stale_temporaries: listings.append(folder) or list_(folder))
    for i in range(20):
        atomic_write(tmp_path / f"{i}.txt", lambda p: Path(p).write_text("x"))
    assert listings == [tmp_path]  # not once per write: a folder of thousands of outputs made every write slow
    assert dotted.exists() and other.exists()  # only a write of their output removes them
    atomic_write(tmp_path / "a.b_depth.png", lambda p: Path(p).write_text("done"))
    assert not dotted.exists() and other.exists() and mine.exists()
    assert oct((tmp_path / "a.b_depth.png").stat().st_mode & 0o777) == oct(0o666 & ~sio._umask())
    monkeypatch.setattr(sio, "_STALE_FOLDERS", 2)  # a bounded memory of folders: the oldest is listed again
    listings.clear()
    for name in ("x", "y", "x", "z", "x"):
        atomic_write(tmp_path / name / "out.txt", lambda p: Path(p).write_text("x"))
    assert listings == [tmp_path / n for n in ("x", "y", "z", "x")] and len(sio._STALE) == 2


WRITER = """
import sys, time
from pathlib import Path
from scalear.cli_args import exit_on_usage_error
from scalear.io import atomic_write

def slow(p):
    Path(p).write_text("half")
    print("writing", flush=True)
    time.sleep(60)

sys.exit(exit_on_usage_error("writer", lambda: atomic_write(sys.argv[1], slow)))
"""


@pytest.mark.skipif(os.name != "posix", reason="signals")
def test_a_killed_command_leaves_no_temporary_file(tmp_path):
    """SIGTERM unwinds (the temporary file is removed); after SIGKILL the hidden file that remains is removed by
    the next write of the same output."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        out = tmp_path / sig.name / "result.png"
        p = subprocess.Popen([sys.executable, "-c", WRITER, str(out)], stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "writing"
        p.send_signal(sig)
        p.wait(timeout=60)
        left = [q.name for q in out.parent.iterdir()]
        if sig == signal.SIGTERM:
            assert p.returncode == 128 + signal.SIGTERM and left == []
        else:
            assert len(left) == 1 and left[0].startswith(".result.png.") and left[0].endswith(".tmp")
            atomic_write(out, lambda q: Path(q).write_text("done"))
            assert [q.name for q in out.parent.iterdir()] == ["result.png"]


def test_a_failed_allocation_is_one_line(capsys):
    from scalear.cli_args import exit_on_usage_error

    def hungry() -> int:
        raise MemoryError("Unable to allocate 74.5 GiB for an array with shape (100000, 100000)")

    assert exit_on_usage_error("scalear demo", hungry) == 2
    assert capsys.readouterr().err == "scalear demo: out of memory (Unable to allocate 74.5 GiB for an array with shape " \
                                      "(100000, 100000)); ask for smaller sizes\n"
    with pytest.raises(ZeroDivisionError):  # anything else is a bug: its traceback stays
        exit_on_usage_error("scalear demo", lambda: 1 // 0)


def test_a_whole_image_that_does_not_fit_suggests_tiles():
    from scalear.domains.restoration.predict import restore_image

    class Hungry:
        def restore(self, x):
            if x.shape[-1] > 64:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
            return x

    with pytest.raises(UsageError, match=r"a 100x200 image does not fit in memory .* --tile"):
        restore_image(Hungry(), torch.rand(1, 3, 100, 200))
    assert restore_image(Hungry(), torch.rand(1, 3, 100, 200), tile=64, overlap=8).shape == (1, 3, 100, 200)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc/self/status")
def test_restore_under_a_memory_limit_exits_2_suggesting_tiles(s, tmp_path):
    """The real command under an address-space limit 1 GiB above what torch maps at import: the whole 3000x3000
    image's activations cannot be allocated."""
    Image.fromarray(np.zeros((3000, 3000, 3), np.uint8)).save(tmp_path / "big.png")
    limited = textwrap.dedent("""
        import resource, sys
        import torch
        from scalear.cli import main
        vm = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmSize:"))
        resource.setrlimit(resource.RLIMIT_AS, (vm + 2**30, resource.RLIM_INFINITY))
        sys.exit(main(sys.argv[1:]))
    """)
    r = subprocess.run([sys.executable, "-c", limited, "restore", "--model", str(s["varformer"]), "--input",
                        str(tmp_path / "big.png"), "--out", str(tmp_path / "out"), "--quiet"],
                       capture_output=True, text=True, timeout=300)
    _assert_one_line(r.returncode, r.stderr, "big.png")
    assert "3000x3000" in r.stderr and "--tile" in r.stderr


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_atomic_write_in_a_child_forked_while_another_thread_held_its_lock(tmp_path):
    import scalear.io as sio

    with sio._STALE_LOCK:  # as if another thread were listing a folder at the fork
        pid = os.fork()
        if pid == 0:  # the child: its write must not wait for a lock nobody will release
            try:
                atomic_write(tmp_path / "child.txt", lambda p: Path(p).write_text("child"))
            finally:
                os._exit(0)
    deadline = time.monotonic() + 30
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    if done[0] == 0:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    assert (tmp_path / "child.txt").read_text() == "child"
