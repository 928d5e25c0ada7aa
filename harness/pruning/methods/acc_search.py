"""``acc-search`` — ACC's score with per-layer lengths searched on held-out rows.

The score and the fine-tuned model are ``acc``'s (``fine_tune_as``: the very weights, not a retrain);
only how many word-vectors each layer keeps differs: instead of the shared one-knob profile, a length
configuration per requested speedup, chosen by the Length-Adaptive Transformer's evolutionary search
on held-out rows (``harness.pruning.length_search``; ``--search`` generations, 0: the shared profile,
which makes it ``acc``).  It answers one question of the ACC-recipe study: is ACC's loss at 3x and 4x
the score's limit, or the profile's?
"""

from __future__ import annotations

import torch

from harness.contracts.method import ScoreInputs
from harness.pruning.length_search import SearchedLengths
from harness.pruning.methods.acc import acc_scores


class AccSearch(SearchedLengths):
    name, needs, latency_model, fine_tune_as = "acc-search", "attention", False, "acc"
    description = "ACC's score and fine-tune, with per-layer lengths searched on held-out rows (as LAT's)"

    def score(self, inputs: ScoreInputs) -> torch.Tensor:
        return acc_scores(inputs)


METHOD = AccSearch()
