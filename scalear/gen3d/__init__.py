"""The shared 3D layer: what SAR3D (:mod:`scalear.domains.sar3d`) and G3PT (:mod:`scalear.domains.g3pt`) build on
top of the VAR core, and nothing else in ``scalear`` imports.

* :mod:`~scalear.gen3d.conditioning`: class- or image-conditional next-scale generators over a frozen tokenizer.
* :mod:`~scalear.gen3d.training`: the Lightning module training them (VAR's teacher-forced recipe + condition dropout).
* :mod:`~scalear.gen3d.fields`: fields to meshes (dense evaluation, marching cubes, atomic export).
* :mod:`~scalear.gen3d.metrics`: Chamfer, F-score, normal consistency, volume IoU, EMD, COV / MMD / 1-NNA.
* :mod:`~scalear.gen3d.cli` and :mod:`~scalear.gen3d.quickstart`: the ``generate`` / ``eval`` options and the
  two-stage quickstart both domains share.
"""

#: the mesh files the 3D commands write (here, not in :mod:`~scalear.gen3d.fields`, so that the commands' help imports
#: no torch)
MESH_FORMATS = ("obj", "ply", "glb", "stl")
