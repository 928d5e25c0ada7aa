"""``acc-decay-distill`` — ``acc-decay`` trained for the high speedups: the sandwich rule, with the
speedups drawn weighted toward the top.

A recipe of the ACC study (issue 8, section 2).  ``acc-decay`` (ACC's score, the ``decay`` profile) is
the best one-knob recipe but still loses 3 points at 3x and 7 at 4x against its own 1x, while the
uniform draw gives the speedups above 3 a third of the steps and trains them on the labels alone.
This recipe changes the training only, two things at once, both aimed at the top of the range:

* the sandwich rule (as ``acc-distill``): each step the full model on the labels, and the pruned model at
  the drawn speedup learning from the full model's output distribution; the full pass keeps 1x trained
  whatever the draw;
* the draw (``Method.speedup_draw = "top"``): density rising linearly over the range, so on 1..4 the
  steps above 3x are 5/9 of all, against 1/3 under the uniform draw.

Inference is ``acc-decay``'s: ACC's score and the ``decay`` profile's counts, no search.
"""

from __future__ import annotations

import torch

from harness.contracts.method import Method, ScoreInputs
from harness.pruning.methods.acc import acc_scores
from harness.pruning.methods.recipes import drawn_sandwich


class AccDecayDistill(Method):
    name, needs, profile, recipe, speedup_draw = (
        "acc-decay-distill",
        "attention",
        "decay",
        "acc-sandwich",
        "top",
    )
    description = "acc-decay trained with the sandwich rule on speedups drawn weighted toward the top"

    def score(self, inputs: ScoreInputs) -> torch.Tensor:
        return acc_scores(inputs)

    def train_step(self, model, batch, labels, rng=None):
        return drawn_sandwich(model, batch, labels)


METHOD = AccDecayDistill()
