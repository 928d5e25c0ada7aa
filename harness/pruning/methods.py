"""The built-in pruning methods: ACC and two trivial baselines (the contract: ``harness.contracts.method``).

Every method scores the word-vectors that enter a layer; by default the layer keeps the highest-scoring
k_l of them (see ``select.keep_top``).  Methods are registered by name, in ``METHODS`` or through the
``harness.methods`` entry-point group, so that baselines (PoWER-BERT, LTP, LAT, ToMe, ...) slot in
beside ACC without touching the model adapters.

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

import torch

from harness.contracts.method import Method, ScoreInputs
from harness.registry import Registry, instance

__all__ = ["METHODS", "Method", "ScoreInputs", "acc_scores", "random_scores", "truncation_scores"]

METHODS: Registry[Method] = Registry("method", group="harness.methods",
                                     accepts=lambda obj: isinstance(instance(obj), Method), adapt=instance)


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
    # drawn on the generator's device (the CPU), then moved: a CPU generator cannot draw on a GPU
    return torch.rand(inputs.valid.shape, generator=inputs.generator).to(inputs.valid.device)


def truncation_scores(inputs: ScoreInputs) -> torch.Tensor:
    return -inputs.positions.to(torch.float32)


class Acc(Method):
    name, needs = "acc", "attention"
    description = "Attention Context Contribution: keep the word-vectors the others attend to most"

    def score(self, inputs: ScoreInputs) -> torch.Tensor:
        return acc_scores(inputs)


class RandomTokens(Method):
    name = "random"
    description = "baseline: keep uniformly random word-vectors (seeded)"

    def score(self, inputs: ScoreInputs) -> torch.Tensor:
        return random_scores(inputs)


class Truncation(Method):
    name = "truncation"
    description = "baseline: keep the first word-vectors of the input"

    def score(self, inputs: ScoreInputs) -> torch.Tensor:
        return truncation_scores(inputs)


for _method in (Acc(), RandomTokens(), Truncation()):
    METHODS.register(_method.name, _method)
