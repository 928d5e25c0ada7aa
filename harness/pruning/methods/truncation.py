"""``truncation`` — keep the k_l word-vectors nearest to where the model reads its output.

Encoders (bidirectional attention) keep the first k_l tokens of the input (score = −position): the
cheapest rule there is, and a strong one where the label lives early in the text.  Decoders (causal
attention) keep the most *recent* k_l tokens (score = +position): the next token is predicted from the
end of the prompt, so a decoder truncates from the front, as a sliding context window does.  The
protected tokens stay either way (a decoder's first token, its attention sink, and its last).  Counts
from the shared profile; fine-tuned with the offline-tuning recipe under its own selection.
"""

from __future__ import annotations

import torch

from harness.contracts.method import Method, ScoreInputs


def truncation_scores(inputs: ScoreInputs) -> torch.Tensor:
    positions = inputs.positions.to(torch.float32)
    return positions if inputs.causal else -positions


class Truncation(Method):
    name = "truncation"
    description = "baseline: keep the first word-vectors of the input (decoders: the most recent ones)"

    def score(self, inputs: ScoreInputs) -> torch.Tensor:
        return truncation_scores(inputs)


METHOD = Truncation()
