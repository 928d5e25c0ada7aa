"""What ``--protocol finetune-lm`` tunes on (``--train-on``), and the check that it never tunes on a
document a reported score is computed on.

``--train-on`` names, comma-separated:

* lm-eval tasks with a training split (the harness's own, e.g. ``rt-polarity-zs``, ``boolq-zs``,
  ``rt-polarity-recall``, ``heldout-ppl``, or any lm-eval knows): each training document rendered through
  the task's prompt template, the context as ``doc_to_text`` renders it and the continuation the gold
  answer (``target_delimiter`` + choice or target), so tuning on a suite's template is instruction tuning;
* the user's own files (``.jsonl``, ``.csv``, ``.parquet``) of ``text`` rows (the last
  ``TEXT_CONTINUATION_WORDS`` words are the continuation, at most half the row, as heldout-ppl scores a
  document) or ``prompt``/``response`` rows.

``DEFAULT_TRAIN_ON``, the embedded run's mix, is the offline training splits: rt-polarity train through
its zero-shot template, BoolQ train through its, shorter recall items built from rt-polarity train, and
XSum documents outside heldout-ppl's scored ones.  Each source gives at most ``--max-train`` documents
(default ``PER_SOURCE``, a seeded sample), so the large sources do not drown the small ones.

The overlap check (``check_no_overlap``) compares every training document with every document of every
task the sweep evaluates (its whole evaluation split, not only the ``--limit`` scored this time), by
shared runs of 13 words (``harness.data.overlap``).  Documents are compared by their raw fields, not their
rendered prompts, so a shared template is not an overlap.  An overlap is refused with one line; it is
never silently dropped.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from harness.api import prune
from harness.assets.cache import how_checked
from harness.data.overlap import Documents
from harness.data.readers import READERS, read
from harness.data.tasks import get_task
from harness.models.catalog import load_causal_lm, model_spec
from harness.registry import HarnessError
from harness.training.cache import load_or_tune_lm
from harness.training.lm import Example

DEFAULT_TRAIN_ON = ("rt-polarity-zs", "boolq-zs", "rt-polarity-recall", "heldout-ppl")
PER_SOURCE = 1000
"""Documents drawn from each ``--train-on`` source when ``--max-train`` is not given."""
TEXT_CONTINUATION_WORDS = 32


@dataclass(frozen=True)
class TrainingSet:
    examples: tuple[Example, ...]
    documents: tuple[tuple[str, tuple[str, ...]], ...]
    """(source, the document's raw text fields) per example: what the overlap check compares."""
    provenance: dict
    """Per source the examples drawn and available, and ``sha256``: the examples' content, which the
    tuned model's cache key names."""


def training_set(names: tuple[str, ...], per_source: int | None, seed: int) -> TrainingSet:
    """The examples ``--train-on`` names (see the module docstring), each source sampled to ``per_source``."""
    if not names:
        raise HarnessError(
            "--train-on names no training data; give lm-eval tasks or .jsonl/.csv/.parquet files"
        )
    examples, documents, provenance = [], [], {}
    for name in names:
        pairs = _file_pairs(Path(name)) if Path(name).suffix in READERS else _task_pairs(name)
        if not pairs:
            raise HarnessError(f"--train-on {name}: no training rows")
        picked = random.Random(seed).sample(pairs, min(len(pairs), per_source or PER_SOURCE))
        examples += [example for example, _ in picked]
        documents += [(name, fields) for _, fields in picked]
        provenance[name] = {"examples": len(picked), "of": len(pairs)}
    content = json.dumps([[e.context, e.continuation] for e in examples]).encode()
    provenance["sha256"] = hashlib.sha256(content).hexdigest()[:20]
    return TrainingSet(tuple(examples), tuple(documents), provenance)


def _file_pairs(path: Path) -> list[tuple[Example, tuple[str, ...]]]:
    """A user's file of ``text`` or ``prompt``/``response`` rows as examples."""
    if not path.is_file():
        raise HarnessError(f"--train-on {path}: no such file")
    frame = read(path)
    if {"prompt", "response"} <= set(frame.columns):
        rows = zip(frame["prompt"].astype(str), frame["response"].astype(str))
        return [
            (Example(p, r if r.startswith((" ", "\n")) else " " + r), (p, r)) for p, r in rows if r.strip()
        ]
    if "text" in frame.columns:
        return [pair for text in frame["text"].astype(str) if (pair := _text_pair(text))]
    raise HarnessError(
        f"--train-on {path}: needs a 'text' column or 'prompt' and 'response' columns; "
        f"it has {', '.join(map(str, frame.columns)) or 'none'}"
    )


def _text_pair(text: str):
    words = text.split()
    if len(words) < 2:
        return None
    cut = len(words) - min(TEXT_CONTINUATION_WORDS, len(words) // 2)
    return Example(" ".join(words[:cut]), " " + " ".join(words[cut:])), (text,)


@functools.cache
def _lm_eval_task(name: str, include_path: str | None = None):
    """lm-eval's task object, from the harness's own task folder and ``include_path`` (a plugin's), else
    from lm-eval's own tasks (indexing those takes tens of seconds, so only when needed)."""
    for defaults in (False, True):
        manager = _manager(include_path, defaults)
        if manager.match_tasks([name]):
            with _quiet_lm_eval():  # its advice on --metadata, per task, would precede our one-line errors
                loaded = (
                    manager.load([name])["tasks"]
                    if hasattr(manager, "load")
                    else manager.load_task_or_group([name])
                )
            return next(task for task in loaded.values() if task.config.task == name)
    raise HarnessError(
        f"--train-on {name}: not an lm-eval task nor a .jsonl/.csv/.parquet file; the harness's tasks "
        "with a training split include " + ", ".join(DEFAULT_TRAIN_ON)
    )


@contextlib.contextmanager
def _quiet_lm_eval():
    logger = logging.getLogger("lm_eval")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


@functools.cache
def _manager(include_path: str | None, defaults: bool):
    # imported here: lm-eval takes seconds to import, and only tuning and its check need it
    from lm_eval.tasks import TaskManager

    from harness.runners.lm_eval_bridge import TASKS_DIR

    folders = [str(TASKS_DIR), *([include_path] if include_path else [])]
    return TaskManager(include_path=folders, include_defaults=defaults)


def _task_pairs(name: str) -> list[tuple[Example, tuple[str, ...]]]:
    """A task's training documents rendered through its prompt template, with their raw text fields."""
    task = _lm_eval_task(name)
    if not task.has_training_docs():
        raise HarnessError(f"--train-on {name}: the task has no training split")
    return [(_rendered(task, doc), _text_fields(doc)) for doc in task.training_docs()]


def _rendered(task, doc: dict) -> Example:
    context = task.doc_to_text(doc)
    target = task.doc_to_target(doc)
    if task.OUTPUT_TYPE == "multiple_choice":
        choices = task.doc_to_choice(doc)
        target = choices[target] if isinstance(target, int) else target
    elif isinstance(target, list):
        target = target[0]
    return Example(str(context), task.config.target_delimiter + str(target))


def _text_fields(doc: dict) -> tuple[str, ...]:
    fields = []
    for value in doc.values():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str):
                fields.append(item)
    return tuple(fields)


# --- the overlap check ---------------------------------------------------------------------------------


@functools.cache
def _evaluated(lm_tasks: tuple[tuple[str, str | None], ...]) -> Documents:
    """Every document of the evaluation splits of ``lm_tasks`` ((name, include path) pairs), indexed."""
    return Documents(
        field for task in lm_tasks for doc in _lm_eval_task(*task).eval_docs for field in _text_fields(doc)
    )


def check_no_overlap(train: TrainingSet, tasks) -> None:
    """Refuse, in one line, training documents that share text with a document of ``tasks`` (the tasks
    the sweep evaluates, ``harness.contracts.task.Task``; ``harness.data.overlap`` says what sharing is)."""
    lm_tasks = sorted({(t.lm_eval.name, str(t.lm_eval.include_path or "") or None) for t in tasks}, key=str)
    evaluated = _evaluated(tuple(lm_tasks))
    names = ", ".join(name for name, _ in lm_tasks)
    for source, fields in train.documents:
        for field in fields:
            if evaluated.shares(field):
                raise HarnessError(
                    f"--train-on {source} shares text with a document the sweep evaluates ({names}): "
                    f"{field[:80]!r}; tune on other data or evaluate other tasks"
                )


# --- the tuned model, for every protocol that evaluates one ---------------------------------------------


def lm_train_identity(config) -> dict:
    """The tuning settings a tuned model's rows depend on (seed and method are cell coordinates)."""
    settings = asdict(config.lm_train)
    return {
        "train_on": list(config.train_on),
        **{k: v for k, v in settings.items() if k not in ("seed", "method")},
    }


def tuned_model(config, model_name: str, method):
    """``model_name`` tuned under elimination for ``method`` on ``config.train_on`` (cached), pruned with
    ``method``, and the ``train`` context its rows carry.  The training data is checked against every task
    the sweep evaluates first, before any model loads."""
    settings = replace(config.lm_train, seed=config.train.seed, method=method.name)
    training = training_set(tuple(config.train_on), config.max_train, settings.seed)
    check_no_overlap(training, [get_task(name) for name in config.tasks])
    loaded = load_causal_lm(model_name, "pretrained")
    loaded.model.to(config.device)
    started = time.perf_counter()
    kind = model_spec(model_name).family_contract.kind
    loaded, folder, reused = load_or_tune_lm(loaded, training, settings, kind, config.progress)
    prune(loaded.model, method=method.name)
    train = {
        "recipe": "finetune-lm",
        "examples": len(training.examples),
        "epochs": round(settings.steps * settings.batch_size / len(training.examples), 3),
        "cache": str(folder),
        "reused": reused,
        "verified": how_checked(folder),
        "train_on": training.provenance,
        "seconds": None if reused else round(time.perf_counter() - started, 1),
        **asdict(settings),
    }
    return loaded, train
