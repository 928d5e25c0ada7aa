"""``last-token`` — keep what the last prompt token looks at (after LazyLLM, Fu et al., arXiv 2407.14057,
and FastV, Chen et al., "An Image is Worth 1/2 Tokens After Layer 2", 2024).

The rule, in our words: in every layer that drops word-vectors, a token's score is the attention the
sample's last valid token (the one whose logits predict the next token) pays it, averaged over heads:

    last-token(j) = mean over heads h of P[h, last, j]

It is LazyLLM's score: LazyLLM prunes the prompt progressively, keeping in each of a few chosen layers
the top percentile of tokens by the last token's attention, and reports 2.34x time-to-first-token on
Llama 2 7B with LongBench accuracy kept.  FastV prunes once, after layer 2, by the attention tokens
receive; we take LazyLLM's last-query score and FastV's observation that later layers need few tokens.

What we implement: that score, with counts from the shared elimination profile at the requested speedup
(progressive, fewer tokens deeper, the same counts ACC gets); the first token (the attention sink) and
the last token are protected, as every decoder method protects them.  What we do not: LazyLLM's "aux
cache", which lets a later decoding step revive a pruned token; here pruning touches the prefill only
and decoding attends the kept KV cache.  The layer computes only the last query's probability row (one
q·Kᵀ row per sample); its context goes through the fused attention kernel.  Decoders only (every family
of kind decoder): an encoder has no "last token" whose prediction matters.
"""

from __future__ import annotations

import torch

from harness.contracts.method import Method, ScoreInputs

DECODERS = ("decoder",)
"""The kinds a prefill method prunes: every decoder family, by kind, so a new one needs no list here."""


def last_token_scores(inputs: ScoreInputs) -> torch.Tensor:
    """mean_h P[h, last scoring query, j] (zero at padding and at keys after that query)."""
    return inputs.last_query.mean(dim=1) * inputs.valid.to(inputs.last_query.dtype)


class LastToken(Method):
    name, needs, kinds = "last-token", "last-query", DECODERS
    description = "LazyLLM-style: keep the tokens the last prompt token attends to most (progressive counts)"

    def score(self, inputs: ScoreInputs) -> torch.Tensor:
        return last_token_scores(inputs)


METHOD = LastToken()
