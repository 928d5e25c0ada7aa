"""Evaluation tasks (GLUE, rt-polarity, boolq, held-out text, your own task files), their loaders and metrics."""

from .metrics import METRICS, accuracy, f1, matthews_corrcoef, pearson, spearmanr
from .readers import DataError
from .tasks import TASKS, Task, TaskData, TaskSpec, compute_metrics, get_task, load_task

__all__ = [
    "METRICS",
    "TASKS",
    "DataError",
    "Task",
    "TaskData",
    "TaskSpec",
    "get_task",
    "accuracy",
    "compute_metrics",
    "f1",
    "load_task",
    "matthews_corrcoef",
    "pearson",
    "spearmanr",
]
