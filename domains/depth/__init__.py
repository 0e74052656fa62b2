"""The depth domain: monocular depth estimation coarse to fine (issue 3).

Models to come: DAR (Wang et al., "Scalable Autoregressive Monocular Depth Estimation", CVPR 2025) and
DepthART (Gabdullin et al., "Monocular Depth Estimation as Autoregressive Refinement Task"). Here now:
:mod:`scalear.domains.depth.metrics`, the standard KITTI / NYU Depth v2 evaluation protocol.
"""
