"""``harness.prune`` and ``harness.from_pretrained``: the user-facing entry points.

``prune(model, method="acc", speedup=2.0)`` modifies a Hugging Face model in place and returns it: the
model's family (``harness.models.FAMILIES``) routes its forward through the shared pruned layer loop,
which runs the very same weight modules, and the model's class becomes a subclass of its own class with
the same name, adding the public surface of ``harness.pruning.pruned_model.PrunedModelMixin``
(``set_speedup``, ``last_kept``, ``last_forward``, ``pruning``, ...).  Forward signature, output
classes, state-dict keys and the ``architectures`` written by ``save_pretrained`` are unchanged, so plain
transformers can still read a pruned checkpoint's weights.

A pruned checkpoint loads pruned: ``save_pretrained`` stores the settings in ``config.harness_pruning``,
``harness.from_pretrained`` restores them, and so does transformers' own ``from_pretrained`` (the Auto
classes and the model classes alike) once ``harness`` is imported: importing it wraps
``PreTrainedModel.from_pretrained`` (``_restoring_pruning``).  Why this and not another class name in
``architectures`` (an Auto-class registration or remote code): those would make the checkpoint unreadable,
or readable only with ``trust_remote_code``, without the harness.  What is left: in a process that never
imports ``harness``, transformers still loads it as the dense model without a word (no config.json field
makes it warn; only a fake tensor in the weights would, as an "unexpected" key); the ``harness_pruning``
field in config.json is the only sign.

This module sits above ``harness.models`` and ``harness.pruning``: the layering runs strictly downward.
The layers that prune models (measure, training, report, runners, cli) import it from here, never through
``import harness`` (README, Layout; ``lint-imports`` checks both).
"""

from __future__ import annotations

import functools

import torch
import transformers
from transformers import AutoConfig, PreTrainedModel

from harness.models import family_for
from harness.models.checkpoint_files import load_exactly
from harness.pruning.methods import METHODS
from harness.pruning.pruned_model import PrunedModelMixin, attach
from harness.pruning.pruner import PruningSettings
from harness.registry import HarnessError


def prune(model: torch.nn.Module, method: str = "acc", speedup: float = 1.0, **options) -> torch.nn.Module:
    """Make ``model`` latency-adjustable with token pruning; returns the same object.

    ``method``, ``speedup`` and ``options`` are the fields of ``PruningSettings`` (``profile``,
    ``r_min``, ``protect_first``, ``protect_last``, ``seed``; see its docstrings).  Defaults come from
    the model's family.  Pruning an already pruned model just updates its settings.
    """
    family = family_for(model)
    previous = getattr(model, "harness_pruner", None)
    if previous is not None and previous.settings.method == method and "method_state" not in options:
        options["method_state"] = previous.settings.method_state  # re-pruning keeps what was learned
    settings = PruningSettings(method=method, speedup=1.0, **{**family.default_options, **options})
    family.check(model, settings)
    refusal = METHODS.get(method).refusal(family)  # the family's kind, or a family-specific method's list
    if refusal:
        raise HarnessError(refusal)
    attach(model, family, settings)
    model.set_speedup(speedup)
    return model


def from_pretrained(path: str, **kwargs) -> torch.nn.Module:
    """Load a checkpoint saved from a pruned model and restore its pruning settings.

    The class comes from the checkpoint's ``architectures``; a checkpoint without stored settings is
    pruned with the defaults (speedup 1), so the same call serves stock checkpoints too.  The weights must
    fill that class exactly (``load_exactly``; unused pre-training heads aside): a missing, unknown or
    mis-shaped tensor is an error, not a random initialisation.
    """
    config = AutoConfig.from_pretrained(path)
    architectures = getattr(config, "architectures", None) or []
    cls = getattr(transformers, architectures[0], None) if architectures else None
    if cls is None:
        raise HarnessError(f"{path}: config.json names no transformers architecture ({architectures!r})")
    model = load_exactly(cls, path, str(path), **kwargs)
    return prune(model, **(getattr(config, "harness_pruning", None) or {}))


def _restoring_pruning(load):
    """``PreTrainedModel.from_pretrained`` that also restores the pruning a checkpoint's config stores.

    Why: a checkpoint saved from a pruned model otherwise loads through transformers' own loaders as the
    dense model, silently: numbers measured with it would not be the pruned model's.  Checkpoints without
    ``harness_pruning`` load as before; ``output_loading_info`` still returns ``(model, info)``.
    """

    @functools.wraps(load)
    def from_pretrained(cls, *args, **kwargs):
        loaded = load(cls, *args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        settings = getattr(model.config, "harness_pruning", None)
        if settings and not isinstance(model, PrunedModelMixin):
            prune(model, **settings)
        return loaded

    from_pretrained.harness_restores_pruning = True
    return from_pretrained


if not getattr(PreTrainedModel.from_pretrained, "harness_restores_pruning", False):  # once, even if reloaded
    PreTrainedModel.from_pretrained = classmethod(
        _restoring_pruning(PreTrainedModel.from_pretrained.__func__)
    )
