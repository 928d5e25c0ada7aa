"""``power-bert`` — PoWER-BERT's significance score (after Goyal et al., "PoWER-BERT: Accelerating BERT
Inference via Progressive Word-vector Elimination", ICML 2020).

The significance of word-vector j in a layer is the attention it receives from the *other* tokens,
averaged over heads:

    sig(j) = mean over heads h of  sum over valid queries i ≠ j of P[h, i, j]

(the column sum of the attention map with the diagonal left out).  [CLS] is always kept (protected),
and each layer keeps its top k_l.

What we implement of the paper: its score and its top-k drop.  What we do not: the original learns
how many word-vectors each layer keeps (a soft-extract layer with learnable retention weights and an
L1 penalty that grows with depth, then a re-training pass).  Here the retention per layer comes from
the shared elimination profile at the requested speedup, the same counts ACC gets, so the comparison
isolates the score; the model is fine-tuned with the offline-tuning recipe under this score.
"""

from __future__ import annotations

import torch

from harness.contracts.method import Method, ScoreInputs


def power_bert_scores(inputs: ScoreInputs) -> torch.Tensor:
    """mean_h sum_{valid i != j} P[h, i, j] (zero at padding, which is never kept anyway)."""
    if inputs.causal:
        raise ValueError("power-bert scores bidirectional attention only")
    return (inputs.heads_received() - inputs.diagonal()).mean(dim=1)


class PowerBert(Method):
    name, needs = "power-bert", "attention"
    description = (
        "PoWER-BERT: attention received from the other tokens (diagonal excluded), shared-profile counts"
    )

    def score(self, inputs: ScoreInputs) -> torch.Tensor:
        return power_bert_scores(inputs)


METHOD = PowerBert()
