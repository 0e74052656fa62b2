"""Mesh folders: ShapeNetCore v2, ModelNet, and generic ``<class>/<file>`` or flat folders.

================  ==========================================================  =========================
layout            files                                                       label / split / object id
================  ==========================================================  =========================
ShapeNetCore v2   ``<synset id>/<model id>/models/model_normalized.obj``       synset name / None / model id
ModelNet10 / 40   ``<class>/<train|test>/<class>_<n>.off``                     class / train|test / stem
generic           ``<class>/**/<file>`` (any :data:`~.io.MESH_SUFFIXES`)       class / None / stem
flat              ``<file>`` directly in the root                              ``"object"`` / None / stem
================  ==========================================================  =========================
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from scalear.datasets.meshes.io import MESH_SUFFIXES

#: ShapeNetCore v2 synset ids -> category names (taxonomy.json's first name, shortened)
SHAPENET_SYNSETS: dict[str, str] = {
    "02691156": "airplane", "02747177": "trash_bin", "02773838": "bag", "02801938": "basket",
    "02808440": "bathtub", "02818832": "bed", "02828884": "bench", "02843684": "birdhouse",
    "02871439": "bookshelf", "02876657": "bottle", "02880940": "bowl", "02924116": "bus",
    "02933112": "cabinet", "02942699": "camera", "02946921": "can", "02954340": "cap", "02958343": "car",
    "02992529": "cellphone", "03001627": "chair", "03046257": "clock", "03085013": "keyboard",
    "03207941": "dishwasher", "03211117": "display", "03261776": "earphone", "03325088": "faucet",
    "03337140": "file_cabinet", "03467517": "guitar", "03513137": "helmet", "03593526": "jar",
    "03624134": "knife", "03636649": "lamp", "03642806": "laptop", "03691459": "loudspeaker",
    "03710193": "mailbox", "03759954": "microphone", "03761084": "microwave", "03790512": "motorbike",
    "03797390": "mug", "03928116": "piano", "03938244": "pillow", "03948459": "pistol",
    "03991062": "flowerpot", "04004475": "printer", "04074963": "remote", "04090263": "rifle",
    "04099429": "rocket", "04225987": "skateboard", "04256520": "sofa", "04330267": "stove",
    "04379243": "table", "04401088": "telephone", "04460130": "tower", "04468005": "train",
    "04530566": "watercraft", "04554684": "washer",
}
_SPLITS = ("train", "test")


@dataclass(frozen=True)
class MeshRecord:
    """One mesh file: its path, class name, split (``"train"``/``"test"`` or None) and object id."""

    path: Path
    label: str
    split: str | None
    object_id: str


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _meshes(folder: Path, root: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in MESH_SUFFIXES
                  and not _hidden(p, root))


def scan_mesh_folder(root: str | Path) -> list[MeshRecord]:
    """The meshes under ``root`` as :class:`MeshRecord` s, sorted by path (layouts in the module docstring)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"mesh folder not found: {root}")
    shapenet = sorted(p for p in root.glob("*/*/models/model_normalized.obj") if not _hidden(p, root))
    if shapenet:
        records = [MeshRecord(p, SHAPENET_SYNSETS.get(p.parents[2].name, p.parents[2].name), None,
                              p.parents[1].name) for p in shapenet]
    else:
        records = []
        for p in _meshes(root, root):
            parts = p.relative_to(root).parts
            label = parts[0] if len(parts) > 1 else "object"
            split = parts[1].lower() if len(parts) == 3 and parts[1].lower() in _SPLITS else None
            records.append(MeshRecord(p, label, split, p.stem))
    if not records:
        raise ValueError(f"no mesh files ({', '.join(MESH_SUFFIXES)}) found in {root}")
    return records
