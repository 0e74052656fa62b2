"""Restoration data: synthetic degradations (kornia), paired benchmark folders, clean folders degraded on the
fly, and the built-in real photographs of scikit-image.

Images are RGB float tensors in ``[0, 1]``; samples are ``{"clean": (3, H, W), "degraded": (3, H, W),
"degradation": str, "name": str}``.
"""

from scalear._lazy import lazy_exports

# imported on first use: reading and writing images (``scalear restore``) needs no kornia
__getattr__, __dir__ = lazy_exports(__name__, {"scalear.datasets.restoration.degradations": [
    "ALL_IN_ONE", "DEGRADATIONS", "EVAL_SUITE", "Compose", "DefocusBlur", "Degradation", "Downsample", "GaussianBlur",
    "GaussianNoise", "Haze", "JPEGCompression", "LowLight", "MotionBlur", "PoissonNoise", "RainStreaks", "RandomSubset",
    "all_in_one", "build_degradation", "eval_suite", "haze", "register_degradation"]})

__all__ = [
    "ALL_IN_ONE",
    "DEGRADATIONS",
    "EVAL_SUITE",
    "Compose",
    "DefocusBlur",
    "Degradation",
    "Downsample",
    "GaussianBlur",
    "GaussianNoise",
    "Haze",
    "JPEGCompression",
    "LowLight",
    "MotionBlur",
    "PoissonNoise",
    "RainStreaks",
    "RandomSubset",
    "all_in_one",
    "build_degradation",
    "eval_suite",
    "haze",
    "register_degradation",
]
