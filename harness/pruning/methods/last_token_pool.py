"""``last-token-pool`` — the last token's attention, max-pooled over neighbouring positions, so spans are
kept whole (``last-token``'s score with SnapKV's clustering: Li et al., "SnapKV: LLM Knows What You Are
Looking for Before Generation", 2024).

The rule, in our words: score each entering token by the attention the last scoring query pays it,
averaged over heads (``last-token``), then give every token the largest score within ``POOL // 2``
places on either side (a 1-D max-pool of width ``POOL`` over the tokens in their current order):

    last-token-pool(j) = max over |i − j| ≤ POOL // 2 of  mean_h P[h, last, i]

SnapKV compresses the KV cache after a dense prefill; it pools the scores because a token the answer
needs is useful only with its neighbours (the words around it that make it the answer), and keeping
isolated high-attention tokens breaks the spans the model copies from.  We apply the pooling to
prefill pruning, layer by layer with counts from the shared profile, as ``last-token`` does.  On
smollm2 at speedup 2 (100 prompts each; README, "Results: smollm2 on long prompts") it keeps 14% exact
recall on rt-polarity-recall (a review's next 8 words; word perplexity 52.6) where ``last-token`` keeps
11% (75.0), and held-out perplexity 69.2 against 72.1 (stock: 68%, 1.46 and 52.4).  ``POOL`` = 7 is
SnapKV's kernel; on 25 recall prompts widths 7, 15 and 31 gave 16%, 12% and 20% exact recall (word
perplexity 31, 35, 43), within noise of one another.  SnapKV's observation window (the mean over the
last 16 queries instead of the last one) did worse on those prompts (4%, pooled 8%) and is left out.
Decoders only; the first token and the last are protected as for every decoder method.
"""

from __future__ import annotations

import torch

from harness.contracts.method import Method, ScoreInputs
from harness.pruning.methods.last_token import DECODERS, last_token_scores

POOL = 7
"""Width of the max-pool over neighbouring positions (odd: centred on the token)."""


def pooled(scores: torch.Tensor, valid: torch.Tensor, width: int = POOL) -> torch.Tensor:
    """(B, n): each valid token's largest score within ``width // 2`` places; zero at padding."""
    masked = scores.masked_fill(~valid, 0.0)
    return torch.nn.functional.max_pool1d(masked[:, None], width, stride=1, padding=width // 2)[:, 0] * valid


class LastTokenPool(Method):
    name, needs, kinds = "last-token-pool", "last-query", DECODERS
    description = "last-token's score max-pooled over neighbours (SnapKV's clustering): keeps spans whole"

    def score(self, inputs: ScoreInputs) -> torch.Tensor:
        return pooled(last_token_scores(inputs), inputs.valid)


METHOD = LastTokenPool()
