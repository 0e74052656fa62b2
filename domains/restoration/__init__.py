"""Image restoration (issue 4): Varformer (VAR's multi-scale prior guiding a U-net), tiled inference with
seamless blending, PSNR / SSIM evaluation, and the ``scalear restore`` verbs (:mod:`.cli`).

Data and degradations live in :mod:`scalear.datasets.restoration`; training in :mod:`.training`.
"""

from scalear.domains.restoration.metrics import (
    METRIC_KEYS,
    RestorationEvaluator,
    format_table,
    psnr,
    restoration_metrics,
    rgb_to_y,
    ssim,
)
from scalear.domains.restoration.tiling import tiled_apply
from scalear.domains.restoration.varformer import VARFORMER_PRESETS, Varformer, VarformerConfig, create_varformer

__all__ = ["METRIC_KEYS", "RestorationEvaluator", "format_table", "psnr", "restoration_metrics", "rgb_to_y", "ssim",
           "tiled_apply", "VARFORMER_PRESETS", "Varformer", "VarformerConfig", "create_varformer"]
