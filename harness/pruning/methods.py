"""Token-scoring methods: which word-vectors a layer keeps.

Every method scores the word-vectors that enter a layer; the layer keeps the highest-scoring k_l of
them (see ``select.keep_top``).  Methods are registered by name so that baselines (PoWER-BERT, LTP,
LAT, ...) slot in beside ACC without touching the model adapters.

``acc`` — Attention Context Contribution (after Kachuee & Sharifkhani, arXiv 2201.03327), as this
project defines it: with attention probabilities P[h, i, j] of layer l (query i, key j, each row
summing to 1 over the valid keys),

    ACC(j) = mean over heads h and over valid (non-padding) queries i of P[h, i, j],

the share of the layer's context that word-vector j supplies.  Padding never scores (the caller masks
it) and padded query rows, whose softmax is meaningless, are left out of the mean.

Causal attention (decoders): word-vector j can only be attended by queries i ≥ j, so the mean runs over
the valid queries that can see j, not over all of them.  Without that normalisation the sum over
queries favours the first tokens simply because more queries see them.

``random`` and ``truncation`` are the two trivial baselines: uniform random scores, and keeping the
first k tokens of the input (score = −position).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from harness.registry import Registry


@dataclass(frozen=True)
class ScoreInputs:
    """What a layer offers a scoring method; ``probs`` is None unless the method asks for it."""

    valid: torch.Tensor
    """(B, n) bool: real tokens among those entering the layer."""
    positions: torch.Tensor
    """(B, n) long: each entering token's position in the original input."""
    probs: torch.Tensor | None = None
    """(B, H, n, n) attention probabilities of this layer, when a caller has them whole."""
    generator: torch.Generator | None = None
    causal: bool = False
    """Attention is causal: query i sees keys j ≤ i (in the current order of the kept tokens)."""
    received: torch.Tensor | None = None
    """(B, n) attention each token receives: the mean over heads, summed over valid queries, of
    P[h, i, j].  Layers accumulate it block by block (``attention.attend_and_score``) instead of
    keeping ``probs``; it is the statistic attention-based pruning methods share."""

    def attention_received(self) -> torch.Tensor:
        if self.received is not None:
            return self.received
        return torch.einsum("bhij,bi->bj", self.probs, self.valid.to(self.probs.dtype)) / self.probs.shape[1]


@dataclass(frozen=True)
class Method:
    name: str
    score: Callable[[ScoreInputs], torch.Tensor]
    """(B, n) float scores; higher is kept first."""
    needs_attention: bool
    """True when the method reads the attention each token receives (no fused kernel)."""


METHODS: Registry[Method] = Registry("method")


def acc_scores(inputs: ScoreInputs) -> torch.Tensor:
    """ACC(j) = mean_h mean_{valid i that can see j} P[h, i, j], per sample."""
    received = inputs.attention_received()
    valid = inputs.valid.to(received.dtype)
    if inputs.causal:  # valid queries at or after j
        seen_by = valid.flip(1).cumsum(1).flip(1).clamp(min=1)
    else:
        seen_by = valid.sum(dim=1, keepdim=True)
    return received / seen_by


def random_scores(inputs: ScoreInputs) -> torch.Tensor:
    return torch.rand(inputs.valid.shape, generator=inputs.generator, device=inputs.valid.device)


def truncation_scores(inputs: ScoreInputs) -> torch.Tensor:
    return -inputs.positions.to(torch.float32)


METHODS.register("acc", Method("acc", acc_scores, needs_attention=True))
METHODS.register("random", Method("random", random_scores, needs_attention=False))
METHODS.register("truncation", Method("truncation", truncation_scores, needs_attention=False))
