"""Keeping the top-k word-vectors of each sample, in their original order.

Samples in a batch keep different numbers of tokens (their lengths differ), so the kept set is packed
into a (B, K) layout with K = the largest count in the batch; the slots beyond a sample's own count
are padding, masked out of every later layer.  Selection reads nothing across samples, so a sample's
kept set does not depend on what else is in its batch.

Why in ``harness.contracts``: it is the method contract's default reduction (``Method.reduce``) and the
families' gather, so the contracts need it.
"""

from __future__ import annotations

import torch


def keep_top(scores: torch.Tensor, valid: torch.Tensor, protected: torch.Tensor, counts: torch.Tensor):
    """Indices (into the entering tokens) of the tokens each sample keeps, sorted by position.

    scores, valid, protected: (B, n); counts: (B,) long, each ≤ that sample's valid tokens.
    Protected tokens outrank every score, padding ranks below every score.
    Returns ``(index, kept_valid)``: (B, K) long indices (padding slots point at 0) and the (B, K)
    validity of each slot.
    """
    ranked = scores.masked_fill(protected, float("inf")).masked_fill(~valid, float("-inf"))
    width = int(counts.max())
    top = ranked.topk(width, dim=1, sorted=True).indices
    kept_valid = torch.arange(width, device=scores.device).unsqueeze(0) < counts.unsqueeze(1)
    sentinel = scores.shape[1]
    index = top.masked_fill(~kept_valid, sentinel).sort(dim=1).values
    return index.masked_fill(~kept_valid, 0), kept_valid


def gather_tokens(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x[b, index[b, k]] for a (B, n, ...) tensor."""
    if x.dim() == 2:
        return x.gather(1, index)
    return x.gather(1, index.unsqueeze(-1).expand(-1, -1, *x.shape[2:]))


def pack_kept(context, hidden, scores, valid, positions, protected, keep, weight=None):
    """After a layer's attention: the kept tokens of each sample, packed.

    context (B, H, n, d) and hidden (B, n, D) of the entering tokens → the kept tokens' context as
    (B, K, H·d), their residual stream (B, K, D), and ``(valid, positions, protected)`` of the packed
    layout (and ``weight``, the tokens' sizes or soft masses where a method tracks them: None stays
    None).  Every family's drop layer ends this way before its output projection and FFN.
    """
    index, kept_valid = keep_top(scores, valid, protected, keep)
    batch, _, n, _ = context.shape
    context = gather_tokens(context.transpose(1, 2).reshape(batch, n, -1), index)
    state = (
        kept_valid,
        gather_tokens(positions, index),
        gather_tokens(protected, index) & kept_valid,
        None if weight is None else gather_tokens(weight, index).masked_fill(~kept_valid, 1.0),
    )
    return context, gather_tokens(hidden, index), state
