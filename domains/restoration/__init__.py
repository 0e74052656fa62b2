"""Image restoration (issue 4): evaluation metrics so far; the Varformer model builds on them.

Data and degradations live in :mod:`scalear.datasets.restoration`.
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

__all__ = ["METRIC_KEYS", "RestorationEvaluator", "format_table", "psnr", "restoration_metrics", "rgb_to_y", "ssim"]
