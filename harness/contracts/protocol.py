"""The protocol contract: how the sweep gets a model ready for a task and measures its quality.

``finetune`` (fine-tune once with the method's recipe, evaluate every speedup) and ``zero-shot``
(lm-eval on the task's YAML) are the built-in protocols (``harness.runners.protocols.PROTOCOLS``); a
seq2seq or instruction protocol slots in beside them.  The sweep calls ``check`` for every
(model, task) before it spends time, then ``prepare`` once per (model, task, method), and the
returned ``Prepared.quality`` once per speedup.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

NO_QUALITY = {
    "metrics": {},
    "main_metric": None,
    "score": None,
    "eval_predicted_speedup": None,
    "eval_clamped": None,
}
"""The quality columns of a row that measures speed only (random weights)."""


@dataclass
class Prepared:
    """A model ready for the cells of one (model, task, method)."""

    loaded: Any
    """``harness.models.catalog.LoadedModel``."""
    quality: Callable[[Any], dict] = field(default=lambda loaded: dict(NO_QUALITY))
    """loaded -> the row's quality columns at the model's current speedup."""
    texts: Any = None
    """Evaluation text for the latency batch (None: random ids)."""
    context: dict = field(default_factory=dict)
    """``data`` and ``train`` provenance copied into every row."""
    seq_len: int | None = None
    """The latency batch's length in tokens (None: the sweep's --max-length); a prompt mode times its own
    prompts at their mean length."""


class EvalProtocol(abc.ABC):
    name: ClassVar[str]
    description: ClassVar[str] = ""
    kinds: ClassVar[tuple[str, ...]]
    """The family kinds whose models it evaluates."""
    trains: ClassVar[bool] = False
    """It fine-tunes (so ``--seeds N`` trains N models; a protocol that does not runs once)."""
    default_method: ClassVar[str] = "acc"
    """The method ``harness run`` evaluates when ``--methods`` is not given: ``acc``, the reference,
    unless a study found a better recipe for this protocol's training (finetune: ``acc-decay-distill``)."""

    @abc.abstractmethod
    def check(self, family, task) -> None:
        """Raise a HarnessError when this protocol cannot evaluate ``family``'s models on ``task``."""

    def train_identity(self, config) -> dict:
        """The training settings its numbers depend on, for the cells' identity (a protocol that trains
        says; seed and method are left out, being cell coordinates)."""
        return {}

    @abc.abstractmethod
    def prepare(self, config, model_name: str, task, method) -> Prepared:
        """Load (and train, if the protocol trains) the model for every cell of (model, task, method)."""
