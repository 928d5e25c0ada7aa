"""Model families (how to prune an architecture) and model aliases (which checkpoint a name means).

``FAMILIES`` holds one ``Family`` (``harness.contracts.family``) per architecture, each in its own
module, in the spirit of transformers' one-file-per-model layout; ``MODELS`` (``catalog.py``) maps the
short names users type (``--models bert,minilm``) to a checkpoint and its family.  Both also hold what
other distributions declare in the ``harness.models`` entry-point group: a ``Family`` joins
``FAMILIES``, a ``ModelSpec`` joins ``MODELS``.  This is the one list of family names.
"""

from __future__ import annotations

import importlib

from torch import nn

from harness.contracts.family import Family
from harness.registry import HarnessError, Registry, instance

BUILT_IN = ("bert", "gpt2", "llama", "qwen2", "t5")
"""The built-in family modules of this package, in registration order.  Each defines ``FAMILY``, its
``Family`` instance, so a new family is its module and its name here (one line)."""

FAMILIES: Registry[Family] = Registry(
    "model family",
    group="harness.models",
    accepts=lambda obj: isinstance(instance(obj), Family),
    adapt=instance,
)
for _module in BUILT_IN:
    _family = importlib.import_module(f"{__name__}.{_module}").FAMILY
    FAMILIES.register(_family.name, _family)


def family_for(model: nn.Module) -> Family:
    """The family that can prune ``model``, or a clear error naming what is supported."""
    for _, family in FAMILIES.items():
        if family.supports(model):
            return family
    raise HarnessError(
        f"cannot prune a {type(model).__name__}: supported are "
        + "; ".join(f"{family.description}" for _, family in FAMILIES.items())
    )


def family_of_model_type(model_type: str, checkpoint: str) -> Family:
    """The family serving checkpoints of ``config.model_type``, or one clear error."""
    for _, family in FAMILIES.items():
        if model_type in family.model_types:
            return family
    supported = ", ".join(t for _, family in FAMILIES.items() for t in family.model_types)
    raise HarnessError(f"{checkpoint} is a {model_type!r} model; supported architectures: {supported}")
