"""A cell's identity is everything that made it: a rerun never returns a stale or foreign row.

One tiny fine-tune run is made once; each case copies its folder and reruns it with one thing changed.
Every change must be refused before any work (one line naming it, exit 2, the rows untouched); the
unchanged rerun must resume (nothing recomputed)."""

from __future__ import annotations

import json
import random
import shutil

import pandas as pd
import pytest
from transformers import BertForSequenceClassification

from harness import cli

TASK_FILE = """\
name: stars
data:
  train: data/train.csv
  validation: data/dev.csv
text: review
label: stars
num_labels: 2
"""
BASE = [
    "--speedups",
    "1,2",
    "--epochs",
    "1",
    "--max-train",
    "40",
    "--batch-size",
    "8",
    "--max-length",
    "32",
    "--repeats",
    "1",
    "--no-progress",
]


def _write_data(folder, flip: bool = False) -> None:
    rng = random.Random(0)
    data = folder / "data"
    data.mkdir(exist_ok=True)
    for name, n in (("train.csv", 48), ("dev.csv", 16)):
        labels = [rng.randrange(2) for _ in range(n)]
        reviews = [
            " ".join(rng.choice(["great", "funny"] if y else ["awful", "dull"]) for _ in range(3))
            for y in labels
        ]
        pd.DataFrame({"review": reviews, "stars": [1 - y if flip else y for y in labels]}).to_csv(
            data / name, index=False
        )


@pytest.fixture(scope="module")
def made(tiny_checkpoint, tmp_path_factory):
    """(folder of task file, data and checkpoint, the finished run folder, the checkpoint folder)."""
    root = tmp_path_factory.mktemp("trust-cells")
    _write_data(root)
    (root / "stars.yaml").write_text(TASK_FILE)
    checkpoint = root / "encoder"
    BertForSequenceClassification.from_pretrained(tiny_checkpoint).bert.save_pretrained(checkpoint)
    for name in [*tiny_checkpoint.glob("*tok*"), tiny_checkpoint / "vocab.txt"]:
        shutil.copy(name, checkpoint)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HARNESS_CACHE", str(root / "cache"))
        assert (
            cli.main(
                [
                    "run",
                    "--models",
                    str(checkpoint),
                    "--tasks",
                    str(root / "stars.yaml"),
                    "--out",
                    str(root / "run"),
                    *BASE,
                ]
            )
            == 0
        )
    return root


@pytest.fixture
def rerun(made, tmp_path, monkeypatch, capsys):
    """Copy the finished run (and its inputs) to tmp_path; returns run(extra args) -> (code, stderr, rows)."""
    for name in ("data", "encoder", "run"):
        shutil.copytree(made / name, tmp_path / name)
    shutil.copy(made / "stars.yaml", tmp_path)
    monkeypatch.setenv("HARNESS_CACHE", str(made / "cache"))
    capsys.readouterr()
    results = tmp_path / "run" / "results.jsonl"  # the model is named by its path: rows name the copy
    results.write_text(results.read_text().replace(str(made / "encoder"), str(tmp_path / "encoder")))
    before = results.read_text()

    def run(*args, base=BASE, tasks=None):
        code = cli.main(
            [
                "run",
                "--models",
                str(tmp_path / "encoder"),
                "--tasks",
                tasks or str(tmp_path / "stars.yaml"),
                "--out",
                str(tmp_path / "run"),
                *base,
                *args,
            ]
        )
        after = (tmp_path / "run" / "results.jsonl").read_text()
        return code, capsys.readouterr().err, after == before, after

    return run


def _with(option: str, value: str) -> list[str]:
    base = list(BASE)
    if option in base:
        base[base.index(option) + 1] = value
    else:
        base += [option, value]
    return base


def test_rows_carry_their_identity_and_the_same_rerun_resumes(made, rerun):
    rows = [json.loads(line) for line in (made / "run" / "results.jsonl").read_text().splitlines()]
    identity = rows[0]["identity"]
    assert rows[1]["identity"] == identity and rows[0]["schema"] >= 2
    assert identity["checkpoint"].startswith("local:") and identity["settings"]["train"]["epochs"] == 1.0
    assert identity["settings"]["max_train"] == 40 and identity["settings"]["repeats"] == 1
    code, err, unchanged, _ = rerun()
    assert code == 0 and unchanged, err


@pytest.mark.parametrize(
    "option, value, named",
    [
        ("--epochs", "2", "--epochs 1.0 -> 2.0"),
        ("--max-train", "24", "--max-train 40 -> 24"),
        ("--limit", "8", "--limit None -> 8"),
        ("--batch-size", "4", "--batch-size 8 -> 4"),
        ("--max-length", "24", "--max-length 32 -> 24"),
        ("--repeats", "2", "--repeats 1 -> 2"),
        ("--search", "2", "--search 8 -> 2"),
    ],
)
def test_a_rerun_with_other_settings_is_refused_naming_the_change(rerun, option, value, named):
    code, err, unchanged, _ = rerun(base=_with(option, value))
    assert code == 2 and named in err and err.count("\n") == 1 and unchanged, err
    assert "give --out a new folder" in err


def test_a_new_speedup_with_another_training_budget_is_refused(rerun):
    code, err, unchanged, _ = rerun(base=_with("--speedups", "3") + ["--epochs", "2"])
    assert code == 2 and "--epochs 1.0 -> 2.0" in err and unchanged, err


def test_a_new_speedup_with_the_same_settings_is_added(rerun):
    code, err, unchanged, after = rerun(base=_with("--speedups", "1,2,3"))
    assert code == 0 and not unchanged, err
    assert [json.loads(line)["speedup"] for line in after.splitlines()] == [1.0, 2.0, 3.0]


def test_flipped_labels_are_not_the_old_task(rerun, tmp_path):
    _write_data(tmp_path, flip=True)
    code, err, unchanged, _ = rerun()
    assert code == 2 and "other content of task 'stars'" in err and unchanged, err


def test_changed_weights_are_not_the_old_checkpoint(rerun, tmp_path):
    weights = tmp_path / "encoder" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one bit of one weight value: the header and size stay the same
    weights.write_bytes(bytes(data))
    code, err, unchanged, _ = rerun()
    assert code == 2 and "from other weights of" in err and unchanged, err


def test_two_task_files_of_one_name_are_refused_in_one_run(rerun, tmp_path):
    other = tmp_path / "other.yaml"
    other.write_text(TASK_FILE.replace("validation: data/dev.csv", "validation: data/train.csv"))
    code, err, unchanged, _ = rerun(tasks=f"{tmp_path / 'stars.yaml'},{other}")
    assert code == 2 and "are both named 'stars'" in err and unchanged, err


def test_a_task_file_without_a_name_is_refused(rerun, tmp_path):
    nameless = tmp_path / "task.yaml"
    nameless.write_text(TASK_FILE.replace("name: stars\n", ""))
    code, err, unchanged, _ = rerun(tasks=str(nameless))
    assert code == 2 and "has no name" in err and err.count("\n") == 1 and unchanged, err


def test_rows_made_before_identities_take_no_new_cells(rerun, tmp_path):
    results = tmp_path / "run" / "results.jsonl"
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    for row in rows:
        del row["identity"], row["schema"]
    results.write_text("".join(json.dumps(row) + "\n" for row in rows))
    code, err, _, after = rerun(base=_with("--speedups", "3"))
    assert code == 2 and "before rows recorded what made them" in err, err
    assert len(after.splitlines()) == 2
