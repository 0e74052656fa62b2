"""Scale-by-scale sampling with a KV cache (VAR, Tian et al. 2024, Sec. 3.3; models/var.py
``autoregressive_infer_cfg`` and models/helpers.py ``sample_with_top_k_top_p_``).

At scale ``k`` the transformer sees only that scale's tokens; keys and values of all earlier scales come from
the cache, which reproduces the block-causal mask of training exactly. Classifier-free guidance follows VAR:
the batch is doubled into conditional and null-conditioned halves and the guidance weight rises linearly over
the scales, ``t_k = cfg * k / (K - 1)``, ``logits = (1 + t_k) * cond - t_k * uncond``. Tokens are drawn after
temperature scaling, top-k then top-p filtering, with an optional seeded :class:`torch.Generator`.

``use_cache=False`` instead reruns the transformer over all tokens of scales ``0..k`` (and the prefix condition
tokens) under the block-causal mask at every scale: the same samples for more compute, the baseline the cache
is measured against (``benchmarks/bench_sampling.py``). ``cuda_graphs=True`` replays each scale's cached step as
a CUDA graph (:mod:`scalear.cuda_graphs`), captured at the first run with a batch size and condition shapes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from scalear.cuda_graphs import graphed_steps
from scalear.quant import MultiScaleQuantizer, tokens_to_map
from scalear.transformer import NextScaleTransformer


def top_k_top_p_filter(logits_BlV: torch.Tensor, top_k: int = 0, top_p: float = 0.0,
                       inplace: bool = False) -> torch.Tensor:
    """Mask (to -inf) logits outside the top-k, then outside the smallest set with probability >= ``top_p``.

    ``top_k <= 0`` and ``top_p <= 0`` disable the respective filter. The most likely token always survives.
    ``inplace`` filters ``logits_BlV`` itself instead of a copy.

    >>> l = torch.tensor([[[0.0, 1.0, 2.0, 3.0]]])
    >>> top_k_top_p_filter(l, top_k=2).isinf().tolist()
    [[[True, True, False, False]]]
    """
    logits = logits_BlV if inplace else logits_BlV.clone()
    V = logits.shape[-1]
    if 0 < top_k < V and 0 < top_p < 1 and _top_k_then_top_p_(logits, top_k, top_p):
        return logits
    if 0 < top_k < V:
        kth = logits.topk(top_k, dim=-1, sorted=False).values.amin(dim=-1, keepdim=True)  # no sort needed
        logits.masked_fill_(logits < kth, float("-inf"))
    if 0 < top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=False)
        cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        remove_sorted = cum <= (1 - top_p)
        remove_sorted[..., -1] = False
        remove = remove_sorted.scatter(-1, order, remove_sorted)
        logits.masked_fill_(remove, float("-inf"))
    return logits


def _top_k_then_top_p_(logits: torch.Tensor, top_k: int, top_p: float) -> bool:
    """Both filters of :func:`top_k_top_p_filter` in place without sorting the whole vocabulary; False (and
    ``logits`` untouched) when the k-th largest logit is tied with the next one, where the plain path keeps all of
    the tied ones.

    After the top-k filter the plain path's ascending sort of a row is ``V - k`` times ``-inf`` followed by the k
    survivors in ascending order: that row is built here from one sorted top-(k+1), so its softmax and cumulative
    sum, hence the top-p decisions, are the plain path's to the bit.
    """
    V = logits.shape[-1]
    vals, order = logits.topk(top_k + 1, dim=-1, sorted=True)  # descending
    if bool((vals[..., top_k - 1] == vals[..., top_k]).any()):
        return False
    vals, order = vals[..., :top_k], order[..., :top_k]
    row = vals.new_full(logits.shape, float("-inf"))
    row[..., V - top_k :] = vals.flip(-1)
    remove = row.softmax(dim=-1).cumsum_(dim=-1)[..., V - top_k :] <= (1 - top_p)
    remove[..., -1] = False  # the most likely token always survives
    logits.fill_(float("-inf")).scatter_(-1, order, vals.masked_fill_(remove.flip(-1), float("-inf")))
    return True


def sample_tokens(
    logits_BlV: torch.Tensor,
    top_k: int = 0,
    top_p: float = 0.0,
    temperature: float = 1.0,
    num_samples: int = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw ``num_samples`` tokens per position: (B, l, num_samples). ``temperature == 0`` is greedy."""
    if temperature == 0:
        return logits_BlV.argmax(dim=-1, keepdim=True).expand(*logits_BlV.shape[:-1], num_samples)
    B, l, V = logits_BlV.shape
    scaled = logits_BlV / temperature  # a new tensor: filtered in place
    probs = top_k_top_p_filter(scaled, top_k, top_p, inplace=True).softmax(dim=-1)
    idx = torch.multinomial(probs.view(-1, V), num_samples, replacement=True, generator=generator)
    return idx.view(B, l, num_samples)


def guidance_weight(guidance: float, k: int, num_scales: int) -> float:
    """VAR's linearly rising classifier-free guidance weight ``t_k = guidance * k / (K - 1)`` (0 at the first
    scale; VAR calls ``guidance`` "cfg")."""
    return guidance * k / max(num_scales - 1, 1)


@dataclass
class SampleOutput:
    indices: list[torch.Tensor]  #: per scale, (B, n_k) sampled token indices
    f_hat: torch.Tensor  #: final reconstruction in latent space, (B, C, *latent_shape)
    logits: list[torch.Tensor] | None = None  #: per scale, (B, n_k, V) guided logits (if requested)


@torch.no_grad()
def sample(
    model: NextScaleTransformer,
    quantizer: MultiScaleQuantizer,
    batch_size: int,
    *,
    label_B: torch.Tensor | None = None,
    cond_BD: torch.Tensor | None = None,
    context_BTD: torch.Tensor | None = None,
    prefix_BPD: torch.Tensor | None = None,
    guidance: float = 0.0,
    top_k: int = 0,
    top_p: float = 0.0,
    temperature: float = 1.0,
    embed_samples: int = 1,
    generator: torch.Generator | None = None,
    forced_indices: list[torch.Tensor] | None = None,
    return_logits: bool = False,
    use_cache: bool = True,
    cuda_graphs: bool = False,
) -> SampleOutput:
    """Generate all scales coarse to fine, with a KV cache unless ``use_cache=False``.

    Args:
        model, quantizer: the transformer and the tokenizer's quantizer (same schedule and vocabulary).
        batch_size: number of samples B.
        label_B, cond_BD, context_BTD, prefix_BPD: conditions, as in :meth:`NextScaleTransformer.forward`.
        guidance: classifier-free guidance strength (0 disables it; VAR's FID recipe uses 1.5).
        top_k, top_p, temperature: sampling filters (VAR: top_k 900, top_p 0.96).
        embed_samples: draw this many tokens per position and feed back the mean of their codebook vectors
            (DepthART's averaged embeddings; 1 = plain sampling).
        generator: seeded generator for reproducible samples.
        forced_indices: use these tokens instead of sampling (teacher forcing through the cached path, e.g.
            to score given tokens or to check the cache against :meth:`NextScaleTransformer.forward`): per
            scale (B, n_k), or (B, n_k, s) to feed back the mean of s codes per token.
        return_logits: also return the (guided) logits of every scale.
        use_cache: False recomputes all coarser scales at every scale (:meth:`NextScaleTransformer.forward_upto`)
            instead of reading them from the KV cache; the samples are the same up to float rounding.
        cuda_graphs: replay each scale's transformer step as a CUDA graph (a CUDA model in eval mode, with the KV
            cache): the first run with a batch size, dtype and condition shapes captures them, later ones replay
            them with one launch per scale. The same tokens as without; the model keeps the graphs' memory (its
            KV cache) until :func:`scalear.cuda_graphs.release`.
    """
    sched = model.cfg.schedule
    if sched != quantizer.schedule:
        raise ValueError(f"transformer schedule {sched} differs from the quantizer's {quantizer.schedule}")
    device = next(model.parameters()).device
    if cuda_graphs and not use_cache:
        raise ValueError("cuda_graphs replays the KV-cached steps: it needs use_cache=True")
    guided = guidance > 0 and model.has_guidance()
    B2 = 2 * batch_size if guided else batch_size

    def doubled(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None or not guided else torch.cat((t, t))

    drop_B = None
    if guided:
        drop_B = torch.arange(B2, device=device) >= batch_size
        label_B, cond_BD, context_BTD, prefix_BPD = map(doubled, (label_B, cond_BD, context_BTD, prefix_BPD))
    model._check_context(context_BTD, prefix_BPD)
    cond = model.condition(B2, label_B, cond_BD, drop_B)
    context = model._null_context(context_BTD, drop_B)

    f_hat = quantizer.empty_fhat(batch_size, device)
    indices, all_logits = [], []
    x_scales: list[torch.Tensor] = []  # uncached: embedded inputs (B2, n_j, C) of scales 0..k
    model.kv_caching(use_cache and not cuda_graphs)
    try:
        x = model.embed_scale(0, cond)
        graphs = graphed_steps(model, x, cond, context, prefix_BPD) if cuda_graphs else None
        for k in range(sched.num_scales):
            if graphs is not None:  # a buffer the next run overwrites: copied if returned unchanged
                logits = graphs.step(k, x)
                logits = logits.clone() if return_logits and not guided else logits
            elif use_cache and k == 0:
                logits = model.forward_first_scale(x, cond, context, prefix_BPD)
            elif use_cache:
                logits = model.forward_scale(x, cond, context)
            else:
                x_scales.append(x)
                logits = model.forward_upto(torch.cat(x_scales, dim=1), cond, context, prefix_BPD)
            if guided:
                t = guidance_weight(guidance, k, sched.num_scales)
                logits = (1 + t) * logits[:batch_size] - t * logits[batch_size:]
            if forced_indices is not None:
                idx_Bns = forced_indices[k].to(device)
                idx_Bns = idx_Bns.unsqueeze(-1) if idx_Bns.ndim == 2 else idx_Bns
            else:
                idx_Bns = sample_tokens(logits, top_k, top_p, temperature, embed_samples, generator)
            emb_BnC = quantizer.embedding(idx_Bns).mean(dim=2)
            h = tokens_to_map(emb_BnC, sched.token_shape(k))
            f_hat, next_tokens = quantizer.next_input(k, f_hat, h)
            indices.append(idx_Bns[..., 0])
            if return_logits:
                all_logits.append(logits)
            if next_tokens is not None:
                x = model.embed_scale(k + 1, cond, doubled(next_tokens) if guided else next_tokens)
    finally:
        model.kv_caching(False)
    return SampleOutput(indices, f_hat, all_logits if return_logits else None)

