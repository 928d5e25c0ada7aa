"""Evaluation tasks (GLUE, rt-polarity, boolq), their loaders and their official metrics."""

from .metrics import METRICS, accuracy, compute_metrics, f1, matthews_corrcoef, pearson, spearmanr
from .tasks import TASKS, DataError, TaskData, TaskSpec, load_task

__all__ = [
    "METRICS", "TASKS", "DataError", "TaskData", "TaskSpec", "accuracy", "compute_metrics", "f1",
    "load_task", "matthews_corrcoef", "pearson", "spearmanr",
]
