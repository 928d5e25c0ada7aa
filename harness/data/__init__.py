"""Evaluation tasks (GLUE, rt-polarity, boolq, held-out text, your own task files), their loaders and metrics."""

from .metrics import METRICS, accuracy, compute_metrics, f1, matthews_corrcoef, pearson, spearmanr
from .tasks import TASKS, DataError, Task, TaskData, TaskSpec, get_task, load_task

__all__ = [
    "METRICS", "TASKS", "DataError", "Task", "TaskData", "TaskSpec", "get_task", "accuracy", "compute_metrics", "f1",
    "load_task", "matthews_corrcoef", "pearson", "spearmanr",
]
