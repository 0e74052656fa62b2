"""SAR3D (Chen et al., CVPR 2025): 3D objects generated coarse to fine over a multi-scale triplane VQ-VAE.

- :mod:`~scalear.domains.sar3d.tokenizer`: the multi-scale triplane VQ-VAE of SDF grids (one shared cosine codebook).
- :mod:`~scalear.domains.sar3d.mesh`: SDF grids, marching cubes, mesh export; analytic shapes.
- :mod:`~scalear.domains.sar3d.generator`: the next-scale transformer over the triplane schedule, class- or
  image-conditioned (cross-attention to a trainable CNN image encoder), with classifier-free guidance.
- :mod:`~scalear.domains.sar3d.training`: Lightning modules of both stages.
"""

from scalear._lazy import lazy_exports

# imported on first use: ``scalear sar3d --help`` needs neither torch nor the models
__getattr__, __dir__ = lazy_exports(__name__, {
    "scalear.domains.sar3d.generator": [
        "GENERATOR_PRESETS", "SAR3DGenerator", "SAR3DGeneratorConfig", "create_generator", "generator_config",
        "indices_to_meshes", "indices_to_sdf_grids"],
    "scalear.gen3d.conditioning": ["ImageEncoder"],
    "scalear.domains.sar3d.mesh": [
        "EmptyFieldError", "export_mesh", "extract_mesh", "load_mesh", "sdf_to_grid"],
    "scalear.domains.sar3d.tokenizer": [
        "TRIPLANE_PRESETS", "TriplaneVQVAE", "TriplaneVQVAEConfig", "create_tokenizer", "tokenizer_config"],
})

__all__ = ["GENERATOR_PRESETS", "ImageEncoder", "SAR3DGenerator", "SAR3DGeneratorConfig", "create_generator",
           "generator_config", "indices_to_meshes", "indices_to_sdf_grids", "EmptyFieldError", "export_mesh",
           "extract_mesh", "load_mesh", "sdf_to_grid", "TRIPLANE_PRESETS", "TriplaneVQVAE", "TriplaneVQVAEConfig",
           "create_tokenizer", "tokenizer_config"]
