"""What the depth CLI runs: the :class:`DepthPredictor` protocol, the constant-depth baseline, and loading.

A predictor maps ``image_B3HW`` (float RGB in [0, 1], any size) to ``depth_B1HW`` (metres, same size). Any
exported model whose registered kind has a ``predict_depth`` method is one (DAR registers kind ``"dar"``,
DepthART ``"depthart"``; a model with ``metric_depth = False`` predicts depth up to scale);
``"constant:<metres>"`` is the constant baseline. The released DepthART checkpoint loads from a folder holding
its ``model.safetensors`` (and, if that file lacks the tokenizer, VAR's ``vae_ch160v4096z32.pth``) or from the
``.safetensors`` file itself (:mod:`~scalear.domains.depth.depthart_checkpoints`).

The best constant for AbsRel: the protocol averages ``mean_i |g_i - c| / g_i`` over images, i.e. minimises
``sum_i w_i |g_i - c|`` with ``w_i = 1 / (g_i * n_img(i))`` over all valid pixels. A weighted sum of absolute
deviations is minimised by the weighted median (the value where the cumulative weight first reaches half),
so no search is needed.

Example:
    >>> import torch
    >>> ConstantDepthPredictor(2.5).predict_depth(torch.zeros(1, 3, 4, 5)).shape
    torch.Size([1, 1, 4, 5])
    >>> weighted_median(torch.tensor([1.0, 2.0, 10.0]), torch.tensor([1.0, 1.0, 5.0])).item()
    10.0
"""

from __future__ import annotations

import importlib
import math
from pathlib import Path
from typing import Iterable, Literal, Protocol, runtime_checkable

import torch

FitMetric = Literal["abs_rel", "sq_rel", "rmse"]


@runtime_checkable
class DepthPredictor(Protocol):
    """Anything with ``predict_depth(image_B3HW float [0, 1]) -> depth_B1HW metres`` for any input size."""

    def predict_depth(self, image_B3HW: torch.Tensor) -> torch.Tensor: ...


class ConstantDepthPredictor:
    """Predicts the same depth (metres) everywhere: the baseline every model must beat."""

    def __init__(self, depth: float):
        if not (math.isfinite(depth) and depth > 0):
            raise ValueError(f"a constant depth must be a positive finite number, got {depth}")
        self.depth = float(depth)

    def predict_depth(self, image_B3HW: torch.Tensor) -> torch.Tensor:
        _check_image(image_B3HW)
        B, _, H, W = image_B3HW.shape
        return torch.full((B, 1, H, W), self.depth, dtype=torch.float32, device=image_B3HW.device)

    def __repr__(self) -> str:
        return f"ConstantDepthPredictor({self.depth:g})"


def _check_image(image_B3HW: torch.Tensor) -> None:
    if image_B3HW.ndim != 4 or image_B3HW.shape[1] != 3:
        raise ValueError(f"expected images (B, 3, H, W) in [0, 1], got shape {tuple(image_B3HW.shape)}")


def weighted_median(values_N: torch.Tensor, weights_N: torch.Tensor) -> torch.Tensor:
    """A minimiser of ``sum_i w_i |v_i - c|``: the smallest ``v`` whose cumulative weight reaches half the total."""
    if values_N.numel() == 0 or values_N.shape != weights_N.shape:
        raise ValueError(f"need matching non-empty values and weights, got {tuple(values_N.shape)} and {tuple(weights_N.shape)}")
    order = values_N.argsort()
    v_N, cw_N = values_N[order].double(), weights_N[order].double().cumsum(0)
    k = int(torch.searchsorted(cw_N, cw_N[-1] / 2))
    return v_N[min(k, len(v_N) - 1)]


def _iter_depths(data: Iterable[dict]) -> Iterable[torch.Tensor]:
    """Valid depths ``(n,)`` of each image of a dataset (samples) or a loader (batches)."""
    for item in data:
        depth, valid = item["depth"], item.get("valid")
        depth_BHW = depth.reshape(-1, *depth.shape[-2:])
        valid_BHW = (depth_BHW > 0) if valid is None else valid.reshape(depth_BHW.shape).bool() & (depth_BHW > 0)
        for d_HW, m_HW in zip(depth_BHW, valid_BHW):
            if m_HW.any():
                yield d_HW[m_HW].double()


def fit_constant(data: Iterable[dict], metric: FitMetric = "abs_rel", max_depth: float | None = None) -> float:
    """The constant depth that minimises ``metric`` (averaged per image, as the protocol does) on ``data``.

    ``data`` yields sample dicts or batches with ``depth`` (metres, 0 = invalid) and optionally ``valid``;
    ground truth at or beyond ``max_depth`` is ignored. ``abs_rel``: weighted median of g, weights
    1 / (g n_img); ``sq_rel``: sum(w) / sum(w / g) with w = 1 / n_img (the per-image weighted harmonic mean);
    ``rmse``: the mean of g (exact for the pooled RMSE, the usual choice for the per-image one).
    """
    values, weights = [], []
    for g_n in _iter_depths(data):
        if max_depth is not None:
            g_n = g_n[g_n < max_depth]
        if g_n.numel():
            values.append(g_n)
            weights.append(torch.full_like(g_n, 1.0 / g_n.numel()))
    if not values:
        raise ValueError("no valid ground-truth depth to fit a constant to")
    g_N, w_N = torch.cat(values), torch.cat(weights)
    if metric == "abs_rel":
        return weighted_median(g_N, w_N / g_N).item()
    if metric == "sq_rel":
        return (w_N.sum() / (w_N / g_N).sum()).item()
    if metric == "rmse":
        return (w_N * g_N).sum().item() / w_N.sum().item()
    raise ValueError(f"metric must be 'abs_rel', 'sq_rel' or 'rmse', got {metric!r}")


#: the depth model kinds and the modules that register them (imported only for a model of that kind: DepthART's
#: module brings its data code, and with it Lightning)
DOMAIN_KINDS = {"dar": "scalear.domains.depth.dar", "depthart": "scalear.domains.depth.depthart"}


def _register_domain_kind(kind: str) -> None:
    """Import the depth module that registers ``kind`` (when it is one of :data:`DOMAIN_KINDS` and present)."""
    mod = DOMAIN_KINDS.get(kind)
    if mod is None:
        return
    try:
        importlib.import_module(mod)
    except ModuleNotFoundError as e:
        if e.name != mod:
            raise


def _released_depthart(path: Path) -> tuple[Path, Path | None] | None:
    """``(checkpoint, VAR tokenizer or None)`` when ``path`` is the released DepthART's folder or file."""
    if path.is_file() and path.suffix == ".safetensors":
        from scalear.domains.depth.depthart_checkpoints import RELEASED_FILES

        vae = path.parent / RELEASED_FILES[1]
        return path, vae if vae.is_file() else None
    if not path.is_dir() or (path / "config.json").exists():  # an exported model: no need for DepthART's module
        return None
    from scalear.domains.depth.depthart_checkpoints import find_released_files

    return find_released_files(path)


def load_predictor(spec: str | Path, map_location: str | torch.device = "cpu") -> DepthPredictor:
    """``"constant:<metres>"``, an exported model folder (``scalear.io.from_pretrained``) whose kind has
    ``predict_depth``, or the released DepthART (a folder of its files, or its ``.safetensors``); a model is
    returned in eval mode on ``map_location``. A checkpoint that does not fit raises ``ValueError`` naming it."""
    s = str(spec)
    if s.startswith("constant:"):
        try:
            return ConstantDepthPredictor(float(s.split(":", 1)[1]))
        except ValueError as e:
            raise ValueError(f"bad predictor spec {s!r}: expected constant:<metres>, e.g. constant:2.5 ({e})") from None
    from scalear.io import from_pretrained

    released = _released_depthart(Path(s))
    if released is not None:
        from scalear.domains.depth.depthart_checkpoints import load_depthart_checkpoint
        from scalear.var_checkpoints import CheckpointMismatchError

        try:
            return load_depthart_checkpoint(*released).to(map_location).eval()
        except CheckpointMismatchError as e:
            raise ValueError(str(e)) from None
    if not Path(s).is_dir():
        raise FileNotFoundError(f"model {s!r} not found: give an exported model folder (config.json + "
                                "model.safetensors), the released DepthART's folder or constant:<metres>")
    from scalear.io import read_config

    _register_domain_kind(read_config(s)["kind"])
    model = from_pretrained(s, map_location=map_location)
    if not callable(getattr(model, "predict_depth", None)):
        raise ValueError(f"{s}: a {type(model).__name__} has no predict_depth(image_B3HW) method; it is not a depth model")
    return model.eval()
