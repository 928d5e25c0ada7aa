"""Self-attention that also scores the word-vectors entering a layer, for the layers that drop some.

Family-agnostic: adapters hand over the projected heads (B, H, n, d) and get back the context and
one score per token.  Methods that need the attention probabilities (ACC) get them computed
explicitly, in slices of the batch small enough to stay in cache: materialising a (B, H, n, n)
probability tensor at once costs more memory traffic than the products themselves at long sequence
lengths.  Slicing by sample changes no result, since every score is per sample.  Methods that do not
look at attention use the fused kernel.
"""

from __future__ import annotations

import torch
from torch import nn

from harness.pruning.methods import Method, ScoreInputs

SLICE_BYTES = 8 << 20
"""Probabilities materialised at once (per slice of the batch)."""


def attention_mask(valid: torch.Tensor, causal: bool) -> torch.Tensor | None:
    """(B, 1, n|1, n) bool, True where query i may attend key j; None when nothing is masked.

    Kept tokens keep their original order and padding slots sit after the real tokens, so causality
    among kept tokens is the lower triangle of their packed order.
    """
    if causal:
        order = torch.arange(valid.shape[1], device=valid.device)
        return valid[:, None, None, :] & (order[None, :] <= order[:, None])
    return None if bool(valid.all()) else valid[:, None, None, :]


def attend_and_score(query, key, value, valid, positions, method: Method, *, scaling: float,
                     dropout: float = 0.0, generator: torch.Generator | None = None, causal: bool = False):
    """``(context (B, H, n, d), scores (B, n))`` of one attention layer over the valid keys."""
    key_mask = attention_mask(valid, causal)
    if not method.needs_attention:
        context = nn.functional.scaled_dot_product_attention(
            query, key, value, attn_mask=key_mask, dropout_p=dropout, scale=scaling)
        return context, method.score(ScoreInputs(valid, positions, None, generator, causal))
    batch, heads, n, _ = query.shape
    step = max(1, SLICE_BYTES // (heads * n * n * query.element_size()))
    contexts, scores = [], []
    for start in range(0, batch, step):
        part = slice(start, start + step)
        logits = torch.matmul(query[part], key[part].transpose(-1, -2)) * scaling
        if key_mask is not None:
            logits = logits.masked_fill(~key_mask[part], torch.finfo(logits.dtype).min)
        probs = logits.softmax(dim=-1)
        contexts.append(torch.matmul(nn.functional.dropout(probs, dropout, dropout > 0), value[part]))
        scores.append(method.score(ScoreInputs(valid[part], positions[part], probs, generator, causal)))
    return torch.cat(contexts), torch.cat(scores)
