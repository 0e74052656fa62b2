"""G3PT (Zhang, Xiong, Xu, arXiv 2409.06322): 3D generation by next-scale prediction over unordered point tokens.

- :mod:`~scalear.domains.g3pt.tokenizer`: the Cross-scale Vector Quantization tokenizer (point cloud -> learnable
  latent queries -> residual multi-level lookup-free quantization with learnable down-/up-sampling queries ->
  occupancy decoder).
"""

from scalear.domains.g3pt.tokenizer import (G3PT_TOKENIZER_PRESETS, CrossScaleOutput, CrossScaleQuantizer, G3PTTokenizer,
                                            G3PTTokenizerConfig, create_tokenizer, fourier_features, tokenizer_config)

__all__ = ["G3PT_TOKENIZER_PRESETS", "CrossScaleOutput", "CrossScaleQuantizer", "G3PTTokenizer", "G3PTTokenizerConfig",
           "create_tokenizer", "fourier_features", "tokenizer_config"]
