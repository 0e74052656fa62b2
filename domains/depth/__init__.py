"""Depth domain (installed as ``scalear.domains.depth``): monocular depth estimated coarse to fine.

- :mod:`~scalear.domains.depth.dar`, :mod:`~scalear.domains.depth.bins`, :mod:`~scalear.domains.depth.training`:
  DAR (Wang et al., CVPR 2025) with recursive depth bins and the patch-wise causal mask.
- :mod:`~scalear.domains.depth.depthart`, :mod:`~scalear.domains.depth.depthart_training`: DepthART
  (Gabdullin et al.): VAR over depth tokens of a shared RGB tokenizer with the image's tokens as a prefix,
  trained with dynamic (self-refinement) targets or teacher forcing.
- :mod:`~scalear.domains.depth.metrics`: the standard KITTI / NYU Depth v2 evaluation protocol.
- :mod:`~scalear.domains.depth.models`, :mod:`~scalear.domains.depth.predict`, :mod:`~scalear.domains.depth.cli`:
  ``scalear depth fit | eval | predict``; :mod:`~scalear.datasets.depth.data`: NYU / KITTI data modules.
- :mod:`~scalear.domains.depth.quickstart`: the depth part of ``scalear quickstart``.
"""
