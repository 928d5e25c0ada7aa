"""``random`` — the floor: keep uniformly random word-vectors (seeded by ``PruningSettings.seed``).

Counts from the shared profile; fine-tuned with the offline-tuning recipe under its own (random)
selection, so the model it is measured on learned to live with random drops, not ACC's.
"""

from __future__ import annotations

import torch

from harness.contracts.method import Method, ScoreInputs


def random_scores(inputs: ScoreInputs) -> torch.Tensor:
    # drawn on the generator's device (the CPU), then moved: a CPU generator cannot draw on a GPU
    return torch.rand(inputs.valid.shape, generator=inputs.generator).to(inputs.valid.device)


class RandomTokens(Method):
    name = "random"
    description = "baseline: keep uniformly random word-vectors (seeded)"

    def score(self, inputs: ScoreInputs) -> torch.Tensor:
        return random_scores(inputs)


METHOD = RandomTokens()
