"""``truncation`` — keep the first k_l word-vectors of the input (score = −position).

The cheapest rule there is, and a strong one where the label lives early in the text.  Counts from the
shared profile; fine-tuned with the offline-tuning recipe under its own selection.
"""

from __future__ import annotations

import torch

from harness.contracts.method import Method, ScoreInputs


def truncation_scores(inputs: ScoreInputs) -> torch.Tensor:
    return -inputs.positions.to(torch.float32)


class Truncation(Method):
    name = "truncation"
    description = "baseline: keep the first word-vectors of the input"

    def score(self, inputs: ScoreInputs) -> torch.Tensor:
        return truncation_scores(inputs)
