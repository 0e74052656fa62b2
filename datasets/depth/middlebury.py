"""The Middlebury 2014 "Motorcycle" stereo scene shipped with scikit-image, as a metric-depth test case.

``skimage.data.stereo_motorcycle()`` returns the left and right images (500, 741, 3) and the ground-truth
disparity (500, 741) float32 of the Middlebury 2014 scene Motorcycle (Scharstein et al., GCPR 2014),
downscaled 4x from 2964x2000 with ``downscale_local_mean``; pixels without ground truth are ``inf`` (its
docstring says NaN; both are handled).

Depth from disparity (Middlebury 2014 data format): ``Z = baseline * f / (d + doffs)``, with ``doffs = cx1 -
cx0`` the x-difference of the two principal points. The scene's ``calib.txt`` (full resolution) gives
``cam0 = [3979.911 0 1244.772; 0 3979.911 1019.507; 0 0 1]``, ``cam1`` with cx = 1369.115, so doffs =
124.343 px, and baseline = 193.001 mm. Downscaling by s = 4 divides every pixel quantity (f, cx, d) by s,
so f = 994.978 px and doffs = 31.086 px in the units of skimage's disparity (skimage's docstring lists
exactly these: focal 994.978 px, principal point dx 31.086 px, baseline 193.001 mm); Z is unchanged by the
scaling since s cancels. Depths come out between about 2.1 m (the motorcycle's front) and 5.0 m (the back
wall), median about 2.75 m; about 7% of pixels have no disparity.
"""

from __future__ import annotations

import numpy as np

from scalear.datasets.depth.io import make_sample

#: Middlebury 2014 Motorcycle calib.txt at full resolution (2964x2000): pixels and millimetres
MOTORCYCLE_CALIB: dict[str, float] = {
    "f": 3979.911,
    "cx0": 1244.772,
    "cx1": 1369.115,
    "cy": 1019.507,
    "doffs": 124.343,
    "baseline_mm": 193.001,
    "width": 2964,
    "height": 2000,
}
#: downscale factor of skimage's copy (2964x2000 -> 741x500)
SKIMAGE_DOWNSCALE: int = 4


def disparity_to_depth(disparity_HW: np.ndarray, focal_px: float, baseline_mm: float, doffs_px: float = 0.0) -> np.ndarray:
    """Metric depth ``(H, W)`` float32 metres = ``baseline_mm * focal_px / (d + doffs_px) / 1000``.

    Non-finite disparities (Middlebury's ``inf`` / NaN = no ground truth) and ``d + doffs <= 0`` give 0 (invalid).
    """
    d = np.asarray(disparity_HW, dtype=np.float64)
    denom = d + doffs_px
    ok = np.isfinite(d) & (denom > 0)
    depth = np.zeros(d.shape)
    depth[ok] = baseline_mm * focal_px / denom[ok] / 1000.0
    return depth.astype(np.float32)


def motorcycle_intrinsics(downscale: int = SKIMAGE_DOWNSCALE) -> dict[str, float]:
    """Calibration of the Motorcycle scene at 1/``downscale`` resolution: f, cx, cy, doffs in pixels, baseline in mm."""
    c = MOTORCYCLE_CALIB
    return {
        "f": c["f"] / downscale,
        "cx": c["cx0"] / downscale,
        "cy": c["cy"] / downscale,
        "doffs": c["doffs"] / downscale,
        "baseline_mm": c["baseline_mm"],
    }


def load_middlebury_motorcycle() -> dict:
    """skimage's Motorcycle as a depth sample, plus ``"disparity"`` (H, W) and ``"right"`` (3, H, W).

    ``image`` (3, 500, 741) in [0, 1], ``depth`` (1, 500, 741) metres with 0 where the disparity is unknown
    (about 7% of pixels), ``valid``, ``focal`` = 994.978 px, ``name`` = ``"middlebury2014/Motorcycle"``.
    """
    import skimage.data
    import torch

    left_HW3, right_HW3, disparity_HW = skimage.data.stereo_motorcycle()
    k = motorcycle_intrinsics(SKIMAGE_DOWNSCALE)
    depth_HW = disparity_to_depth(disparity_HW, k["f"], k["baseline_mm"], k["doffs"])
    sample = make_sample(left_HW3, depth_HW, k["f"], "middlebury2014/Motorcycle")
    sample["disparity"] = torch.from_numpy(np.asarray(disparity_HW, dtype=np.float32))
    sample["right"] = torch.from_numpy(np.ascontiguousarray(right_HW3)).permute(2, 0, 1).float().div_(255.0)
    return sample
