"""``acc-distill`` — ACC trained with the sandwich rule and distillation, lengths searched as ``acc-search``.

One of the ACC-recipe study's candidates (after the sandwich rule of slimmable networks and its use in
the Length-Adaptive Transformer): every training step runs the full model (speedup 1) on the labels and
the pruned model at the speedup the offline-tuning loop drew, and the pruned pass learns from the full
pass's output distribution (soft cross-entropy; squared error for regression) instead of the labels.
The two losses are summed, so a step costs about two forwards and backwards.  The score is ACC's; at
inference, per-layer lengths are searched on held-out rows as for ``acc-search``, so that
``acc`` → ``acc-search`` → ``acc-distill`` changes one thing at a time: the lengths, then the training.
"""

from __future__ import annotations

import torch

from harness.contracts.method import ScoreInputs
from harness.pruning.length_search import SearchedLengths
from harness.pruning.methods.acc import acc_scores
from harness.pruning.methods.recipes import drawn_sandwich


class AccDistill(SearchedLengths):
    name, needs, recipe, latency_model = "acc-distill", "attention", "acc-sandwich", False
    description = "ACC trained with the sandwich rule (full pass teaches the pruned pass), searched lengths"

    def score(self, inputs: ScoreInputs) -> torch.Tensor:
        return acc_scores(inputs)

    def train_step(self, model, batch, labels, rng=None):
        return drawn_sandwich(model, batch, labels)


METHOD = AccDistill()
