"""``acc-vnorm`` — a second reading of "attention context contribution": weigh attention by what it carries.

The context vector of query i in head h is sum_j P[h, i, j] · v_{h, j}, so what token j contributes to
it is the vector P[h, i, j] · v_{h, j}, whose size is P[h, i, j] · ‖v_{h, j}‖ (after Kobayashi et al.,
"Attention is Not Only a Weight: Analyzing Transformers with Vector Norms", EMNLP 2020).  A token
attended to a lot but carrying a near-zero value (a [SEP] or punctuation "no-op" token) supplies
little context; ACC counts it fully, this reading does not:

    ACC-vnorm(j) = mean over heads h and valid queries i of P[h, i, j] · ‖v_{h, j}‖

with v_{h, j} the per-head value vector (before the output projection: one norm per token and head,
d multiply-adds each, no matrix product).  Counts from the shared profile; fine-tuned with the
offline-tuning recipe under this score.
"""

from __future__ import annotations

import torch

from harness.contracts.method import Method, ScoreInputs


def acc_vnorm_scores(inputs: ScoreInputs) -> torch.Tensor:
    """mean_h mean_{valid i} P[h, i, j] · ‖v_{h,j}‖ (valid queries that can see j, when causal)."""
    received = inputs.heads_received() * inputs.values.norm(dim=-1).to(inputs.valid.device)
    return received.mean(dim=1) / inputs.seen_by(received.dtype)


class AccVnorm(Method):
    name, needs = "acc-vnorm", "attention"
    description = "ACC weighted by per-head value norms: mean over heads and queries of P[h,i,j]·‖v_hj‖"

    def score(self, inputs: ScoreInputs) -> torch.Tensor:
        return acc_vnorm_scores(inputs)


METHOD = AccVnorm()
