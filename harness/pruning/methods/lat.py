"""``lat`` — Length-Adaptive Transformer (after Kim & Cho, "Length-Adaptive Transformer: Train Once with
Length Drop, Use Anytime with Search", ACL 2021).

Score: the attention a token receives, summed over heads and queries, its own included:

    LAT(j) = sum over heads h and valid queries i of P[h, i, j]

(in an encoder it ranks tokens as ACC does: the two differ in training and in the lengths.)

Lengths: a *length configuration* is one share c_l per layer (``harness.pruning.length_search``).

Training (recipe ``lat-sandwich``): LengthDrop with the sandwich rule.  Every step runs the full model
(every c_l = 1) on the labels, then the smallest sub-model (each layer keeps 80% of the previous one)
and two random sub-models (each layer's share drawn from [0.8, 1] of the previous layer's, as LAT
draws lengths from [ceil(0.8·n_{l-1}), n_{l-1}]); the sub-models learn from the full model's output
distribution (distillation: soft cross-entropy, or squared error for regression), and the four losses
are summed.  The paper also applies LayerDrop while training; we do not.

Inference: a configuration per requested speedup, chosen by LAT's evolutionary search on held-out
rows (``harness.pruning.length_search``, which ``acc-search`` shares).  With ``--search 0`` the shared
profile gives the lengths, as for ACC.
"""

from __future__ import annotations

import random

import torch

from harness.contracts.method import ScoreInputs
from harness.pruning.length_search import Config, SearchedLengths
from harness.pruning.methods.recipes import sandwich_loss

LENGTH_DROP = 0.8
RANDOM_SUBMODELS = 2


def lat_scores(inputs: ScoreInputs) -> torch.Tensor:
    """sum_h sum_{valid i} P[h, i, j]."""
    return inputs.heads_received().sum(dim=1)


def length_drop(layers: int, rng: random.Random) -> Config:
    """A LengthDrop sub-model: each layer keeps a share in [0.8, 1] of the previous layer's."""
    shares, share = [], 1.0
    for _ in range(layers):
        share *= rng.uniform(LENGTH_DROP, 1.0)
        shares.append(share)
    return tuple(shares)


class Lat(SearchedLengths):
    name, needs, recipe, latency_model = "lat", "attention", "lat-sandwich", False
    description = (
        "Length-Adaptive Transformer: summed attention received, LengthDrop + sandwich, searched lengths"
    )

    def score(self, inputs: ScoreInputs) -> torch.Tensor:
        return lat_scores(inputs)

    def train_step(self, model, batch, labels, rng=None):
        """LengthDrop with the sandwich rule."""
        rng = rng or random.Random(0)
        layers = model.arch_spec.num_layers
        smallest = tuple(LENGTH_DROP ** (layer + 1) for layer in range(layers))
        configs = [smallest, *(length_drop(layers, rng) for _ in range(RANDOM_SUBMODELS))]
        return sandwich_loss(
            model,
            batch,
            labels,
            lambda: self._use((1.0,) * layers),
            [lambda config=config: self._use(config) for config in configs],
            lambda: self._use(None),
        )

    def _use(self, config: Config | None) -> None:
        self.override = config


METHOD = Lat()
