"""``acc-decay`` — ACC's score with the ``decay`` profile: every layer, the first included, keeps the same
share of the word-vectors entering it.

A recipe of the ACC study (issue 8, section 2), changing one thing against ``acc``: the elimination
profile (``harness.contracts.profile``).  ``acc``'s shared ``tilt`` profile keeps every word-vector after
layer 1, so on a 6-layer model a 4x FLOP budget leaves it [CLS] alone from layer 3 on, and minilm on
rt-polarity falls to the majority class.  ``decay`` (r_l = (1 − τ)^l) prunes after the first layer's
attention already, as the searched length configurations do (85, 27, 27, 2, 2, 2 of 128 at 4x), and
spreads the budget over the depth.  Trained with the offline-tuning fine-tune under its own profile
(its own model, so training and inference see the same counts).
"""

from __future__ import annotations

import torch

from harness.contracts.method import Method, ScoreInputs
from harness.pruning.methods.acc import acc_scores


class AccDecay(Method):
    name, needs, profile = "acc-decay", "attention", "decay"
    description = "ACC's score with the decay profile: every layer, the first too, keeps the same share"

    def score(self, inputs: ScoreInputs) -> torch.Tensor:
        return acc_scores(inputs)


METHOD = AccDecay()
