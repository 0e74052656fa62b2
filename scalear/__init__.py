"""scalear: next-scale prediction (coarse-to-fine autoregression) for 3D and perception.

The core is domain-agnostic: scale schedules (:mod:`scalear.schedules`), the multi-scale residual quantizer
(:mod:`scalear.quant`), tokenizer autoencoders (:mod:`scalear.vqvae`), the next-scale transformer
(:mod:`scalear.transformer`) and its sampler (:mod:`scalear.sampling`), Lightning training modules
(:mod:`scalear.training`), checkpoint I/O (:mod:`scalear.io`) and the ``scalear`` CLI (:mod:`scalear.cli`).
"""

from scalear.quant import MultiScaleVQ
from scalear.schedules import ScaleSchedule

__version__ = "0.1.0"
__all__ = ["MultiScaleVQ", "ScaleSchedule", "__version__"]
