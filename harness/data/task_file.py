"""Your own classification (or regression) data, described by a short YAML file instead of code.

    harness run --models minilm --tasks ./reviews.yaml

``reviews.yaml``::

    name: reviews                 # required: rows and fine-tunes are found again by it
    description: product reviews, three classes
    data:                         # paths relative to this file; .csv, .jsonl or .parquet
      train: reviews/train.csv
      validation: reviews/dev.csv
      test: reviews/test.csv      # optional; scored instead of validation when given
    text: review                  # one text column, or two for a pair task: [premise, hypothesis]
    label: stars                  # the label column
    labels: [bad, okay, good]     # label names (the column may hold the names or 0..n-1)
    # num_labels: 3               # instead of labels: any number >= 2; or regression: true
    metrics: [accuracy, macro_f1] # the first is the main metric (default: accuracy; pearson, spearmanr
                                  # for regression)

Every problem with the file or its data is one ``DataError`` line: an unknown key or metric, a
missing or unreadable data file, an unknown column, a label outside the declared set, an empty split.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import yaml

from harness.contracts.task import Task
from harness.data.metrics import METRICS
from harness.data.readers import READERS, DataError, normalise, read

KEYS = (
    "name",
    "description",
    "data",
    "text",
    "label",
    "labels",
    "num_labels",
    "regression",
    "metrics",
    "metric",
)
ROLES = ("train", "validation", "test")


def load_task_file(path: str | Path) -> Task:
    """The ``Task`` a task file describes (its data is read when the task is loaded)."""
    path = Path(path).expanduser()
    where = f"task file {path}"
    try:
        spec = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {where}: {exc.strerror if isinstance(exc, OSError) else exc}") from None
    except yaml.YAMLError as exc:
        raise DataError(f"{where} is not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(spec, dict):
        raise DataError(f"{where} must be a mapping with keys {', '.join(KEYS)}")
    if unknown := [key for key in spec if key not in KEYS]:
        raise DataError(
            f"{where}: unknown key(s) {', '.join(map(str, unknown))}; valid keys: {', '.join(KEYS)}"
        )
    files = _data_files(spec.get("data"), path.parent, where)
    text = spec.get("text")
    text_fields = tuple([text] if isinstance(text, str) else text or ())
    if not 1 <= len(text_fields) <= 2 or not all(isinstance(c, str) for c in text_fields):
        raise DataError(f"{where}: text must name one text column, or a list of two for a pair task")
    num_labels, label_names = _labels(spec, where)
    metrics = _metrics(spec, num_labels, where)
    return Task(
        name=_name(spec, where),
        description=str(spec.get("description") or f"from {path}"),
        text_fields=text_fields,
        label_field=str(spec.get("label") or "label"),
        num_labels=num_labels,
        label_names=label_names,
        metrics=metrics,
        main_metric=metrics[0],
        splits={role: role for role in files},
        load=lambda task, seed: _load(task, files, path),
        sources=(path, *files.values()),
    )


def _name(spec: dict, where: str) -> str:
    """The task's name, required: cells and fine-tunes are found again by it, so two files that both fell
    back to their stem (every ``task.yaml`` would be "task") would share them."""
    name = spec.get("name")
    if not isinstance(name, str) or not name.strip():
        raise DataError(f"{where} has no name: give it one (name: my-task), unique among your task files")
    return name.strip()


def _data_files(data: Any, folder: Path, where: str) -> dict[str, Path]:
    if not isinstance(data, dict) or not {"train", "validation"} <= set(data):
        raise DataError(f"{where}: data must name a train and a validation file (and optionally test)")
    if unknown := [role for role in data if role not in ROLES]:
        raise DataError(
            f"{where}: unknown split(s) {', '.join(map(str, unknown))} under data; valid: {', '.join(ROLES)}"
        )
    files = {}
    for role, name in data.items():
        file = (folder / str(name)).expanduser()
        if file.suffix not in READERS:
            raise DataError(f"{where}: {role} file {file.name} is not one of {', '.join(READERS)}")
        if not file.is_file():
            raise DataError(f"{where}: {role} file {file} does not exist")
        files[role] = file
    return files


def _labels(spec: dict, where: str) -> tuple[int, tuple[str, ...]]:
    """(num_labels, label names); num_labels 1 is a regression target."""
    names = spec.get("labels")
    if spec.get("regression"):
        if names is not None or spec.get("num_labels") is not None:
            raise DataError(f"{where}: regression: true takes no labels or num_labels")
        return 1, ()
    if names is not None:
        if not isinstance(names, list) or len(names) < 2 or len(set(map(str, names))) != len(names):
            raise DataError(f"{where}: labels must be a list of at least two distinct label names")
        if spec.get("num_labels") not in (None, len(names)):
            raise DataError(
                f"{where}: num_labels {spec['num_labels']} disagrees with the {len(names)} labels"
            )
        return len(names), tuple(map(str, names))
    count = spec.get("num_labels")
    if isinstance(count, bool) or not isinstance(count, int) or count < 2:
        raise DataError(
            f"{where}: give labels (a list of names), num_labels (a whole number >= 2) or "
            f"regression: true; got num_labels {count!r}"
        )
    return count, ()


def _metrics(spec: dict, num_labels: int, where: str) -> tuple[str, ...]:
    given = spec.get("metrics", spec.get("metric"))
    metrics = ([given] if isinstance(given, str) else list(given or [])) or (
        ["pearson", "spearmanr"] if num_labels == 1 else ["accuracy"]
    )
    if unknown := [m for m in metrics if m not in METRICS]:
        raise DataError(
            f"{where}: unknown metric(s) {', '.join(map(str, unknown))}; valid metrics: "
            f"{', '.join(METRICS.names())}"
        )
    if "f1" in metrics and num_labels != 2:
        raise DataError(
            f"{where}: metric f1 scores the positive class of a binary task; use macro_f1 for "
            f"{num_labels if num_labels > 1 else 'a regression'} target"
        )
    return tuple(metrics)


def _load(task: Task, files: dict[str, Path], task_path: Path):
    splits, provenance = {}, {}
    for role, file in files.items():
        splits[role] = normalise(task, read(file), file)  # refuses a file without rows
        provenance[role] = {"name": str(file), "sha256": hashlib.sha256(file.read_bytes()).hexdigest()}
    return splits, {"source": f"task-file:{task_path.resolve()}", "files": provenance}
