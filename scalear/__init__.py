"""scalear: next-scale prediction (coarse-to-fine autoregression) for 3D and perception.

The core is domain-agnostic: scale schedules (:mod:`scalear.schedules`), the multi-scale residual quantizer
(:mod:`scalear.quant`), tokenizer autoencoders (:mod:`scalear.vqvae`), the next-scale transformer
(:mod:`scalear.transformer`) and its sampler (:mod:`scalear.sampling`), Lightning training modules
(:mod:`scalear.training`), checkpoint I/O (:mod:`scalear.io`) and the ``scalear`` CLI (:mod:`scalear.cli`).
Every model of the core and of the installed domains: ``scalear.list_models()``, ``scalear.create_model(name)``.
"""

__version__ = "0.1.0"

from scalear.io import from_pretrained, save_pretrained  # noqa: E402
from scalear.quant import MultiScaleVQ  # noqa: E402
from scalear.registry import create_model, list_models  # noqa: E402
from scalear.sampling import sample  # noqa: E402
from scalear.schedules import ScaleSchedule  # noqa: E402
from scalear.transformer import NextScaleTransformer, TransformerConfig, create_transformer  # noqa: E402
from scalear.vqvae import VQVAE, VQVAEConfig, create_vqvae  # noqa: E402

__all__ = [
    "MultiScaleVQ", "NextScaleTransformer", "ScaleSchedule", "TransformerConfig", "VQVAE", "VQVAEConfig",
    "create_model", "create_transformer", "create_vqvae", "from_pretrained", "list_models", "sample", "save_pretrained",
    "__version__",
]
