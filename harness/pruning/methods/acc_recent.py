"""``acc-recent`` — causal ACC that listens to the end of the prompt: queries weighed by a linear ramp.

Causal ACC (``acc``) averages, for word-vector j, the attention it receives over every query that can
see it.  In a decoder the early queries see few keys, so their probabilities are large, and they see
only early tokens: the mean leans toward the start of the prompt (on a random-weight Llama of 40 tokens
at speedup 2, causal ACC kept positions 0–7 in its first eliminating layer).  The next token is
predicted from the end, so this variant weighs query i by its rank among the valid tokens, a linear
ramp from 1/n at the first token to 1 at the last:

    w_i = rank(i) / n,    ACC-recent(j) = mean_h  sum_{i ≥ j} w_i P[h, i, j]  /  sum_{i ≥ j} w_i

(a weighted mean over the queries that see j).  It sits between ``acc`` (flat weights) and
``last-token`` (all weight on the last query), has no window to tune, and costs what ``acc`` costs.
Counts from the shared profile; decoders only (an encoder's queries all see every token).
"""

from __future__ import annotations

import torch

from harness.contracts.method import Method, ScoreInputs
from harness.pruning.methods.last_token import DECODERS


def ramp_weights(valid: torch.Tensor) -> torch.Tensor:
    """(B, n): rank(i)/n for valid queries (rank 1 at the first valid token), 0 at padding."""
    valid = valid.float()
    return valid.cumsum(dim=1) * valid / valid.sum(dim=1, keepdim=True).clamp(min=1)


def acc_recent_scores(inputs: ScoreInputs) -> torch.Tensor:
    """sum_{i ≥ j} w_i P̄[i, j] / sum_{i ≥ j} w_i, P̄ the mean over heads (``received`` is the weighted sum)."""
    weights = ramp_weights(inputs.scoring())
    if inputs.received is not None:  # the layer summed the queries with ``query_weights`` already
        received = inputs.received
    else:
        received = (
            torch.einsum("bhij,bi->bj", inputs.probs, weights.to(inputs.probs.dtype)) / inputs.probs.shape[1]
        )
    seen_by = weights.to(received.dtype).flip(1).cumsum(1).flip(1).clamp(min=1e-6)
    return received / seen_by


class AccRecent(Method):
    name, needs, kinds = "acc-recent", "attention", DECODERS
    description = "causal ACC with queries weighed by a linear ramp toward the end of the prompt"

    def query_weights(self, valid: torch.Tensor, causal: bool) -> torch.Tensor:
        return ramp_weights(valid)

    def score(self, inputs: ScoreInputs) -> torch.Tensor:
        return acc_recent_scores(inputs)


METHOD = AccRecent()
