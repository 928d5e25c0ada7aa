"""The method contract: a pruning strategy, with defaults so that a score-only method stays a few lines.

A method decides, in every layer that drops word-vectors:

* how it scores them (``score``; higher is kept first) and what it needs from the layer to do so
  (``needs``: "attention" — the attention each token receives, accumulated without materialising the
  probabilities; "keys" — the layer's projected keys; "nothing" — positions and validity only, so the
  layer keeps the fused attention kernel);
* how many each layer keeps (``keep_counts``; default: the shared elimination profile, with τ solved
  per sample for the target speedup);
* how it reduces them (``reduce``; default: drop the unkept ones; merging them into the kept ones is
  another reduction);
* how the model is trained for it (``recipe``: the name of a training recipe in ``RECIPES``; default
  the offline-tuning fine-tune of ``harness.runners.glue``; a method that trains its own way registers
  its recipe in ``RECIPES`` beside it); fine-tuned models are cached per (model, task, method, recipe);
* what a predictor it adds costs (``predictor_flops``; counted in the predicted speedup).

The smallest method::

    class KeyNorm(Method):
        name, needs = "keynorm", "keys"
        description = "keeps the word-vectors with the largest key norm"

        def score(self, inputs):
            return inputs.keys.norm(dim=-1).mean(dim=1)

Register an instance in ``harness.pruning.methods.METHODS`` or declare it in the ``harness.methods``
entry-point group.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import ClassVar

import torch

from harness.contracts.family import Tokens
from harness.pruning.flops import ArchSpec, Schedule, counts_for_speedup
from harness.pruning.select import pack_kept
from harness.registry import Registry

NEEDS = ("attention", "keys", "nothing")
OFFLINE_TUNING = "offline-tuning"
RECIPES: Registry = Registry("training recipe")
"""name -> ``train(loaded, train_frame, task, settings, progress)``: trains a pruned model in place.
``loaded`` is a ``harness.models.catalog.LoadedModel``, ``train_frame`` the task's train split,
``settings`` a ``harness.runners.glue.TrainSettings``.  ``offline-tuning`` is registered by
``harness.runners.glue``."""


@dataclass(frozen=True)
class ScoreInputs:
    """What a layer offers a scoring method; ``received``/``probs`` and ``keys`` only when it asks."""

    valid: torch.Tensor
    """(B, n) bool: real tokens among those entering the layer."""
    positions: torch.Tensor
    """(B, n) long: each entering token's position in the original input."""
    probs: torch.Tensor | None = None
    """(B, H, n, n) attention probabilities of this layer, when a caller has them whole."""
    generator: torch.Generator | None = None
    causal: bool = False
    """Attention is causal: query i sees keys j ≤ i (in the current order of the kept tokens)."""
    received: torch.Tensor | None = None
    """(B, n) attention each token receives: the mean over heads, summed over valid queries, of
    P[h, i, j].  Layers accumulate it block by block (``attention.attend_and_score``) instead of
    keeping ``probs``; it is the statistic attention-based pruning methods share."""
    keys: torch.Tensor | None = None
    """(B, H, n, d) the layer's projected keys, for methods with ``needs = "keys"``."""

    def attention_received(self) -> torch.Tensor:
        if self.received is not None:
            return self.received
        return torch.einsum("bhij,bi->bj", self.probs, self.valid.to(self.probs.dtype)) / self.probs.shape[1]


class Method(abc.ABC):
    """A pruning method; subclasses set ``name``, ``description``, ``needs`` and implement ``score``."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    needs: ClassVar[str] = "nothing"
    """One of ``NEEDS``: what ``score`` reads from the layer."""
    recipe: ClassVar[str] = OFFLINE_TUNING
    """The training recipe (a name in ``RECIPES``) that fine-tunes for this method."""

    @property
    def needs_attention(self) -> bool:
        return self.needs == "attention"

    @abc.abstractmethod
    def score(self, inputs: ScoreInputs) -> torch.Tensor:
        """(B, n) float scores of the entering word-vectors; higher is kept first."""

    def keep_counts(self, spec: ArchSpec, n: int, speedup: float, schedule: Schedule) -> tuple[int, ...]:
        """Word-vectors each layer keeps for one sample of ``n`` tokens (at most its reachable maximum)."""
        return counts_for_speedup(spec, n, speedup, schedule)

    def reduce(self, context, hidden, scores, tokens, keep):
        """After a layer's attention: ``(context (B, K, H·d), residual (B, K, D), Tokens)`` of what goes on.

        Default: keep each sample's top ``keep[b]`` scores (protected first), drop the rest."""
        context, residual, (valid, positions, protected) = pack_kept(
            context, hidden, scores, tokens.valid, tokens.positions, tokens.protected, keep)
        return context, residual, Tokens(valid, positions, protected)

    def predictor_flops(self, spec: ArchSpec, n: int) -> int:
        """FLOPs of any predictor the method adds to one forward of ``n`` tokens (none by default)."""
        return 0
