"""The official GLUE metrics, computed with scikit-learn and scipy.

Why not ``evaluate.load("glue", ...)``: it downloads its metric scripts from the hub, which is unreachable
here.  The definitions below are the ones that script uses (accuracy; binary F1 with positive label 1;
Matthews correlation; Pearson and Spearman correlation), so scores are comparable with published GLUE
numbers.  Values are plain floats on a 0..1 scale.  A task's set of them is
``harness.data.tasks.compute_metrics``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from scipy import stats
from sklearn import metrics as skm

from harness.registry import Registry

Metric = Callable[[Sequence, Sequence], float]
METRICS: Registry[Metric] = Registry("metric")


def _check(predictions: Sequence, references: Sequence) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if len(references) == 0:
        raise ValueError("no references to score")


@METRICS.register("accuracy")
def accuracy(predictions: Sequence, references: Sequence) -> float:
    _check(predictions, references)
    return float(skm.accuracy_score(references, predictions))


@METRICS.register("f1")
def f1(predictions: Sequence, references: Sequence) -> float:
    """Binary F1 of the positive class (label 1), as GLUE scores MRPC and QQP."""
    _check(predictions, references)
    return float(skm.f1_score(references, predictions, pos_label=1, average="binary"))


@METRICS.register("macro_f1")
def macro_f1(predictions: Sequence, references: Sequence) -> float:
    """F1 averaged over the classes with equal weight: the usual main metric for unbalanced multi-class data."""
    _check(predictions, references)
    return float(skm.f1_score(references, predictions, average="macro"))


@METRICS.register("matthews_correlation")
def matthews_corrcoef(predictions: Sequence, references: Sequence) -> float:
    _check(predictions, references)
    return float(skm.matthews_corrcoef(references, predictions))


@METRICS.register("pearson")
def pearson(predictions: Sequence, references: Sequence) -> float:
    """Pearson r; NaN when either side is constant (the correlation is undefined)."""
    _check(predictions, references)
    return float(stats.pearsonr(predictions, references)[0])


@METRICS.register("spearmanr")
def spearmanr(predictions: Sequence, references: Sequence) -> float:
    _check(predictions, references)
    return float(stats.spearmanr(predictions, references)[0])
