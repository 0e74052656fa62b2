"""CUDA graphs of the KV-cached sampling steps (``sample(..., cuda_graphs=True)``).

Next-scale sampling runs one transformer step per scale (VAR, Tian et al. 2024, Sec. 3.3): ten steps at 256 px,
each a few hundred small kernels (per block: AdaLN modulation, qkv, attention over the cache, FFN). At small batch
sizes a GPU finishes those kernels faster than Python can launch them. A CUDA graph records the kernels of one step
once and replays them with a single launch, so the step costs its GPU time only.

:class:`ScaleStepGraphs` captures every step of one sampling run, one graph per scale, for a model, batch size,
dtype and set of condition shapes; :func:`graphed_steps` keeps the last capture of each model and captures again
when any of those changes (or the model's parameters move). Graphs read their inputs from fixed buffers and write
the KV cache in place: the static cache of :class:`~scalear.transformer.SelfAttention` has one address per
position for the whole run, and step ``k`` always writes the positions of scale ``k``. The graphs hold the cache,
the AdaLN modulation kept over a run and their outputs, so a captured model keeps that memory (the eager sampler
frees it at the end of each run) until :func:`release` or the model is deleted.

Only the transformer steps are graphed: token sampling (top-k / top-p, the seeded generator) and the quantizer's
update of the running reconstruction stay eager, so the same generator draws the same tokens as without graphs.
"""

from __future__ import annotations

import weakref

import torch

from scalear.transformer import NextScaleTransformer

#: The last capture per model (weak keys: deleting the model frees its graphs).
_CAPTURED: "weakref.WeakKeyDictionary[NextScaleTransformer, ScaleStepGraphs]" = weakref.WeakKeyDictionary()


def _spec(t: torch.Tensor | None) -> tuple | None:
    return None if t is None else (tuple(t.shape), t.dtype, t.device)


def _signature(model: NextScaleTransformer, x0: torch.Tensor, cond: torch.Tensor, context: torch.Tensor | None,
               prefix: torch.Tensor | None) -> tuple:
    """What a capture depends on: shapes, dtypes and devices of the inputs, the autocast state, and where the
    parameters and buffers live (a graph reads them by address)."""
    autocast = torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else None
    return (_spec(x0), _spec(cond), _spec(context), _spec(prefix), autocast,
            tuple(t.data_ptr() for t in (*model.parameters(), *model.buffers())))


class ScaleStepGraphs:
    """One CUDA graph per scale of a KV-cached sampling run (:meth:`NextScaleTransformer.forward_first_scale`,
    then :meth:`~NextScaleTransformer.forward_scale`), with the static input and output buffers they use.

    Args:
        model: a CUDA transformer in eval mode (:func:`graphed_steps` checks both).
        x0, cond, context, prefix: the first step's embedded tokens and the run's conditions, as
            :func:`scalear.sampling.sample` passes them; their shapes and dtypes are captured (the values are not).
    """

    def __init__(self, model: NextScaleTransformer, x0: torch.Tensor, cond: torch.Tensor,
                 context: torch.Tensor | None = None, prefix: torch.Tensor | None = None):
        self.signature = _signature(model, x0, cond, context, prefix)
        B2, C = x0.shape[0], x0.shape[2]
        with torch.inference_mode():
            self.cond = cond.clone()
            self.context = None if context is None else context.clone()
            self.prefix = None if prefix is None else prefix.clone()
            self.x = [x0.new_zeros(B2, n, C) for n in model.cfg.schedule.tokens_per_scale]
            self._warm_up(model)
            self.graphs, self.logits = self._capture(model)

    def _step(self, model: NextScaleTransformer, k: int) -> torch.Tensor:
        if k == 0:
            return model.forward_first_scale(self.x[0], self.cond, self.context, self.prefix)
        return model.forward_scale(self.x[k], self.cond, self.context)

    def _warm_up(self, model: NextScaleTransformer) -> None:
        """One eager run on a side stream: lazy initialisation (cuBLAS handles, kernel selection) must not happen
        inside a capture (PyTorch's recipe for ``torch.cuda.graph``)."""
        stream = torch.cuda.Stream(self.cond.device)
        stream.wait_stream(torch.cuda.current_stream(self.cond.device))
        with torch.cuda.stream(stream):
            model.kv_caching(True)
            try:
                for k in range(len(self.x)):
                    self._step(model, k)
            finally:
                model.kv_caching(False)
        torch.cuda.current_stream(self.cond.device).wait_stream(stream)

    def _capture(self, model: NextScaleTransformer) -> tuple[list[torch.cuda.CUDAGraph], list[torch.Tensor]]:
        """Capture the steps in order into one memory pool, as they will be replayed. Autocast's weight-cast cache
        is off inside (a cached cast made in one capture would be freed while later graphs read it)."""
        autocast = torch.autocast("cuda", dtype=torch.get_autocast_dtype("cuda"),
                                  enabled=torch.is_autocast_enabled("cuda"), cache_enabled=False)
        pool, graphs, logits = torch.cuda.graph_pool_handle(), [], []
        model.kv_caching(True)
        try:
            with autocast:
                for k in range(len(self.x)):
                    graph = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(graph, pool=pool):
                        logits.append(self._step(model, k))
                    graphs.append(graph)
            # the graphs write the cache buffers and read the kept modulation: hold them past kv_caching(False)
            self._held = [(b.attn._k_buf, b.attn._v_buf, b._ada_memo) for b in model.blocks] + [model._ada_memo]
        finally:
            model.kv_caching(False)
        return graphs, logits

    def matches(self, model: NextScaleTransformer, x0: torch.Tensor, cond: torch.Tensor,
                context: torch.Tensor | None, prefix: torch.Tensor | None) -> bool:
        return self.signature == _signature(model, x0, cond, context, prefix)

    def start(self, cond: torch.Tensor, context: torch.Tensor | None, prefix: torch.Tensor | None) -> None:
        """Load a run's conditions into the graphs' input buffers."""
        with torch.inference_mode():
            self.cond.copy_(cond)
            for static, value in ((self.context, context), (self.prefix, prefix)):
                if static is not None:
                    static.copy_(value)

    def step(self, k: int, x: torch.Tensor) -> torch.Tensor:
        """Replay scale ``k``'s step on its embedded tokens ``x``; returns its logits (B2, n_k, V), a buffer that the
        next replay of the same step overwrites. Steps must run in order from 0 after :meth:`start`."""
        with torch.inference_mode():
            self.x[k].copy_(x)
            self.graphs[k].replay()
        return self.logits[k]


def graphed_steps(model: NextScaleTransformer, x0: torch.Tensor, cond: torch.Tensor,
                  context: torch.Tensor | None = None, prefix: torch.Tensor | None = None) -> ScaleStepGraphs:
    """The model's captured steps for these inputs, loaded with their conditions: the last capture if it matches,
    else a new one (the old one is freed first)."""
    if x0.device.type != "cuda":
        raise ValueError(f"CUDA graphs need a model on a CUDA device; this one is on {x0.device}")
    if model.training:  # dropout and drop-path draw at every step; the graphs are captured in eval mode
        raise ValueError("CUDA graphs replay inference steps: call model.eval() first")
    graphs = _CAPTURED.get(model)
    if graphs is None or not graphs.matches(model, x0, cond, context, prefix):
        release(model)
        graphs = _CAPTURED[model] = ScaleStepGraphs(model, x0, cond, context, prefix)
    graphs.start(cond, context, prefix)
    return graphs


def release(model: NextScaleTransformer) -> None:
    """Free the model's captured graphs and the KV cache they hold."""
    graphs = _CAPTURED.pop(model, None)
    if graphs is not None:
        del graphs
        torch.cuda.empty_cache()
