"""``acc`` — Attention Context Contribution (after Kachuee & Sharifkhani, arXiv 2201.03327), the reference.

As this project defines it: with attention probabilities P[h, i, j] of layer l (query i, key j, each
row summing to 1 over the valid keys),

    ACC(j) = mean over heads h and over valid (non-padding) queries i of P[h, i, j],

the share of the layer's context that word-vector j supplies.  Padding never scores (the caller masks
it) and padded query rows, whose softmax is meaningless, are left out of the mean.  The layer keeps
the k_l highest, k_l from the shared elimination profile at the requested speedup; trained with the
offline-tuning fine-tune (speedups drawn per batch).

Causal attention (decoders): word-vector j can only be attended by queries i ≥ j, so the mean runs over
the valid queries that can see j, not over all of them.  Without that normalisation the sum over
queries favours the first tokens simply because more queries see them.
"""

from __future__ import annotations

import torch

from harness.contracts.method import Method, ScoreInputs


def acc_scores(inputs: ScoreInputs) -> torch.Tensor:
    """ACC(j) = mean_h mean_{valid i that can see j} P[h, i, j], per sample."""
    received = inputs.attention_received()
    return received / inputs.seen_by(received.dtype)


class Acc(Method):
    name, needs = "acc", "attention"
    description = "Attention Context Contribution: keep the word-vectors the others attend to most"

    def score(self, inputs: ScoreInputs) -> torch.Tensor:
        return acc_scores(inputs)


METHOD = Acc()
