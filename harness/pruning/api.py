"""``harness.prune`` and ``harness.from_pretrained``: the user-facing entry points.

``prune(model, method="acc", speedup=2.0)`` modifies a Hugging Face model in place and returns it:
the model's family adapter (``harness.models.FAMILIES``) swaps in a pruning encoder that runs the very
same weight modules, and the model's class becomes a subclass of its own class with the same name,
adding ``set_speedup``, ``last_kept`` and ``pruning``.  Forward signature, output classes, state-dict
keys and the ``architectures`` written by ``save_pretrained`` are unchanged, so a pruned checkpoint
still loads as a stock dense model in plain transformers; ``harness.from_pretrained`` reads the
pruning settings that ``save_pretrained`` stored in ``config.harness_pruning`` and restores them.
"""

from __future__ import annotations

import copy
from functools import lru_cache

import torch
import transformers
from transformers import AutoConfig

from harness.pruning.pruner import Pruner, PruningSettings
from harness.registry import HarnessError


class PrunedModelMixin:
    """Methods every pruned model gains; the state lives in ``self.harness_pruner``."""

    harness_pruner: Pruner

    def set_speedup(self, speedup: float) -> None:
        """Run the next forwards at ``speedup`` (FLOPs(dense)/FLOPs(pruned)); no retraining."""
        self.harness_pruner.set_speedup(speedup)
        self.config.harness_pruning = self.harness_pruner.settings.to_dict()

    @property
    def pruning(self) -> PruningSettings:
        return self.harness_pruner.settings

    @property
    def last_kept(self) -> list[list[list[int]]]:
        """Per layer, per sample: the original token positions the last forward kept (sorted)."""
        return self.harness_pruner.last_kept


@lru_cache(maxsize=None)
def _pruned_class(cls: type) -> type:
    # Same name as the stock class, so save_pretrained's "architectures" stays loadable by transformers.
    return type(cls.__name__, (PrunedModelMixin, cls), {"__module__": __name__, "__qualname__": cls.__name__})


def stock_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A stock transformers model with the same weights and its class's default attention.

    The dense reference for measured speedups: pruned or not, ``model`` is copied into its original
    class built afresh from its config, so nothing of the wrapper is timed.
    """
    cls = type(model).__bases__[1] if isinstance(model, PrunedModelMixin) else type(model)
    config = copy.deepcopy(model.config)
    config.__dict__.pop("harness_pruning", None)
    config._attn_implementation = None
    stock = cls(config)
    stock.load_state_dict(model.state_dict())
    return stock.eval()


def prune(model: torch.nn.Module, method: str = "acc", speedup: float = 1.0, **options) -> torch.nn.Module:
    """Make ``model`` latency-adjustable with token pruning; returns the same object.

    options: ``profile`` ("tilt" | "geometric"), ``r_min`` (retention floor), ``protect_first``
    (leading valid tokens always kept; BERT's pooler needs [CLS], so at least 1 there),
    ``protect_last`` (trailing valid tokens always kept; decoders need the last one), ``min_keep``
    (no layer keeps fewer tokens; decoders default to 16, see ``GPT2Family``), ``seed`` (for
    the random baseline).  Defaults come from the model's family.  Pruning an already pruned model
    just updates its settings.
    """
    from harness.models import family_for

    family = family_for(model)
    settings = PruningSettings(method=method, speedup=1.0, **{**family.default_options, **options})
    family.check(model, settings)
    if isinstance(model, PrunedModelMixin):
        model.harness_pruner.settings = settings
    else:
        model.harness_pruner = Pruner(family.arch_spec(model), settings, family.max_length(model))
        family.install(model, model.harness_pruner)
        model.__class__ = _pruned_class(type(model))
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
