"""``tome`` — token merging instead of dropping (after Bolya et al., "Token Merging: Your ViT But Faster",
ICLR 2023), on an encoder.

In a layer that must lose r word-vectors, after its attention:

1. the matching metric is the layer's keys averaged over heads, cosine-normalised;
2. bipartite soft matching: the mergeable tokens (valid, not protected: [CLS] is never merged) are
   split alternately into sets A and B by their order; each token of A is matched to its most similar
   partner in B; the r pairs with the highest similarity are merged, the A token into its B partner
   (several A tokens may merge into one B token);
3. a merge is a size-weighted average (of the attention context and of the residual stream, which is
   what the output projection, LayerNorm and FFN then read: both are linear up to the LayerNorm, so
   this is the weighted average of the merged tokens' pre-LayerNorm sums), and sizes add up;
4. proportional attention: every later layer adds log(size) to each key's attention logit, so a
   token standing for s merged ones is attended as s copies would be.

r per layer: one constant r in every layer (the paper's schedule), the smallest whose FLOPs reach the
requested speedup; a layer can merge at most the size of A (about half its mergeable tokens), so high
speedups of short inputs are clamped and the row reports the speedup reached.  Trained with the
offline-tuning recipe with merging in the forward.

Where: encoders (every family of kind encoder).  The log(size) bias is the shared layer loop's
(``harness.models.stack.weighted``), so no family needs code for it; what keeps merging off the other
kinds is what reads the merged word-vectors after the stack.  A decoder would merge a later token into
an earlier partner (queries between them would see the future) and cache merged keys that decoding
attends without their sizes; an encoder-decoder's decoder would cross-attend merged states without
theirs.  An encoder's head reads the protected [CLS], never merged.
"""

from __future__ import annotations

import torch

from harness.contracts.family import Tokens
from harness.contracts.flops import ArchSpec, Schedule, forward_flops, reaches
from harness.contracts.method import Method, ScoreInputs
from harness.contracts.select import gather_tokens, keep_top


def tome_counts_for_r(spec: ArchSpec, n: int, r: int, schedule: Schedule) -> list[int]:
    """Tokens after each layer when every layer merges up to ``r`` pairs (at most the size of set A)."""
    protected = min(schedule.protected, n)
    floor = min(max(protected, schedule.min_keep), n)
    counts, previous = [], n
    for _ in range(spec.num_layers):
        mergeable = previous - protected
        most = -(-mergeable // 2) if mergeable >= 2 else 0
        kept = max(floor, previous - min(r, most))
        counts.append(min(kept, previous))
        previous = counts[-1]
    return counts


def tome_counts(spec: ArchSpec, n: int, speedup: float, schedule: Schedule) -> tuple[int, ...]:
    """The counts of the smallest constant r reaching ``speedup`` (the most merging if none does)."""
    full = forward_flops(spec, n)
    lo, hi = 0, n
    if not reaches(full / forward_flops(spec, n, tome_counts_for_r(spec, n, hi, schedule)), speedup):
        return tuple(tome_counts_for_r(spec, n, hi, schedule))
    while lo < hi:  # FLOPs fall as r grows: the smallest r that reaches the target
        mid = (lo + hi) // 2
        if reaches(full / forward_flops(spec, n, tome_counts_for_r(spec, n, mid, schedule)), speedup):
            hi = mid
        else:
            lo = mid + 1
    return tuple(tome_counts_for_r(spec, n, lo, schedule))


def bipartite_merge(metric, features, tokens: Tokens, keep):
    """Merge each sample down to ``keep[b]`` word-vectors by bipartite soft matching.

    metric (B, n, d) matching features; features: tensors (B, n, ...) merged alike (size-weighted).
    Returns ``(merged features, Tokens)`` packed as ``pack_kept`` packs (kept in original order).
    """
    valid, protected = tokens.valid, tokens.protected
    weight = tokens.weight if tokens.weight is not None else valid.to(features[0].dtype)
    weight = weight.masked_fill(~valid, 0.0)
    mergeable = valid & ~protected
    rank = mergeable.long().cumsum(dim=1) - 1
    in_a, in_b = mergeable & (rank % 2 == 0), mergeable & (rank % 2 == 1)
    unit = metric / metric.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    similarity = unit @ unit.transpose(1, 2)
    similarity = similarity.masked_fill(~in_b[:, None, :], float("-inf"))
    best, partner = similarity.max(dim=-1)
    best = best.masked_fill(~in_a, float("-inf"))
    merges = valid.sum(dim=1) - keep  # r per sample
    order = best.argsort(dim=1, descending=True)
    chosen = torch.arange(best.shape[1], device=best.device)[None, :] < merges[:, None]
    merged = torch.zeros_like(valid).scatter(1, order, chosen) & in_a
    # size-weighted sums: every merged A token adds its mass to its partner, then each row is divided
    sources = merged.to(weight.dtype) * weight
    total = weight.masked_fill(merged, 0.0).scatter_add(1, partner, sources)
    out = []
    for x in features:
        flat = x.reshape(*x.shape[:2], -1)
        summed = (flat * weight.masked_fill(merged, 0.0).unsqueeze(-1)).scatter_add(
            1, partner.unsqueeze(-1).expand_as(flat), flat * sources.unsqueeze(-1)
        )
        out.append((summed / total.clamp_min(1e-12).unsqueeze(-1)).reshape(x.shape))
    index, kept_valid = keep_top((~merged).to(weight.dtype), valid, protected, keep)
    packed = [gather_tokens(x, index) for x in out]
    new = Tokens(
        kept_valid,
        gather_tokens(tokens.positions, index),
        gather_tokens(protected, index) & kept_valid,
        gather_tokens(total, index).masked_fill(~kept_valid, 1.0),
    )
    return packed, new


class Tome(Method):
    name, needs, kinds, latency_model = "tome", "keys", ("encoder",), False
    description = "ToMe: bipartite soft matching on keys, size-weighted merges, log(size) attention bias"

    def score(self, inputs: ScoreInputs) -> torch.Tensor:
        return inputs.keys.mean(dim=1)  # the matching metric (B, n, d): what ``reduce`` reads

    def keep_counts(self, spec: ArchSpec, n: int, speedup: float, schedule: Schedule) -> tuple[int, ...]:
        return tome_counts(spec, n, speedup, schedule)

    def reduce(self, context, hidden, scores, tokens, keep):
        batch, _, n, _ = context.shape
        context = context.transpose(1, 2).reshape(batch, n, -1)
        (context, residual), tokens = bipartite_merge(scores, [context, hidden], tokens, keep)
        return context, residual, tokens


METHOD = Tome()
