"""scalear: next-scale prediction (coarse-to-fine autoregression) for 3D and perception.

The core is domain-agnostic: scale schedules (:mod:`scalear.schedules`), the multi-scale residual quantizer
(:mod:`scalear.quant`), tokenizer autoencoders (:mod:`scalear.vqvae`), the next-scale transformer
(:mod:`scalear.transformer`) and its sampler (:mod:`scalear.sampling`), Lightning training modules
(:mod:`scalear.training`), checkpoint I/O (:mod:`scalear.io`) and the ``scalear`` CLI (:mod:`scalear.cli`).
Every model of the core and of the installed domains: ``scalear.list_models()``, ``scalear.create_model(name)``.
"""

__version__ = "0.1.0"

from scalear._lazy import lazy_exports  # noqa: E402

# imported on first use, so that ``import scalear`` (and the ``scalear`` command's help) does not pay for torch
__getattr__, __dir__ = lazy_exports(__name__, {
    "scalear.io": ["from_pretrained", "save_pretrained"],
    "scalear.quant": ["MultiScaleVQ"],
    "scalear.registry": ["create_model", "list_models"],
    "scalear.sampling": ["sample"],
    "scalear.schedules": ["ScaleSchedule"],
    "scalear.transformer": ["NextScaleTransformer", "TransformerConfig", "create_transformer"],
    "scalear.vqvae": ["VQVAE", "VQVAEConfig", "create_vqvae"],
})

__all__ = [
    "MultiScaleVQ", "NextScaleTransformer", "ScaleSchedule", "TransformerConfig", "VQVAE", "VQVAEConfig",
    "create_model", "create_transformer", "create_vqvae", "from_pretrained", "list_models", "sample", "save_pretrained",
    "__version__",
]
