"""Your own classification data without code: a task file (YAML) used by `harness run --tasks`, and one
clear line with exit 2 for every bad task file."""

from __future__ import annotations

import json
import random
import shutil

import pandas as pd
import pytest
from transformers import BertForSequenceClassification

from harness import cli
from harness.data import get_task, load_task

LABELS = ["bad", "okay", "good"]
WORDS = {
    0: ["awful", "boring", "dull", "weak"],
    1: ["fine", "plot", "story"],
    2: ["great", "funny", "bright", "strong"],
}
TASK_FILE = """\
name: stars
description: three-class reviews
data:
  train: data/train.csv
  validation: data/dev.jsonl
  test: data/test.parquet
text: review
label: stars
labels: [bad, okay, good]
metrics: [macro_f1, accuracy]
"""


def _rows(n: int, seed: int) -> pd.DataFrame:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.randrange(3)
        words = [rng.choice(WORDS[label]) for _ in range(rng.randint(1, 3))] + ["the", "movie", "was"][
            : rng.randint(1, 3)
        ]
        rng.shuffle(words)
        rows.append({"review": " ".join(words), "stars": LABELS[label] if rng.random() < 0.5 else label})
    return pd.DataFrame(rows).astype({"stars": str})


@pytest.fixture
def task_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "data"
    data.mkdir()
    _rows(60, 0).to_csv(data / "train.csv", index=False)
    _rows(24, 1).to_json(data / "dev.jsonl", orient="records", lines=True)
    _rows(30, 2).to_parquet(data / "test.parquet")
    (tmp_path / "stars.yaml").write_text(TASK_FILE)
    return tmp_path


@pytest.fixture
def encoder_checkpoint(tiny_checkpoint, tmp_path):
    """The tiny BERT without its 2-class head: the task's 3-class head is new, as for minilm."""
    folder = tmp_path / "encoder"
    BertForSequenceClassification.from_pretrained(tiny_checkpoint).bert.save_pretrained(folder)
    for name in [*tiny_checkpoint.glob("*tok*"), tiny_checkpoint / "vocab.txt"]:
        shutil.copy(name, folder)
    return folder


def test_task_file_loads_three_classes_from_three_formats(task_dir):
    task = get_task("./stars.yaml")
    assert (task.name, task.num_labels, task.main_metric, task.eval_splits) == (
        "stars",
        3,
        "macro_f1",
        ("test",),
    )
    data = load_task(task)
    assert {role: len(frame) for role, frame in data.splits.items()} == {
        "train": 60,
        "validation": 24,
        "test": 30,
    }
    assert set(data.splits["train"]["label"]) == {0, 1, 2} and list(data.splits["test"].columns) == [
        "review",
        "label",
    ]
    assert data.provenance["source"].startswith("task-file:") and len(data.provenance["files"]) == 3


def test_run_on_a_task_file(task_dir, encoder_checkpoint):
    out = task_dir / "runs" / "stars"
    assert (
        cli.main(
            [
                "run",
                "--models",
                str(encoder_checkpoint),
                "--tasks",
                "./stars.yaml",
                "--speedups",
                "1,2",
                "--epochs",
                "1",
                "--batch-size",
                "8",
                "--max-length",
                "32",
                "--repeats",
                "1",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [(r["task"], r["speedup"]) for r in rows] == [("stars", 1.0), ("stars", 2.0)]
    for row in rows:
        assert row["main_metric"] == "macro_f1" and set(row["metrics"]) == {"macro_f1", "accuracy"}
        assert row["score"] == row["metrics"]["macro_f1"] and row["data"]["sizes"]["test"] == 30
    assert (out / "leaderboards" / "stars.md").read_text().count(
        "| acc-decay-distill | stars | finetune |"
    ) == 2


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda d: d.joinpath("stars.yaml").write_text(TASK_FILE.replace("text: review", "text: comment")),
            "expected columns comment, stars in",
        ),
        (
            lambda d: pd.DataFrame({"review": ["a b"], "stars": ["superb"]}).to_csv(
                d / "data" / "train.csv", index=False
            ),
            "1 bad values in column stars (first: 'superb' in data row 1); expected 0..2 or bad, okay, good",
        ),
        (
            lambda d: pd.DataFrame({"review": [], "stars": []}).to_parquet(d / "data" / "test.parquet"),
            "test.parquet has no data rows; every split needs at least one",
        ),
        (lambda d: d.joinpath("data", "dev.jsonl").write_text("{not json\n"), "could not parse"),
        (lambda d: d.joinpath("data", "train.csv").unlink(), "train file"),
        (
            lambda d: d.joinpath("stars.yaml").write_text(
                TASK_FILE.replace("metrics: [macro_f1, accuracy]", "metrics: [f1]")
            ),
            "use macro_f1",
        ),
        (lambda d: d.joinpath("stars.yaml").write_text(TASK_FILE + "labelz: 3\n"), "unknown key(s) labelz"),
        (lambda d: d.joinpath("stars.yaml").write_text("data: [\n"), "is not valid YAML"),
    ],
)
def test_bad_task_files_are_one_line_and_exit_2(task_dir, tiny_checkpoint, capsys, change, message):
    change(task_dir)
    code = cli.main(
        [
            "run",
            "--models",
            str(tiny_checkpoint),
            "--tasks",
            "./stars.yaml",
            "--speedups",
            "1",
            "--out",
            str(task_dir / "runs" / "bad"),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.startswith("harness: error:"), err
    assert err.count("\n") == 1 and not (task_dir / "runs" / "bad" / "results.jsonl").exists()
