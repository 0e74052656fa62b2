"""G3PT (Zhang, Xiong, Xu, arXiv 2409.06322): 3D generation by next-scale prediction over unordered point tokens.

- :mod:`~scalear.domains.g3pt.tokenizer`: the Cross-scale Vector Quantization tokenizer (point cloud -> learnable
  latent queries -> residual multi-level lookup-free quantization with learnable down-/up-sampling queries ->
  occupancy decoder; meshes through :mod:`scalear.gen3d.fields`).
- :mod:`~scalear.domains.g3pt.generator`: the Cross-scale Querying Transformer, the core next-scale transformer over
  the tokenizer's levels, class- or image-conditioned, with classifier-free guidance.
"""

from scalear._lazy import lazy_exports

# imported on first use: ``scalear g3pt --help`` needs neither torch nor the models
__getattr__, __dir__ = lazy_exports(__name__, {
    "scalear.domains.g3pt.generator": [
        "G3PT_GENERATOR_PRESETS", "G3PTGenerator", "G3PTGeneratorConfig", "ImageEncoder", "create_generator",
        "generator_config"],
    "scalear.domains.g3pt.tokenizer": [
        "G3PT_TOKENIZER_PRESETS", "CrossScaleOutput", "CrossScaleQuantizer", "G3PTTokenizer", "G3PTTokenizerConfig",
        "create_tokenizer", "fourier_features", "tokenizer_config"],
})

__all__ = ["G3PT_GENERATOR_PRESETS", "G3PTGenerator", "G3PTGeneratorConfig", "ImageEncoder", "create_generator",
           "generator_config", "G3PT_TOKENIZER_PRESETS", "CrossScaleOutput", "CrossScaleQuantizer", "G3PTTokenizer",
           "G3PTTokenizerConfig", "create_tokenizer", "fourier_features", "tokenizer_config"]
