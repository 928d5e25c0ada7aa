"""Training recipes of methods that train their own way.

Every recipe runs the one fine-tuning loop (``harness.runners.glue.fine_tune``: data order, optimizer,
schedule, budget); what differs is each step's loss (``Method.train_step``) and any parameters the
method adds (``Method.begin_training``).  So the training budget (epochs, examples, batch size) is
the same for every method by construction; the recipe's name is part of the fine-tune cache key.
"""

from __future__ import annotations

from harness.contracts.method import RECIPES


def method_steps(loaded, train_frame, task, settings, progress: bool = True) -> None:
    """The shared fine-tuning loop with the method's own step (imported late: runners sit above pruning)."""
    from harness.runners.glue import fine_tune

    fine_tune(loaded, train_frame, task, settings, progress)


for _name in ("lat-sandwich", "ltp-soft-masks", "layerdrop"):
    RECIPES.register(_name, method_steps)
