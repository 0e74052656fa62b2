"""Image restoration (issue 4): Varformer (VAR's multi-scale prior guiding a U-net), tiled inference with
seamless blending, PSNR / SSIM evaluation, and the ``scalear restore`` verbs (:mod:`.cli`).

Data and degradations live in :mod:`scalear.datasets.restoration`; training in :mod:`.training`.
"""

from scalear._lazy import lazy_exports

# imported on first use: ``scalear restore`` loads kornia's metrics for eval only
__getattr__, __dir__ = lazy_exports(__name__, {
    "scalear.domains.restoration.metrics": ["METRIC_KEYS", "RestorationEvaluator", "format_table", "psnr",
                                            "restoration_metrics", "rgb_to_y", "ssim"],
    "scalear.domains.restoration.tiling": ["tiled_apply"],
    "scalear.domains.restoration.varformer": ["VARFORMER_PRESETS", "Varformer", "VarformerConfig", "create_varformer"],
})

__all__ = ["METRIC_KEYS", "RestorationEvaluator", "format_table", "psnr", "restoration_metrics", "rgb_to_y", "ssim",
           "tiled_apply", "VARFORMER_PRESETS", "Varformer", "VarformerConfig", "create_varformer"]
