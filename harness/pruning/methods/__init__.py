"""The built-in pruning methods, one module each (the contract: ``harness.contracts.method``).

Every method scores the word-vectors that enter a layer; by default the layer keeps the highest-scoring
k_l of them (see ``select.keep_top``) with k_l from the shared elimination profile.  Methods are
registered by name here, the one registry, or through the ``harness.methods`` entry-point group.

* ``acc`` — Attention Context Contribution, the reference (``acc``);
* ``acc-vnorm`` — ACC weighted by the value norms (``acc_vnorm``);
* ``acc-decay`` — ACC with the ``decay`` profile: the first layer prunes too (``acc_decay``);
* ``acc-decay-distill`` — ``acc-decay`` trained with the sandwich rule on speedups drawn toward the top
  (``acc_decay_distill``);
* ``acc-search`` — ACC with per-layer lengths searched on held-out rows (``acc_search``);
* ``acc-distill`` — ACC trained with the sandwich rule and distillation, searched lengths (``acc_distill``);
* ``power-bert`` — attention received from the other tokens (``power_bert``);
* ``lat`` — Length-Adaptive Transformer: LengthDrop, sandwich rule, searched lengths (``lat``);
* ``ltp`` — Learned Token Pruning: learned thresholds per layer (``ltp``);
* ``tome`` — token merging by bipartite soft matching (``tome``);
* ``layerdrop`` — depth instead of width: whole top layers dropped (``layerdrop``);
* ``random``, ``truncation`` — the trivial baselines (``random_tokens``, ``truncation``; a decoder
  truncates from the front, keeping the most recent tokens);
* decoders' prefill baselines: ``last-token`` — the last token's attention, progressive (``last_token``,
  after LazyLLM); ``gemfilter`` — select in an early layer, rerun the model on the selection
  (``gemfilter``); ``acc-recent`` — causal ACC with queries ramped toward the end (``acc_recent``);
  ``last-token-pool`` — last-token's score max-pooled over neighbours, after SnapKV (``last_token_pool``).

Each is fine-tuned for itself (its ``recipe``: the offline-tuning fine-tune with its own selection,
or its own training where it has one), and at speedup 1 each runs the dense model of that recipe.
"""

from __future__ import annotations

import importlib

from harness.contracts.method import Method, ScoreInputs
from harness.registry import Registry, instance

__all__ = [
    "METHODS",
    "PREFILL_STUDY",
    "Method",
    "ScoreInputs",
    "acc_scores",
    "random_scores",
    "truncation_scores",
]

METHODS: Registry[Method] = Registry(
    "method", group="harness.methods", accepts=lambda obj: isinstance(instance(obj), Method), adapt=instance
)

BUILT_IN = (
    "acc",
    "random_tokens",
    "truncation",
    "power_bert",
    "lat",
    "ltp",
    "tome",
    "layerdrop",
    "acc_vnorm",
    "acc_search",
    "acc_distill",
    "acc_decay",
    "acc_decay_distill",
    "last_token",
    "gemfilter",
    "acc_recent",
    "last_token_pool",
)
"""The built-in method modules of this package, in registration order.  Each defines ``METHOD``, its
``Method`` instance, so a new method is its module and its name here (one line)."""

for _module in BUILT_IN:
    _method = importlib.import_module(f"{__name__}.{_module}").METHOD
    METHODS.register(_method.name, _method)

from harness.pruning.methods.acc import acc_scores  # noqa: E402  (the scores other methods and tests reuse)
from harness.pruning.methods.random_tokens import random_scores  # noqa: E402
from harness.pruning.methods.truncation import truncation_scores  # noqa: E402

PREFILL_STUDY = ("acc", "acc-recent", "last-token", "last-token-pool", "gemfilter", "truncation", "random")
"""The methods the decoder prefill study compares (README "Decoder prefill baselines"): every one that runs a
pretrained decoder zero-shot.  The default of ``harness positions --methods`` and of
``bench/recall_sources.py``, so a new prefill method is added in one place."""
