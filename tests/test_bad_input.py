"""Every bad input of issue 13 answers with one line and exit 2 (no traceback, no result rows); two runs
never write the same cell twice (run-folder lock, tested with two processes); reports land under the run
folder or --report-dir and never over another run's."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from cli_checks import one_line_error, random_run_args, run_args

import harness
from harness import cli
from harness.registry import HarnessError

REPO = Path(harness.__file__).resolve().parents[1]


def sentiment_files(folder: Path, train_texts=None) -> Path:
    folder.mkdir()
    train = pd.DataFrame({"sentence": train_texts or ["good film"], "label": [1] * len(train_texts or [0])})
    train.to_csv(folder / "train.csv", index=False)
    pd.DataFrame({"sentence": ["bad film"], "label": [0]}).to_csv(folder / "validation.csv", index=False)
    return folder


def header_only(workdir, checkpoint, data):
    folder = sentiment_files(workdir / "header-only")
    (folder / "train.csv").write_text("sentence,label\n")
    return run_args(checkpoint, folder)


def empty_texts(workdir, checkpoint, data):
    return run_args(checkpoint, sentiment_files(workdir / "empty", ["", "good", "  ", "bad"]))


def damaged_checkpoint(change):
    """A copy of the tiny checkpoint, changed by ``change(folder)``, run on the tiny data."""

    def setup(workdir, checkpoint, data):
        folder = workdir / "checkpoint"
        shutil.copytree(checkpoint, folder)
        change(folder)
        return run_args(folder, data)

    return setup


def only_pickle(folder):
    import torch
    from safetensors.torch import load_file

    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()


def other_tokenizer(folder):
    from transformers import BertTokenizerFast

    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).unlink()
    (folder / "vocab.txt").write_text(
        "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *map(str, range(95))])
    )
    BertTokenizerFast.from_pretrained(folder).save_pretrained(folder)


def lm_eval(*args):
    return lambda workdir, checkpoint, data: ["lm-eval", *args]


CASES = {
    "epochs-nan": (
        lambda w, c, d: run_args(c, d, "--epochs", "nan"),
        "--epochs must be a finite number > 0, got nan",
    ),
    "epochs-inf": (
        lambda w, c, d: run_args(c, d, "--epochs", "inf"),
        "--epochs must be a finite number > 0, got inf",
    ),
    "max-length-beyond-model": (
        lambda w, c, d: ["run", "--models", "bert", "--max-length", "100000"],
        "--max-length 100000 exceeds bert's maximum input length of 512 tokens",
    ),
    "max-eval-negative": (
        lambda w, c, d: run_args(c, d, "--max-eval", "-1"),
        "--max-eval must be a positive integer, got -1",
    ),
    "max-eval-zero": (
        lambda w, c, d: run_args(c, d, "--max-eval", "0"),
        "--max-eval must be a positive integer, got 0",
    ),
    "max-train-zero": (
        lambda w, c, d: run_args(c, d, "--max-train", "0"),
        "--max-train must be a positive integer, got 0",
    ),
    "data-header-only": (header_only, "train.csv has no data rows; every split needs at least one"),
    "data-empty-texts": (empty_texts, "train.csv: 2 rows have an empty sentence (data rows 1, 3)"),
    "checkpoint-without-weights": (
        damaged_checkpoint(lambda f: (f / "model.safetensors").unlink()),
        "has no weights: expected model.safetensors",
    ),
    "checkpoint-truncated-weights": (
        damaged_checkpoint(lambda f: os.truncate(f / "model.safetensors", 5000)),
        "model.safetensors is damaged or truncated",
    ),
    "checkpoint-only-pickle": (
        damaged_checkpoint(only_pickle),
        "has only pytorch_model.bin, pickled weights, which the harness does not unpickle",
    ),
    "checkpoint-without-tokenizer": (
        damaged_checkpoint(
            lambda f: [(f / n).unlink() for n in ("tokenizer.json", "tokenizer_config.json", "vocab.txt")]
        ),
        "has no tokenizer files",
    ),
    "checkpoint-other-tokenizer": (
        damaged_checkpoint(other_tokenizer),
        "its tokenizer has 100 tokens but the model's vocabulary has 31",
    ),
    "lm-eval-missing-folder": (
        lm_eval(
            "--model",
            "acc",
            "--model_args",
            "pretrained=./no-such-model,speedup=2",
            "--tasks",
            "rt-polarity-zs",
        ),
        "pretrained=./no-such-model is not a folder",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_and_exit_2(workdir, tiny_checkpoint, tiny_sentiment_dir, capsys, case):
    setup, message = CASES[case]
    args = setup(workdir, tiny_checkpoint, tiny_sentiment_dir)
    capsys.readouterr()
    err = one_line_error(capsys, cli.main(args))
    assert message in err, err
    assert not list(workdir.rglob("results.jsonl"))


def test_pickle_refusal_says_how_to_convert(workdir, tiny_checkpoint, capsys):
    folder = workdir / "pickled"
    shutil.copytree(tiny_checkpoint, folder)
    only_pickle(folder)
    from harness.models.catalog import load_classifier

    with pytest.raises(
        HarnessError,
        match=r"convert it once to model.safetensors: python -c .*"
        r"BertForSequenceClassification.from_pretrained\(.*use_safetensors=False\).save_pretrained",
    ):
        load_classifier(str(folder), "pretrained", num_labels=2)


@pytest.mark.slow
def test_lm_eval_unknown_task_is_one_line(workdir, tiny_checkpoint, capsys):
    assert (
        cli.main(
            [
                "lm-eval",
                "--model",
                "acc",
                "--model_args",
                f"pretrained={tiny_checkpoint}",
                "--tasks",
                "no-such-task",
                "--device",
                "cpu",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert (
        err.startswith("harness: error: lm-eval Tasks not found: no-such-task;") and err.count("\n") == 1
    ), err


def test_latency_batch_of_tokenless_text_is_an_error_not_a_loop(tiny_checkpoint):
    from transformers import AutoTokenizer

    from harness.runners.sweep import latency_batch

    tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoint)
    with pytest.raises(HarnessError, match="the evaluation texts have no tokens"):
        latency_batch(tokenizer, ["", "   "], 4, 16, 31)
    batch = latency_batch(tokenizer, ["good"], 4, 16, 31)  # one token, repeated: still exactly 4 x 16
    assert tuple(batch.shape) == (4, 16)


def test_a_result_line_that_is_not_a_row_is_refused(workdir, capsys):
    run = workdir / "runs" / "broken"
    run.mkdir(parents=True)
    row = {
        "cell_key": "m|pretrained|t|finetune|acc|1",
        "model": "m",
        "task": "t",
        "method": "acc",
        "speedup": 1.0,
    }
    (run / "results.jsonl").write_text(json.dumps(row) + "\n{}\n")
    assert cli.main(["leaderboard", str(run), "--out", str(workdir / "boards")]) == 2
    err = capsys.readouterr().err
    assert (
        "results.jsonl line 2 is not a result row (it has no cell_key, model, task, method, speedup)" in err
    )
    assert err.count("\n") == 1 and not (workdir / "boards").exists()


# --- two runs, one folder ---------------------------------------------------------------------------


def test_a_live_run_holds_its_folder_and_a_dead_one_does_not(workdir, tiny_checkpoint, capsys):
    out = workdir / "shared-run"
    out.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom harness.report.lock import run_lock\n"
            "with run_lock(sys.argv[1]):\n    print('locked', flush=True)\n    time.sleep(120)",
            str(out),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert cli.main(random_run_args(tiny_checkpoint, out)) == 2
        err = capsys.readouterr().err
        assert f"run folder {out} is in use by pid {holder.pid} on " in err and err.count("\n") == 1, err
        assert not (out / "results.jsonl").exists()
    finally:
        holder.kill()
        holder.wait()
    assert cli.main(random_run_args(tiny_checkpoint, out)) == 0  # killed: its lock is taken over
    err = capsys.readouterr().err
    assert f"was locked by pid {holder.pid}" in err and "no longer running; taking it over" in err
    assert len((out / "results.jsonl").read_text().splitlines()) == 1
    assert cli.main(random_run_args(tiny_checkpoint, out)) == 0  # a clean exit leaves nothing to take over
    assert "taking it over" not in capsys.readouterr().err


def test_reports_land_under_the_run_and_never_over_another_runs(workdir, tiny_checkpoint, capsys):
    for run in ("runs/base", "other/base"):
        assert cli.main(random_run_args(tiny_checkpoint, run)) == 0
        assert "| sst2 |" in (workdir / run / "leaderboards" / "base.md").read_text()
        assert list((workdir / run / "plots" / "base").glob("*.png"))
    assert not (workdir / "leaderboards").exists() and not (workdir / "plots").exists()

    assert cli.main(random_run_args(tiny_checkpoint, "runs/base", "--report-dir", "reports")) == 0
    assert json.loads((workdir / "reports/leaderboards/base.json").read_text()) == {"run": "../runs/base"}
    capsys.readouterr()
    assert cli.main(random_run_args(tiny_checkpoint, "third/base", "--report-dir", "reports")) == 2
    err = capsys.readouterr().err
    assert "holds the reports of run folder ../runs/base" in err and err.count("\n") == 1, err
    assert not (workdir / "third").exists()  # refused before the sweep began
