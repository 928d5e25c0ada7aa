"""The losses of methods that train their own way, and the names of their training recipes.

Every recipe runs the one fine-tuning loop (``harness.training.loop.fine_tune``: data order, optimizer,
schedule, budget); what differs is each step's loss (``Method.train_step``, built from the losses here)
and any parameters the method adds (``Method.begin_training``).  So the training budget (epochs,
examples, batch size) is the same for every method by construction; the recipe's name is part of the
fine-tune cache key.  The loop sits above pruning, so the methods name their recipe (``STEP_RECIPES``)
and ``harness.training.loop`` registers the loop under those names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

STEP_RECIPES = ("lat-sandwich", "ltp-soft-masks", "layerdrop-top", "acc-sandwich")
"""The built-in methods' own recipes (``Method.recipe``): the shared loop with the method's step."""


def sandwich_loss(
    model,
    batch: dict,
    labels: torch.Tensor,
    full: Callable[[], None],
    subs: Iterable[Callable[[], None]],
    restore: Callable[[], None],
) -> torch.Tensor:
    """The sandwich rule: the full model on the labels, plus each sub-model learning from the full
    model's outputs.  ``full`` and each of ``subs`` put the model in that setting; ``restore`` puts
    back the one the training loop set, whatever happens."""
    try:
        full()
        dense = model(**batch, labels=labels)
        teacher = dense.logits.detach()
        loss = dense.loss
        for sub in subs:
            sub()
            loss = loss + distillation(model(**batch).logits, teacher)
        return loss
    finally:
        restore()


def drawn_sandwich(model, batch: dict, labels: torch.Tensor) -> torch.Tensor:
    """The sandwich rule with one sub-model: the full model, and the model at the speedup the
    offline-tuning loop drew learning from it (``acc-distill``, ``acc-decay-distill``)."""
    drawn = model.pruning.speedup
    return sandwich_loss(
        model,
        batch,
        labels,
        lambda: model.set_speedup(1.0),
        [lambda: model.set_speedup(drawn)],
        lambda: model.set_speedup(drawn),
    )


def distillation(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """A sub-model's loss: soft cross-entropy to the full model (squared error for one output)."""
    if student.shape[-1] == 1:
        return torch.nn.functional.mse_loss(student, teacher)
    return -(teacher.softmax(dim=-1) * student.log_softmax(dim=-1)).sum(dim=-1).mean()
