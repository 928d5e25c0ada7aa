"""The task contract: everything the harness knows of a task, in one definition.

A ``Task`` names its data loader, its metrics and which one is the main one, and the protocols it can
be evaluated under: ``finetune`` (classification or regression on labelled splits) when it has text
fields and labels, ``zero-shot`` (through lm-eval, with the task's YAML) when it names an
``LmEvalTask``; ``LmEvalTask.num_fewshot`` and further protocols leave room for few-shot and
instruction prompt modes.

Register an instance in ``harness.data.tasks.TASKS`` or declare it in the ``harness.tasks``
entry-point group; for your own labelled files no code is needed (``harness run --tasks ./task.yaml``,
see ``harness.data.task_file``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.registry import HarnessError

Loader = Callable[[int], tuple[dict[str, Any], dict[str, Any]]]
"""seed -> (split role -> DataFrame with the text fields and ``label``, provenance)."""


@dataclass(frozen=True)
class LmEvalTask:
    """The task as lm-eval runs it: its configuration name, the folder of its YAML, its main metric."""

    name: str
    main_metric: str
    include_path: Path | None = None
    """The folder holding the YAML (None: the harness's own ``tasks/``)."""
    num_fewshot: int | None = None


@dataclass(frozen=True, kw_only=True)
class Task:
    name: str
    description: str = ""
    text_fields: tuple[str, ...] = ()
    label_field: str = "label"
    num_labels: int = 0
    """Classes (>= 2), or 1 for a regression target; 0 when the task has no fine-tune protocol."""
    label_names: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    main_metric: str = ""
    splits: dict[str, str] = field(default_factory=lambda: {"train": "train", "validation": "validation"})
    """split role -> the split's name at the source."""
    load: Loader | None = field(default=None, repr=False, compare=False)
    """Its own data (a pinned asset, the hub, the user's files); None: only ``--data-dir``."""
    hub: tuple[str, str] | None = None
    asset: str | None = None
    lm_eval: LmEvalTask | None = None
    sources: tuple[Path, ...] = field(default=(), compare=False)
    """Files whose bytes define the task (a task file and its data files): a results row names the task by
    their content, so a changed file never resumes into the old rows (``harness.runners.identity``)."""

    @property
    def protocols(self) -> tuple[str, ...]:
        return (("finetune",) if self.text_fields else ()) + (
            ("zero-shot", "finetune-lm") if self.lm_eval else ()
        )

    @property
    def is_regression(self) -> bool:
        return self.num_labels == 1

    @property
    def eval_splits(self) -> tuple[str, ...]:
        """The roles the runner scores, each as its own evaluation.

        A labelled held-out ``test`` split when the task has one (rt-polarity), else the validation
        split(s): GLUE's test labels are private (MNLI: matched and mismatched).
        """
        if "test" in self.splits:
            return ("test",)
        return tuple(role for role in self.splits if role.startswith("validation"))

    @property
    def columns(self) -> list[str]:
        return [*self.text_fields, "label"]

    def check_protocol(self, protocol: str) -> None:
        if protocol not in self.protocols:
            raise HarnessError(
                f"task {self.name!r} has no {protocol} protocol; its protocols: "
                f"{', '.join(self.protocols) or 'none'}"
            )


def main_score(metrics: dict[str, Any], main: str, task: str) -> Any:
    """The main metric's value, or one clear error naming the metrics there are."""
    if main not in metrics:
        raise HarnessError(
            f"task {task!r}: its main metric {main!r} is not among the computed metrics "
            f"({', '.join(metrics) or 'none'})"
        )
    return metrics[main]
