"""``gemfilter`` — select the prompt in an early layer, then run the whole model on the selection (after
Shi et al., "Discovering the Gems in Early Layers: Accelerating Long-Context LLMs with 1000x Input Token
Reduction", 2024).

The rule, in our words: early layers already know which prompt tokens the answer needs.  A first pass
runs the layers up to a filter layer r on the whole prompt; in layer r, the last token's attention,
averaged over heads, scores every token (``last-token``'s score); the top k are kept, in their original
order, and a second pass runs *every* layer on those k tokens only, each keeping its original position
(its rotary angle or position embedding).  The second pass writes the KV cache generation decodes
from; the first pass writes none.

Cost: the selection pass (layers 0..r−1 on all n tokens, and layer r itself: its projections and
attention on n, its feed-forward on k) plus a dense forward on k tokens:

    FLOPs = sum_{l<r} layer(n → n) + layer_r(n → k) + forward(k)

k is the smallest count whose FLOPs reach the requested speedup *including* the selection pass (so
the selection limits the speedup: about L/(r+1) at most); the protected tokens (the first, the
attention sink, and the last) are always among the k.  The paper stops layer r after q·Kᵀ of the last
query; we run layer r whole (its context through the fused kernel), a little more than it needs, and
count it.

Filter layer: the paper picks layer 13 of 32 (Llama 3.1 8B), 19 of 40 and 19 of 32 (Mistral Nemo,
Phi 3.5), 40–60% of the depth, which caps the FLOP speedup near 2x.  We default to a quarter of the
depth (r = ⌊L/4⌋, layer 7 of smollm2's 30), so 3x stays reachable; ``method_state='{"filter_layer": r}'``
(``harness.prune`` keyword or lm-eval ``model_args``) picks another.  Decoders only.
"""

from __future__ import annotations

import copy
import json

from harness.contracts.flops import ArchSpec, Schedule, forward_flops, reaches
from harness.contracts.method import Method, ScoreInputs
from harness.pruning.methods.last_token import DECODERS, last_token_scores
from harness.registry import HarnessError

FILTER_DEPTH = 0.25
"""The default filter layer as a share of the depth (0-based layer ⌊L·share⌋)."""


def selection_flops(spec: ArchSpec, n: int, k: int, layer: int) -> int:
    """FLOPs of the selection pass: layers before ``layer`` on all n tokens, then ``layer`` keeping k."""
    return layer * spec.layer_flops(n, n) + spec.layer_flops(n, k)


def gemfilter_flops(spec: ArchSpec, n: int, k: int, layer: int) -> int:
    """One sample's FLOPs: the selection pass plus every layer (and the head) on k tokens; dense at k = n."""
    if k >= n:
        return forward_flops(spec, n)
    return selection_flops(spec, n, k, layer) + forward_flops(spec, k)


def selected_count(spec: ArchSpec, n: int, speedup: float, layer: int, floor: int) -> int:
    """The largest k in [floor, n] whose FLOPs reach ``speedup`` (floor when none does: clamped)."""
    if speedup <= 1 or floor >= n:
        return n
    full = forward_flops(spec, n)
    lo, hi = floor, n
    while lo < hi:  # FLOPs grow with k, so the ks that reach form a prefix [floor, k*]: bisect for k*
        mid = (lo + hi + 1) // 2
        if reaches(full / gemfilter_flops(spec, n, mid, layer), speedup):
            lo = mid
        else:
            hi = mid - 1
    return lo


class GemFilter(Method):
    name, needs, kinds, latency_model = "gemfilter", "last-query", DECODERS, False
    description = (
        "GemFilter: select by the last token's attention in an early layer, rerun the model on the selection"
    )

    def __init__(self):
        self.pruner = None

    def bind(self, pruner) -> GemFilter:
        bound = copy.copy(self)
        bound.pruner = pruner
        return bound

    def filter_layer(self, spec: ArchSpec) -> int:
        """``method_state``'s "filter_layer", else ⌊L·FILTER_DEPTH⌋."""
        state = self.pruner.settings.method_state if self.pruner is not None else ""
        layer = json.loads(state).get("filter_layer") if state else None
        layer = int(FILTER_DEPTH * spec.num_layers) if layer is None else layer
        if not isinstance(layer, int) or not 0 <= layer < spec.num_layers:
            raise HarnessError(
                f"gemfilter's filter_layer must be an integer in 0..{spec.num_layers - 1}, got {layer!r}"
            )
        return layer

    def score(self, inputs: ScoreInputs):
        return last_token_scores(inputs)

    def keep_counts(self, spec: ArchSpec, n: int, speedup: float, schedule: Schedule) -> tuple[int, ...]:
        floor = min(max(schedule.protected, schedule.min_keep), n)
        return (selected_count(spec, n, speedup, self.filter_layer(spec), floor),) * spec.num_layers

    def flops(self, spec: ArchSpec, n: int, counts) -> int:
        return gemfilter_flops(spec, n, counts[0], self.filter_layer(spec))


METHOD = GemFilter()
