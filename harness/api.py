"""``harness.prune`` and ``harness.from_pretrained``: the user-facing entry points.

``prune(model, method="acc", speedup=2.0)`` modifies a Hugging Face model in place and returns it: the
model's family (``harness.models.FAMILIES``) routes its forward through the shared pruned layer loop,
which runs the very same weight modules, and the model's class becomes a subclass of its own class with
the same name, adding the public surface of ``harness.pruning.surface.PrunedModelMixin``
(``set_speedup``, ``last_kept``, ``last_forward``, ``pruning``, ...).  Forward signature, output
classes, state-dict keys and the ``architectures`` written by ``save_pretrained`` are unchanged, so a
pruned checkpoint still loads as a stock dense model in plain transformers; ``harness.from_pretrained``
reads the pruning settings that ``save_pretrained`` stored in ``config.harness_pruning`` and restores
them.

This module sits above ``harness.models`` and ``harness.pruning``: the layering runs strictly downward.
"""

from __future__ import annotations

import torch
import transformers
from transformers import AutoConfig

from harness.models import family_for
from harness.pruning.methods import METHODS
from harness.pruning.pruner import PruningSettings
from harness.pruning.surface import attach
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
    supported = METHODS.get(method).families
    if supported is not None and family.name not in supported:
        raise HarnessError(f"method {method!r} supports {', '.join(supported)} models, not {family.name!r} ones")
    attach(model, family, settings)
    model.set_speedup(speedup)
    return model


def from_pretrained(path: str, **kwargs) -> torch.nn.Module:
    """Load a checkpoint saved from a pruned model and restore its pruning settings.

    The class comes from the checkpoint's ``architectures``; a checkpoint without stored settings is
    pruned with the defaults (speedup 1), so the same call serves stock checkpoints too.
    """
    config = AutoConfig.from_pretrained(path)
    architectures = getattr(config, "architectures", None) or []
    cls = getattr(transformers, architectures[0], None) if architectures else None
    if cls is None:
        raise HarnessError(f"{path}: config.json names no transformers architecture ({architectures!r})")
    model = cls.from_pretrained(path, **kwargs)
    return prune(model, **(getattr(config, "harness_pruning", None) or {}))
