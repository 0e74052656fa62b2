"""Restoration datasets: paired benchmark folders, clean folders degraded on the fly, scikit-image's photos.

Every dataset yields ``{"clean": (3, H, W), "degraded": (3, H, W), "degradation": str, "name": str}`` with
float32 RGB in ``[0, 1]``; the default collate turns them into batches with ``(B, 3, H, W)`` images and lists
of labels and names.

Paired folders (:class:`PairedFolderDataset`) follow the benchmarks' layouts as published: a degraded and a
clean sub-folder whose files are matched by name (:data:`KNOWN_LAYOUTS`), or both images of a pair in one
folder, told apart by a word of the name (:data:`SAME_FOLDER_LAYOUTS`):

=================  ====================  ==============================================================
layout             folders               names (degraded -> clean)
=================  ====================  ==============================================================
Rain100L / H       ``rainy/ norain/``    ``rain-001.png -> norain-001.png`` (or equal names)
RESIDE SOTS        ``hazy/ clear/``      ``0001_0.8_0.2.jpg -> 0001.png`` (``<id>_<A>_<beta>``)
LOL                ``low/ high/``        equal names
GoPro              ``blur/ sharp/``      equal names, also inside sequence folders (``GOPR0384_11_00/blur``)
AirNet / PromptIR  ``input/ target/``    equal names, or the SOTS rule
PolyU real noise   one folder            ``Canon5D2_..._real.JPG -> Canon5D2_..._mean.JPG``
SIDD               one folder per scene  ``0001_NOISY_SRGB_010.PNG -> 0001_GT_SRGB_010.PNG``
=================  ====================  ==============================================================

Other namings take a *pair rule* ``DEGRADED:CLEAN`` (:func:`parse_pair_rule`): a degraded file's name contains
``DEGRADED``; its clean partner's name has it replaced by ``CLEAN`` (``_noisy:_gt``; ``_x:`` removes ``_x``).
With sub-folders the rule maps names from one folder to the other; without them both files lie in one folder.

Clean folders (:class:`ImageFolder`) and scikit-image's photos (:class:`SkimagePhotos`) become pairs through
:class:`DegradedDataset`, which crops and degrades each image with a :mod:`~.degradations` op.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import lightning as L
import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from scalear.datasets.loaders import split_loader
from scalear.training.loader import ResumableDataLoader
from scalear.datasets.restoration.degradations import ALL_IN_ONE, EVAL_SUITE, Degradation, RandomSubset, build_degradation
from scalear.datasets.restoration.io import IMAGE_SUFFIXES, read_image_tensor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PairLayout:
    """A benchmark's folders and names: ``degraded`` / ``clean`` sub-folders (``"."`` for both: the pairs share
    one folder), and ``tokens``, the pair rule: the (degraded, clean) words that differ between file names."""

    degraded: str
    clean: str
    label: str | None  # the degradation these benchmarks hold (None: take the root folder's name)
    tokens: tuple[str, str] | None = None

    @property
    def same_folder(self) -> bool:
        return self.degraded == self.clean


#: the auto-detected sub-folder layouts, matched case-insensitively, first match wins
KNOWN_LAYOUTS: tuple[PairLayout, ...] = (
    PairLayout("rainy", "norain", "rain", ("rain", "norain")),  # Rain100L / Rain100H
    PairLayout("rain", "norain", "rain", ("rain", "norain")),
    PairLayout("hazy", "clear", "haze"),  # RESIDE SOTS
    PairLayout("hazy", "gt", "haze"),
    PairLayout("low", "high", "low_light"),  # LOL
    PairLayout("blur", "sharp", "motion_blur", ("blur", "sharp")),  # GoPro, HIDE
    PairLayout("noisy", "clean", "noise"),
    PairLayout("noisy", "gt", "noise"),
    PairLayout("input", "target", None),  # AirNet / PromptIR test sets, Rain13k
    PairLayout("input", "gt", None),
    PairLayout("lq", "gt", None),  # BasicSR
)
#: the auto-detected one-folder layouts (tried when no sub-folder layout is present), first match wins
SAME_FOLDER_LAYOUTS: tuple[PairLayout, ...] = (
    PairLayout(".", ".", "noise", ("_real", "_mean")),  # PolyU real-world noise (CroppedImages/)
    PairLayout(".", ".", "noise", ("NOISY", "GT")),  # SIDD (one folder per scene)
)

_SOTS_SUFFIX = re.compile(r"^(.+?)(?:_[0-9]+(?:\.[0-9]+)?)+$")  # "0001_0.8_0.2" -> "0001"


def parse_pair_rule(rule: str | Sequence[str]) -> tuple[str, str]:
    """``"DEGRADED:CLEAN"`` (or a pair) as ``(degraded, clean)``; ``DEGRADED`` must be non-empty and differ from
    ``CLEAN``, which may be empty (``"_noisy:"``: ``x_noisy.png -> x.png``)."""
    parts = tuple(rule.split(":")) if isinstance(rule, str) else tuple(rule)
    if len(parts) != 2 or not parts[0] or parts[0].lower() == parts[1].lower():
        raise ValueError(f"pair rule {rule!r}: expected DEGRADED:CLEAN, the part of a degraded file's name and what "
                         "replaces it in its clean partner's, e.g. '_real:_mean' or 'NOISY:GT' (DEGRADED not empty)")
    return str(parts[0]), str(parts[1])


def swap_name(stem: str, tokens: tuple[str, str]) -> str | None:
    """``stem`` in lower case with the last occurrence of ``tokens[0]`` replaced by ``tokens[1]`` (compared
    case-insensitively); None when ``stem`` does not contain ``tokens[0]``."""
    low, a = stem.lower(), tokens[0].lower()
    i = low.rfind(a)
    return None if i < 0 else low[:i] + tokens[1].lower() + low[i + len(a):]


def list_images(folder: Path, recursive: bool = False) -> list[Path]:
    """Image files (by :data:`IMAGE_SUFFIXES`) in ``folder``, sorted; hidden files are skipped."""
    files = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in files if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _subdir(folder: Path, name: str) -> Path | None:
    """The sub-folder of ``folder`` called ``name``, ignoring letter case."""
    exact = folder / name
    if exact.is_dir():
        return exact
    hits = [p for p in folder.iterdir() if p.is_dir() and p.name.lower() == name.lower()]
    return hits[0] if len(hits) == 1 else None


def detect_layout(root: str | Path, pair_rule: tuple[str, str] | None = None) -> tuple[PairLayout, list[Path]]:
    """The layout of ``root`` and the folders holding its pairs (``root`` itself, or sequence / scene sub-folders
    that each hold pairs): a sub-folder pair of :data:`KNOWN_LAYOUTS` (names mapped by ``pair_rule`` when
    given), else the folders where ``pair_rule`` (default: each of :data:`SAME_FOLDER_LAYOUTS`) pairs at least one
    file with another. ``ValueError`` naming what was looked for when nothing fits."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"paired dataset folder not found: {root}")
    levels = [[root], sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))]
    for groups in levels:
        for layout in KNOWN_LAYOUTS:
            hits = [g for g in groups if _subdir(g, layout.degraded) and _subdir(g, layout.clean)]
            if hits:
                return (replace(layout, tokens=pair_rule) if pair_rule else layout), hits
    same = [PairLayout(".", ".", None, pair_rule)] if pair_rule else SAME_FOLDER_LAYOUTS
    for groups in levels:
        for layout in same:
            if any(match_pairs(g, g, layout)[0] for g in groups):  # every folder with images: none goes unreported
                return layout, [g for g in groups if list_images(g)]
    subs = sorted(p.name for p in root.iterdir() if p.is_dir())
    if pair_rule:
        raise ValueError(f"{root}: the pair rule {pair_rule[0]}:{pair_rule[1]} pairs no two images, neither in it "
                         f"nor in its sub-folders {subs}")
    known = ", ".join(f"{lay.degraded}/+{lay.clean}/" for lay in KNOWN_LAYOUTS)
    names = ", ".join(f"*{lay.tokens[0]}*+*{lay.tokens[1]}*" for lay in SAME_FOLDER_LAYOUTS if lay.tokens)
    raise ValueError(f"{root}: no known degraded/clean layout among the sub-folders {subs} (known: {known}) or the "
                     f"file names (known: {names}); name the sub-folders with --pair-dirs DEGRADED:CLEAN "
                     "(degraded_dir=, clean_dir= in Python) or the names with --pair-rule DEGRADED:CLEAN (pair_rule=)")


def _clean_keys(stem: str, layout: PairLayout) -> list[str]:
    """Candidate clean stems (lower case) for a degraded file's stem, in order of preference (the equal stem,
    the pair rule's, the SOTS id); one folder: only the pair rule's."""
    swapped = swap_name(stem, layout.tokens) if layout.tokens else None
    if layout.same_folder:
        return [swapped] if swapped else []
    keys = [stem.lower(), *([swapped] if swapped else [])]
    if m := _SOTS_SUFFIX.match(stem):
        keys.append(m.group(1).lower())
    return keys


@dataclass(frozen=True)
class Pair:
    degraded: Path
    clean: Path
    name: str


def match_pairs(degraded_dir: Path, clean_dir: Path, layout: PairLayout, prefix: str = "") -> tuple[list[Pair], list[Path]]:
    """Pairs of ``degraded_dir`` / ``clean_dir`` files by name (see :class:`PairedFolderDataset`), and the
    files of either folder that found no partner. Several degraded files may share one clean file (SOTS).
    When the two folders are one, a file is degraded when the pair rule maps its name to another file's."""
    clean: dict[str, Path] = {}
    for p in list_images(clean_dir):
        if (key := p.stem.lower()) in clean:
            raise ValueError(f"{clean_dir}: two images share the name {p.stem!r}: {clean[key].name}, {p.name}")
        clean[key] = p
    degraded = list(clean.values()) if layout.same_folder else list_images(degraded_dir)
    pairs, used = [], set()
    for d in degraded:
        key = next((k for k in _clean_keys(d.stem, layout) if k in clean and clean[k] != d), None)
        if key is not None:
            used |= {d, clean[key]}
            pairs.append(Pair(d, clean[key], prefix + d.stem))
    unmatched = dict.fromkeys(p for p in [*degraded, *clean.values()] if p not in used)
    return pairs, list(unmatched)


class PairedFolderDataset(Dataset):
    """Degraded/clean pairs from a benchmark folder (layouts: module docstring, :data:`KNOWN_LAYOUTS`,
    :data:`SAME_FOLDER_LAYOUTS`).

    With sub-folders, a degraded file ``X`` pairs with the clean file of the same stem; failing that, with the
    stem after the pair rule's word swap (``rain-1 -> norain-1``, ``Istanbul_blur1 -> Istanbul_sharp1``), or with
    the stem minus trailing ``_<number>`` groups (SOTS ``0001_0.8_0.2 -> 0001``). In one folder, a file pairs with
    the file its name maps to by the pair rule (``x_real -> x_mean``). The rule replaces the last occurrence of
    its degraded word; stems compare case-insensitively; suffixes may differ (``.jpg`` degraded, ``.png`` clean).

    Args:
        root: the benchmark folder.
        degraded_dir, clean_dir: sub-folder names (both or neither; the same name: one folder, which needs a
            ``pair_rule``); default: auto-detect a known layout, also one level down (GoPro's sequence folders,
            SIDD's scene folders).
        pair_rule: ``"DEGRADED:CLEAN"`` or a pair (:func:`parse_pair_rule`): how a degraded file's name becomes
            its clean partner's; replaces a detected layout's own rule.
        degradation: the label of every sample; default: the layout's (``"rain"``, ``"haze"``, ...), else the
            degraded sub-folder's name for explicit folders, else ``root``'s name.
        on_unmatched: ``"error"`` (default: a ``ValueError`` naming the files without a partner) or ``"skip"``
            (drop them with a warning).
        crop_size: ``(h, w)`` (or square) crop at the same place in both images; None keeps full images.
        crop: ``"random"`` (training) or ``"center"`` (evaluation).
        hflip: random left-right flips (with crop, for training).
        seed: fixed seed for crops and flips (per index); None draws from torch's global RNG.
    """

    def __init__(self, root: str | Path, degraded_dir: str | None = None, clean_dir: str | None = None,
                 pair_rule: str | Sequence[str] | None = None, degradation: str | None = None, on_unmatched: Literal["error", "skip"] = "error",
                 crop_size: int | Sequence[int] | None = None, crop: Literal["random", "center"] = "random",
                 hflip: bool = False, seed: int | None = None):
        self.root = Path(root)
        if crop not in ("random", "center"):
            raise ValueError(f"crop must be 'random' or 'center', got {crop!r}")
        if on_unmatched not in ("error", "skip"):
            raise ValueError(f"on_unmatched must be 'error' or 'skip', got {on_unmatched!r}")
        if (degraded_dir is None) != (clean_dir is None):
            raise ValueError("give both degraded_dir and clean_dir, or neither (to auto-detect the layout)")
        rule = None if pair_rule is None else parse_pair_rule(pair_rule)
        if degraded_dir is not None:
            layout, groups = PairLayout(degraded_dir, clean_dir, degraded_dir, rule), [self.root]  # type: ignore[arg-type]
            for sub in (degraded_dir, clean_dir):
                if not (self.root / sub).is_dir():  # type: ignore[operator]
                    raise FileNotFoundError(f"{self.root}: sub-folder {sub!r} not found")
            if layout.same_folder and rule is None:
                raise ValueError(f"{self.root}: degraded and clean images share the folder {degraded_dir!r}; give a "
                                 "pair rule (--pair-rule DEGRADED:CLEAN, pair_rule= in Python) to tell them apart")
        else:
            layout, groups = detect_layout(self.root, rule)
        self.layout = layout
        self.degradation = degradation or layout.label or self.root.name
        self.pairs: list[Pair] = []
        unmatched: list[Path] = []
        for group in groups:
            prefix = "" if group == self.root else f"{group.name}/"
            got, miss = match_pairs(_subdir(group, layout.degraded), _subdir(group, layout.clean), layout, prefix)  # type: ignore[arg-type]
            self.pairs += got
            unmatched += miss
        if unmatched:
            shown = ", ".join(str(p.relative_to(self.root)) for p in unmatched[:10])
            more = f" and {len(unmatched) - 10} more" if len(unmatched) > 10 else ""
            msg = f"{self.root}: {len(unmatched)} image(s) without a degraded/clean partner: {shown}{more}"
            if on_unmatched == "error":
                raise ValueError(msg + " (to drop them: --unmatched skip, or on_unmatched='skip' in Python)")
            log.warning("%s; skipped", msg)
        if not self.pairs:
            where = f"{layout.degraded}/ + {layout.clean}/" if not layout.same_folder else "one folder"
            rule_text = f", pair rule {layout.tokens[0]}:{layout.tokens[1]}" if layout.tokens else ""
            raise ValueError(f"{self.root}: no degraded/clean pairs found ({where}{rule_text})")
        self.crop_size = _pair(crop_size)
        self.crop, self.hflip, self.seed = crop, hflip, seed

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict[str, Any]:
        pair = self.pairs[i]
        degraded_3HW, clean_3HW = read_image_tensor(pair.degraded), read_image_tensor(pair.clean)
        if degraded_3HW.shape != clean_3HW.shape:
            raise ValueError(f"size mismatch: {pair.degraded} is {tuple(degraded_3HW.shape[1:])} but {pair.clean} "
                             f"is {tuple(clean_3HW.shape[1:])} (H, W)")
        g = _index_generator(self.seed, i)
        clean_3HW, degraded_3HW = crop_and_flip([clean_3HW, degraded_3HW], self.crop_size, self.crop, self.hflip, g,
                                                pair.name)
        return {"clean": clean_3HW, "degraded": degraded_3HW, "degradation": self.degradation, "name": pair.name}


class ImageFolder(Dataset):
    """Clean images of a folder (``recursive``: and its sub-folders) as ``{"clean": (3, H, W), "name": str}``;
    names are paths relative to ``root`` without suffix. Unreadable files raise naming the file."""

    def __init__(self, root: str | Path, recursive: bool = True):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder not found: {self.root}")
        self.files = list_images(self.root, recursive)
        if not self.files:
            raise ValueError(f"{self.root}: no images ({', '.join(IMAGE_SUFFIXES)})")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict[str, Any]:
        p = self.files[i]
        return {"clean": read_image_tensor(p), "name": p.relative_to(self.root).with_suffix("").as_posix()}


#: scikit-image's photographs for training (grey ones become RGB); ``cat`` is ``chelsea``, ``clock`` is
#: motion-blurred and ``colorwheel`` / ``logo`` are synthetic, so they are left out
SKIMAGE_TRAIN: tuple[str, ...] = ("astronaut", "camera", "rocket", "motorcycle_left", "moon", "brick", "grass",
                                  "gravel", "immunohistochemistry", "hubble_deep_field")
#: held-out photographs for validation and the quickstart's before/after (never used for training)
SKIMAGE_HELDOUT: tuple[str, ...] = ("chelsea", "coffee", "coins")


def load_skimage_photo(name: str) -> np.ndarray:
    """The scikit-image photograph ``name`` as ``(H, W, 3)`` uint8 (``motorcycle_left``/``_right``: the
    Middlebury stereo pair's views)."""
    import skimage.data

    if name in ("motorcycle_left", "motorcycle_right"):
        im = skimage.data.stereo_motorcycle()[0 if name.endswith("left") else 1]
    elif name.startswith("_") or not callable(getattr(skimage.data, name, None)):
        raise ValueError(f"scikit-image has no photograph {name!r}; the built-in splits are "
                         f"train {SKIMAGE_TRAIN} and held-out {SKIMAGE_HELDOUT}")
    else:
        im = getattr(skimage.data, name)()
    im = np.asarray(im)
    if im.dtype != np.uint8 or im.ndim not in (2, 3):
        raise ValueError(f"skimage.data.{name} is {im.dtype} {im.shape}, not an 8-bit photograph")
    return np.repeat(im[..., None], 3, axis=2) if im.ndim == 2 else np.ascontiguousarray(im[..., :3])


class SkimagePhotos(Dataset):
    """The built-in photographs: ``split`` ``"train"`` (:data:`SKIMAGE_TRAIN`), ``"heldout"``
    (:data:`SKIMAGE_HELDOUT`) or a list of names; loaded once, as ``{"clean": (3, H, W), "name": str}``."""

    def __init__(self, split: Literal["train", "heldout"] | Sequence[str] = "train"):
        if isinstance(split, str):
            if split not in ("train", "heldout"):
                raise ValueError(f"split must be 'train', 'heldout' or a list of photo names, got {split!r}")
            split = SKIMAGE_TRAIN if split == "train" else SKIMAGE_HELDOUT
        self.names = list(split)
        self.images = [torch.from_numpy(load_skimage_photo(n)).permute(2, 0, 1).float().div_(255.0) for n in self.names]

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"clean": self.images[i], "name": self.names[i]}


class DegradedDataset(Dataset):
    """Pairs made on the fly: each clean image of ``source`` is cropped, then degraded.

    Args:
        source: a dataset of ``{"clean": (3, H, W), "name"}`` (:class:`ImageFolder`, :class:`SkimagePhotos`).
        degradation: a :class:`~.degradations.Degradation` or spec (``"gaussian_noise:sigma=25"``, a
            :class:`~.degradations.RandomSubset` for all-in-one); the sample's label is the one it reports.
        crop_size: ``(h, w)`` or square crop (None: the full image).
        crop: ``"random"`` (training) or ``"center"`` (evaluation).
        hflip: random left-right flips.
        repeats: each image appears ``repeats`` times per epoch (with fresh crops and degradations).
        seed: None draws from torch's global RNG (seed workers through Lightning); an integer fixes crop and
            degradation per index (validation sets), different integers give different samples.
    """

    def __init__(self, source: Dataset, degradation: Degradation | str | Mapping[str, Any] | list,
                 crop_size: int | Sequence[int] | None = None, crop: Literal["random", "center"] = "random",
                 hflip: bool = False, repeats: int = 1, seed: int | None = None):
        if crop not in ("random", "center"):
            raise ValueError(f"crop must be 'random' or 'center', got {crop!r}")
        if repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {repeats}")
        self.source, self.degradation = source, build_degradation(degradation)
        self.crop_size, self.crop, self.hflip, self.repeats, self.seed = _pair(crop_size), crop, hflip, repeats, seed

    def __len__(self) -> int:
        return len(self.source) * self.repeats  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.source[i % len(self.source)]  # type: ignore[arg-type]
        g = _index_generator(self.seed, i)
        (clean_3HW,) = crop_and_flip([item["clean"]], self.crop_size, self.crop, self.hflip, g, item["name"])
        degraded_13HW, labels = self.degradation.apply(clean_3HW[None], g)
        return {"clean": clean_3HW, "degraded": degraded_13HW[0], "degradation": labels[0], "name": item["name"]}


def _pair(size: int | Sequence[int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if h < 1 or w < 1:
        raise ValueError(f"crop size must be positive, got {size!r}")
    return int(h), int(w)


def _index_generator(seed: int | None, i: int) -> torch.Generator | None:
    return None if seed is None else torch.Generator().manual_seed(int(seed) * 1_000_003 + int(i))


def crop_and_flip(images: list[torch.Tensor], size: tuple[int, int] | None, mode: Literal["random", "center"],
                  hflip: bool, g: torch.Generator | None, name: str = "image") -> list[torch.Tensor]:
    """The same crop (and flip) of every ``(C, H, W)`` image in ``images``; an image smaller than the crop
    raises naming it."""
    H, W = images[0].shape[-2:]
    if size is not None:
        h, w = size
        if H < h or W < w:
            raise ValueError(f"{name}: {H}x{W} image is smaller than the crop {h}x{w}")
        if mode == "random":
            top = int(torch.randint(0, H - h + 1, (1,), generator=g))
            left = int(torch.randint(0, W - w + 1, (1,), generator=g))
        else:
            top, left = (H - h) // 2, (W - w) // 2
        images = [im[..., top : top + h, left : left + w] for im in images]
    if hflip and bool(torch.rand((), generator=g) < 0.5):
        images = [im.flip(-1) for im in images]
    return [im.contiguous() for im in images]


def concat_eval_sets(source: Dataset, degradations: Mapping[str, Degradation | str] | Sequence[str],
                     crop_size: int | Sequence[int] | None = None, seed: int = 0) -> Dataset:
    """Every image of ``source`` under every degradation (fixed seed, centre crops): an evaluation set whose
    samples carry the degradations' labels (an :data:`~.degradations.EVAL_SUITE` key, or the spec)."""
    items = degradations.items() if isinstance(degradations, Mapping) else ((None, d) for d in degradations)
    sets = [DegradedDataset(source, build_degradation(d, label=lb), crop_size, "center", seed=seed + 7919 * k)
            for k, (lb, d) in enumerate(items)]
    return ConcatDataset(sets)


class RestorationDataModule(L.LightningDataModule):
    """Training and validation loaders of ``{"clean", "degraded", "degradation", "name"}`` batches.

    Training pairs come from ``train_paired`` (a benchmark folder), else from ``train_dir`` (clean images),
    else from the built-in :data:`SKIMAGE_TRAIN` photos, the last two degraded on the fly by a random one of
    ``degradations`` per image. Validation pairs come from ``val_paired``, else from ``val_dir`` or the
    :data:`SKIMAGE_HELDOUT` photos under each of ``val_degradations`` (fixed seed, centre crops).

    Args:
        train_dir, train_paired, val_dir, val_paired: folders (see above); paired ones use
            :class:`PairedFolderDataset`'s layout detection.
        degradations: training degradation specs, one drawn per image (default: :data:`~.degradations.ALL_IN_ONE`).
        val_degradations: :data:`~.degradations.EVAL_SUITE` keys or specs (default: the whole suite).
        crop_size: training crop (square or ``(h, w)``); val_crop_size: validation centre crop (None: full
            images, which then need ``val_batch_size=1`` when sizes differ).
        batch_size, val_batch_size, num_workers: loaders.
        repeats: passes over the training images per epoch (fresh crops and degradations each time).
        hflip: random flips in training.
        seed: seed of the validation degradations.
    """

    def __init__(self, train_dir: str | None = None, train_paired: str | None = None, val_dir: str | None = None,
                 val_paired: str | None = None, degradations: Sequence[str | dict] = ALL_IN_ONE,
                 val_degradations: Sequence[str] | None = None, crop_size: int | Sequence[int] = 64,
                 val_crop_size: int | Sequence[int] | None = 128, batch_size: int = 8, val_batch_size: int = 8,
                 num_workers: int = 0, repeats: int = 50, hflip: bool = True, seed: int = 0):
        super().__init__()
        if train_dir and train_paired:
            raise ValueError("give train_dir (clean images) or train_paired (a paired folder), not both")
        if val_dir and val_paired:
            raise ValueError("give val_dir (clean images) or val_paired (a paired folder), not both")
        self.train_dir, self.train_paired, self.val_dir, self.val_paired = train_dir, train_paired, val_dir, val_paired
        self.degradation = RandomSubset(list(degradations))
        keys = list(EVAL_SUITE) if val_degradations is None else list(val_degradations)
        self.val_degradations = {k: EVAL_SUITE.get(k, k) for k in keys}
        for k, spec in self.val_degradations.items():
            build_degradation(spec)  # fail now, not in the first validation step
        self.crop_size, self.val_crop_size = crop_size, val_crop_size
        self.batch_size, self.val_batch_size, self.num_workers = batch_size, val_batch_size, num_workers
        self.repeats, self.hflip, self.seed = repeats, hflip, seed
        self.datasets: dict[str, Dataset] = {}

    def dataset(self, split: Literal["train", "val"]) -> Dataset:
        """The training or validation dataset (built once)."""
        if split not in self.datasets:
            self.datasets[split] = self._make_train() if split == "train" else self._make_val()
        return self.datasets[split]

    def _make_train(self) -> Dataset:
        if self.train_paired:
            return PairedFolderDataset(self.train_paired, crop_size=self.crop_size, hflip=self.hflip)
        source = ImageFolder(self.train_dir) if self.train_dir else SkimagePhotos("train")
        return DegradedDataset(source, self.degradation, self.crop_size, "random", self.hflip, self.repeats)

    def _make_val(self) -> Dataset:
        if self.val_paired:
            return PairedFolderDataset(self.val_paired, crop_size=self.val_crop_size, crop="center")
        source = ImageFolder(self.val_dir) if self.val_dir else SkimagePhotos("heldout")
        return concat_eval_sets(source, self.val_degradations, self.val_crop_size, self.seed)

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit"):
            self.dataset("train")
        self.dataset("val")

    def train_dataloader(self) -> DataLoader:
        return split_loader(self.dataset("train"), self.batch_size, shuffle=True, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return split_loader(self.dataset("val"), self.val_batch_size, shuffle=False, num_workers=self.num_workers)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()


# ------------------------------------------------------------------------------------------- clean crops (a prior)
class CleanCrops(Dataset):
    """Random (or, with a seed, fixed) crops of clean images as ``{"image": (3, s, s) in [-1, 1]}``, ``repeats``
    per image and epoch; images are first area-downscaled by ``downscale`` so that crops hold more content."""

    def __init__(self, source: Dataset, crop_size: int, repeats: int = 1, downscale: float = 1.0,
                 seed: int | None = None):
        self.source, self.crop_size, self.repeats, self.seed = source, crop_size, repeats, seed
        self.images = []
        for i in range(len(source)):  # type: ignore[arg-type]
            im = source[i]["clean"]
            if downscale != 1.0:
                size = [max(crop_size, round(s / downscale)) for s in im.shape[-2:]]
                im = torch.nn.functional.interpolate(im[None], size, mode="area")[0]
            self.images.append(im)

    def __len__(self) -> int:
        return len(self.images) * self.repeats

    def __getitem__(self, i: int) -> dict:
        g = None if self.seed is None else torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        (crop,) = crop_and_flip([self.images[i % len(self.images)]], (self.crop_size,) * 2, "random", True, g)
        return {"image": crop * 2 - 1}


class CleanPhotoData(L.LightningDataModule):
    """Clean crops for training the prior (tokenizer, then transformer): ``train_dir`` images or the built-in
    scikit-image training photos; validation on the held-out photos (fixed crops).

    Args:
        crop_size: the tokenizer's input size (32 for the ``tiny`` preset).
        downscale: area-downscale factor applied to the photos before cropping.
        repeats: crops per image and epoch.
        train_dir, val_dir: folders of clean images (default: the built-in photos).
        batch_size, num_workers: loaders.
    """

    def __init__(self, crop_size: int = 32, downscale: float = 2.0, repeats: int = 200, train_dir: str | None = None,
                 val_dir: str | None = None, batch_size: int = 32, num_workers: int = 0):
        super().__init__()
        self.crop_size, self.downscale, self.repeats = crop_size, downscale, repeats
        self.train_dir, self.val_dir, self.batch_size, self.num_workers = train_dir, val_dir, batch_size, num_workers
        self.sets: dict[str, Dataset] = {}

    def setup(self, stage: str | None = None) -> None:
        if "train" not in self.sets:
            src = ImageFolder(self.train_dir) if self.train_dir else SkimagePhotos("train")
            self.sets["train"] = CleanCrops(src, self.crop_size, self.repeats, self.downscale)
            val = ImageFolder(self.val_dir) if self.val_dir else SkimagePhotos("heldout")
            self.sets["val"] = CleanCrops(val, self.crop_size, 8, self.downscale, seed=0)

    def train_dataloader(self) -> DataLoader:
        return ResumableDataLoader(self.sets["train"], self.batch_size, shuffle=True, drop_last=True,
                                   num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.sets["val"], self.batch_size, num_workers=self.num_workers)
