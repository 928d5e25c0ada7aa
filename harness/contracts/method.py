"""The method contract: a pruning strategy, with defaults so that a score-only method stays a few lines.

A method decides, in every layer that drops word-vectors:

* how it scores them (``score``; higher is kept first) and what it needs from the layer to do so
  (``needs``: "attention" — the attention each token receives, accumulated without materialising the
  probabilities, from the queries ``query_weights`` weighs; "last-query" — the attention row of each
  sample's last valid query only (one q·Kᵀ row, the layer keeps the fused kernel for its context);
  "keys" — the layer's projected keys; "nothing" — positions and validity only, so the layer keeps
  the fused attention kernel);
* how many each layer keeps (``keep_counts``; default: the shared elimination profile, with τ solved
  per sample for the target speedup; ``profile`` names the profile family a method always uses, as
  ``acc-decay`` uses ``decay``, in place of the one the pruning settings name);
* how it reduces them (``reduce``; default: drop the unkept ones; merging them into the kept ones is
  another reduction);
* how the model is trained for it (``recipe``: the name of a training recipe in ``RECIPES``; default
  the offline-tuning fine-tune of ``harness.training.loop``; a method that trains its own way names its
  recipe, and the training layer registers it in ``RECIPES``: ``harness.pruning.methods.recipes``
  lists the built-in ones); fine-tuned models are cached per (model, task, method, recipe);
* whether it reuses another method's fine-tuned model (``fine_tune_as``: a method that changes only
  inference, as ``acc-search`` changes only the lengths, is evaluated on the very weights it is
  compared with, and costs no second training);
* what a predictor it adds costs (``predictor_flops``; counted in the predicted speedup);
* what a forward costs for its plan (``flops``; default the FLOP model on the kept counts; a count of
  0 for a whole layer means the layer is skipped, as LayerDrop does);
* whether it selects the input of a second, whole pass (``filter_layer``: GemFilter runs the first
  layers, selects in that layer, then runs every layer on the selected tokens only);
* whether its counts are decided inside the layers (``dynamic``: thresholds, as LTP; the pruner then
  counts the FLOPs of what the layers really kept);
* per-model state: ``bind`` gives each pruned model its own instance (learned thresholds, a searched
  length configuration, read from ``PruningSettings.method_state``), and ``fit`` tunes that state for
  the requested speedups on held-out rows (``Tuning``) before a sweep evaluates them;
* which models it prunes: ``kinds`` (a prefill method declares ``("decoder",)`` and so serves every
  decoder family, a plugged-in one too), and ``families`` only where it relies on one family's layers.

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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from harness.contracts.family import Tokens
from harness.contracts.flops import ArchSpec, Schedule, counts_for_speedup, forward_flops
from harness.contracts.select import pack_kept
from harness.registry import Registry

NEEDS = ("attention", "last-query", "keys", "nothing")
KINDS_ALL = ("encoder", "decoder", "encoder-decoder")
OFFLINE_TUNING = "offline-tuning"
RECIPES: Registry = Registry("training recipe")
"""name -> ``train(loaded, train_frame, task, settings, progress)``: trains a pruned model in place.
``loaded`` is a ``harness.models.catalog.LoadedModel``, ``train_frame`` the task's train split,
``settings`` a ``harness.training.loop.TrainSettings``.  ``harness.training.loop`` registers
``offline-tuning`` and the built-in methods' own recipes: training sits above pruning, so the methods
name their recipe and the training layer fills it in."""


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
    received_heads: torch.Tensor | None = None
    """(B, H, n) per head, the attention each token receives summed over valid queries (needs "attention")."""
    self_attention: torch.Tensor | None = None
    """(B, H, n) the diagonal P[h, j, j]: the attention a token pays itself (needs "attention")."""
    values: torch.Tensor | None = None
    """(B, H, n, d) the layer's projected values (needs "attention")."""
    last_query: torch.Tensor | None = None
    """(B, H, n) the attention probabilities of each sample's last scoring query over the keys it sees
    (needs "last-query"): the row the next token is predicted from."""
    queries: torch.Tensor | None = None
    """(B, n) bool: the queries whose attention may score, when fewer than ``valid``.  A decoder scoring
    an lm-eval continuation feeds the answer's tokens in the same forward as its context; they are kept
    (their logits are read) but their queries are left out of every score and the last scoring query
    is the context's last token, so the context is pruned as a prefill of the context alone would prune
    it and the answer never steers which context tokens are kept.  None: every valid token."""

    def scoring(self) -> torch.Tensor:
        """(B, n) bool: the queries scores are read from (``queries``, else every valid token)."""
        return self.valid if self.queries is None else self.queries

    def seen_by(self, dtype: torch.dtype) -> torch.Tensor:
        """(B, n) how many scoring queries see each key: those at or after it when causal, else all (≥ 1)."""
        scoring = self.scoring().to(dtype)
        if self.causal:
            return scoring.flip(1).cumsum(1).flip(1).clamp(min=1)
        return scoring.sum(dim=1, keepdim=True).clamp(min=1)

    def attention_received(self) -> torch.Tensor:
        if self.received is not None:
            return self.received
        return self.heads_received().mean(dim=1)

    def heads_received(self) -> torch.Tensor:
        """(B, H, n): sum over scoring queries i of P[h, i, j], per head."""
        if self.received_heads is not None:
            return self.received_heads
        return torch.einsum("bhij,bi->bhj", self.probs, self.scoring().to(self.probs.dtype))

    def diagonal(self) -> torch.Tensor:
        """(B, H, n): P[h, j, j] of the scoring queries, zero elsewhere (padding, answer tokens)."""
        diagonal = (
            self.self_attention if self.self_attention is not None else self.probs.diagonal(dim1=-2, dim2=-1)
        )
        return diagonal * self.scoring().unsqueeze(1).to(diagonal.dtype)


class Method(abc.ABC):
    """A pruning method; subclasses set ``name``, ``description``, ``needs`` and implement ``score``."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    needs: ClassVar[str] = "nothing"
    """One of ``NEEDS``: what ``score`` reads from the layer."""
    recipe: ClassVar[str] = OFFLINE_TUNING
    """The training recipe (a name in ``RECIPES``) that fine-tunes for this method."""
    fine_tune_as: ClassVar[str | None] = None
    """The method whose fine-tuned model (and recipe) this one reuses; None: its own."""
    dynamic: ClassVar[bool] = False
    """Counts are decided inside the layers (``reduce`` may keep fewer than ``keep``): every layer runs
    the drop path when pruning, and the FLOPs are counted from what was kept."""
    kinds: ClassVar[tuple[str, ...]] = KINDS_ALL
    """The family kinds (``Family.kind``) whose models the method prunes.  Why kinds and not a list of
    family names: a method that needs a causal "last token" fits every decoder, including families
    added after it was written."""
    families: ClassVar[tuple[str, ...] | None] = None
    """The model families (``Family.name``) the method supports, for a method that relies on one
    family's layers or recipe (LTP's training); None: every family of its ``kinds``."""
    latency_model: ClassVar[bool] = True
    """Works with ``speedup_model="latency"`` (which solves the shared profile for wall-clock targets)."""
    profile: ClassVar[str | None] = None
    """The elimination profile family (``harness.contracts.profile.PROFILES``) the method's counts always
    follow, whatever ``PruningSettings.profile`` says; None: the settings' profile.  It is part of the
    method, so the solver, the reachability checks, training and the latency model all use it."""
    speedup_draw: ClassVar[str] = "uniform"
    """How the offline-tuning loop draws each step's speedup from its range: ``"uniform"``, or ``"top"``
    (density rising linearly from the bottom of the range to the top, so the high speedups, where
    quality is lost, get three quarters of the steps above the middle of the range)."""

    @property
    def needs_attention(self) -> bool:
        return self.needs == "attention"

    def refusal(self, family) -> str | None:
        """Why this method cannot prune ``family``'s models (a ``Family``), in one line; None if it can."""
        if family.kind not in self.kinds:
            kinds = " and ".join(self.kinds)
            return f"method {self.name!r} prunes {kinds} models, not {family.name!r} ones ({family.kind}s)"
        if self.families is not None and family.name not in self.families:
            return (
                f"method {self.name!r} supports {', '.join(self.families)} models, not {family.name!r} ones"
            )
        return None

    @abc.abstractmethod
    def score(self, inputs: ScoreInputs) -> torch.Tensor:
        """(B, n) float scores of the entering word-vectors; higher is kept first.  (A method with its
        own ``reduce`` may return whatever that ``reduce`` reads, as ToMe returns its matching keys.)"""

    def query_weights(self, valid: torch.Tensor, causal: bool) -> torch.Tensor:
        """(B, n) weight of each query in the ``received`` sums (needs "attention"); ``valid`` here is the
        scoring queries (``ScoreInputs.scoring``).  Default: 1 for each, 0 elsewhere.  A method that
        listens to some queries more returns other weights."""
        return valid.float()

    def filter_layer(self, spec: ArchSpec) -> int | None:
        """For a two-pass method: the 0-based layer whose ``score`` selects the tokens a second pass runs
        every layer on (``keep_counts`` then gives the selected count in every layer).  None (the
        default): one pass, counts applied layer by layer."""
        return None

    def bind(self, pruner) -> Method:
        """The instance one pruned model uses (default: this shared one).  Methods with per-model state
        return a copy that reads it from ``pruner.settings.method_state``."""
        return self

    def fit(self, model, speedups: list[float], tuning: Tuning) -> None:
        """Tune per-model inference state for ``speedups`` on held-out rows (default: nothing to tune)."""

    def begin_training(self, model) -> list[dict]:
        """Optimizer parameter groups the method adds before fine-tuning (LTP's thresholds); default none."""
        return []

    def train_step(self, model, batch: dict, labels: torch.Tensor, rng=None) -> torch.Tensor:
        """The loss of one training batch (default: the task loss at the speedup the loop drew).
        ``rng``: the loop's seeded ``random.Random``, for methods that sample sub-networks."""
        return model(**batch, labels=labels).loss

    def end_training(self, model) -> None:
        """After fine-tuning: keep what was learned besides the weights (in ``method_state``)."""

    def flops(self, spec: ArchSpec, n: int, counts) -> int:
        """FLOPs of one sample's forward with these kept counts (0 for a whole layer: skipped)."""
        return forward_flops(spec, n, list(counts))

    def keep_counts(self, spec: ArchSpec, n: int, speedup: float, schedule: Schedule) -> tuple[int, ...]:
        """Word-vectors each layer keeps for one sample of ``n`` tokens (at most its reachable maximum)."""
        return counts_for_speedup(spec, n, speedup, schedule)

    def reduce(self, context, hidden, scores, tokens, keep):
        """After a layer's attention: ``(context (B, K, H·d), residual (B, K, D), Tokens)`` of what goes on.

        Default: keep each sample's top ``keep[b]`` scores (protected first), drop the rest."""
        context, residual, state = pack_kept(
            context, hidden, scores, tokens.valid, tokens.positions, tokens.protected, keep, tokens.weight
        )
        return context, residual, Tokens(*state)

    def predictor_flops(self, spec: ArchSpec, n: int) -> int:
        """FLOPs of any predictor the method adds to one forward of ``n`` tokens (none by default)."""
        return 0


@dataclass
class Tuning:
    """Held-out rows a method may tune its inference state on (``Method.fit``): never the rows a sweep
    reports quality on."""

    evaluate: Callable[[Any], tuple[float, Any]]
    """model -> (quality, ``ForwardStats``) of the model at its current settings on the held-out rows."""
    lengths: list[int]
    """Token count of every held-out row (the analytic FLOP model's inputs)."""
    search: int = 8
    """Generations of a method's search over inference configurations (0: no search)."""
    seed: int = 0
    progress: bool = False
