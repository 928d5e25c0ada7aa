"""Issue "Results a benchmark can stand behind": command lines that ended in a traceback, or stored a
calibration later runs would trust, answer with one line and exit 2, before any heavy work and without
writing anything; and ``harness lm-eval`` as the README writes it runs on a machine without CUDA.

Every error here must fire before a model loads (the tiny checkpoints keep the old behaviour quick
enough to check that these tests fail without the fix)."""

from __future__ import annotations

import json
import os

import pytest
import torch
from cli_checks import no_model_load, one_line_error, random_run_args, run_args

from harness import cli


@pytest.fixture
def no_cuda(monkeypatch):
    """A machine without CUDA and a CPU-only torch, whatever this one has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", None)


# --- harness lm-eval -------------------------------------------------------------------------------


def test_lm_eval_as_the_readme_writes_it_falls_back_to_cpu(tiny_gpt2, tmp_path, no_cuda, capsys):
    """No --device: lm-eval's default is cuda:0, which stock ``--model hf`` leaves for the CPU when
    there is no CUDA; the harness model does the same, saying so in one line."""
    out = tmp_path / "lm-eval"
    code = cli.main(
        [
            "lm-eval",
            "--model",
            "harness",
            "--model_args",
            f"pretrained={tiny_gpt2},speedup=1",
            "--tasks",
            "rt-polarity-zs",
            "--limit",
            "2",
            "--output_path",
            str(out),
        ]
    )
    err = capsys.readouterr().err
    assert code == 0, err[-3000:]
    notes = [line for line in err.splitlines() if line.startswith("harness: ")]
    assert notes == [
        f"harness: no --device given and no CUDA device here (torch {torch.__version__}): running on cpu"
    ], err[-3000:]
    results = json.loads(next(out.rglob("results_*.json")).read_text())
    assert results["n-samples"]["rt-polarity-zs"]["effective"] == 2


def test_lm_eval_explicit_cuda_without_cuda_says_how_to_get_it(tiny_gpt2, no_cuda, monkeypatch, capsys):
    no_model_load(monkeypatch)
    code = cli.main(
        [
            "lm-eval",
            "--model",
            "harness",
            "--model_args",
            f"pretrained={tiny_gpt2}",
            "--tasks",
            "rt-polarity-zs",
            "--limit",
            "2",
            "--device",
            "cuda",
        ]
    )
    err = one_line_error(capsys, code)
    assert "device cuda was asked for, but this torch" in err and "is a CPU-only build" in err, err
    assert "install the GPU build (in a checkout: make test TORCH=cuda" in err and "--device cpu" in err, err


@pytest.mark.parametrize("limit", ["0", "-1", "nan", "inf", "2.5"])
def test_lm_eval_bad_limit_is_one_line(tiny_gpt2, monkeypatch, capsys, limit):
    no_model_load(monkeypatch)
    code = cli.main(
        [
            "lm-eval",
            "--model",
            "harness",
            "--model_args",
            f"pretrained={tiny_gpt2}",
            "--tasks",
            "rt-polarity-zs",
            "--limit",
            limit,
            "--device",
            "cpu",
        ]
    )
    err = one_line_error(capsys, code)
    assert (
        "--limit must be a share of each task's documents in (0, 1) or a whole number of documents >= 1, "
        f"got {float(limit):g}" in err
    ), err


def test_lm_eval_unknown_model_type_is_one_line(tiny_gpt2, monkeypatch, capsys):
    no_model_load(monkeypatch)
    code = cli.main(
        [
            "lm-eval",
            "--model",
            "nosuch",
            "--model_args",
            f"pretrained={tiny_gpt2}",
            "--tasks",
            "rt-polarity-zs",
            "--limit",
            "2",
            "--device",
            "cpu",
        ]
    )
    err = one_line_error(capsys, code)
    assert (
        "lm-eval has no model type 'nosuch'; the harness's is 'harness' (alias 'acc'), lm-eval's own: " in err
    )
    assert " hf," in err, err


# --- harness positions -----------------------------------------------------------------------------


def test_positions_unknown_task_names_the_valid_ones(workdir, tiny_gpt2_checkpoint, capsys):
    code = cli.main(
        [
            "positions",
            "--model",
            str(tiny_gpt2_checkpoint),
            "--weights",
            "random",
            "--task",
            "nosuch",
            "--limit",
            "2",
            "--out",
            str(workdir / "plots"),
        ]
    )
    err = one_line_error(capsys, code)
    assert "unknown task 'nosuch' for harness positions; valid (the lm-eval tasks in " in err, err
    assert "heldout-ppl" in err and "rt-polarity-zs" in err, err
    assert not (workdir / "plots").exists()


# --- harness run: absurd numbers -------------------------------------------------------------------


@pytest.mark.parametrize(
    "epochs, message",
    [
        ("1e308", "--epochs must be at most 1000 (passes over the training rows), got 1e+308"),
        ("1001", "--epochs must be at most 1000 (passes over the training rows), got 1001"),
        ("0", "--epochs must be a finite number > 0, got 0"),
    ],
)
def test_run_absurd_epochs_are_refused(workdir, tiny_checkpoint, tiny_sentiment_dir, capsys, epochs, message):
    code = cli.main(run_args(tiny_checkpoint, tiny_sentiment_dir, "--epochs", epochs))
    assert message in one_line_error(capsys, code)
    assert not (workdir / "run").exists()


@pytest.mark.parametrize("threads", ["100000", "cores+1", "0", "-2"])
def test_run_threads_outside_the_cores_are_refused(workdir, tiny_checkpoint, monkeypatch, capsys, threads):
    """Never actually set: 100000 torch threads exhausts memory (a traceback from the model load)."""
    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    value = str(cores + 1) if threads == "cores+1" else threads
    code = cli.main(random_run_args(tiny_checkpoint, "run", "--threads", value))
    err = one_line_error(capsys, code)
    assert (
        f"--threads must be a whole number within 1..{cores} (the logical cores this process may use), "
        f"got {value}" in err
    ), err
    assert not calls and not (workdir / "run").exists()


# --- harness calibrate ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--budget", "-1"], "--budget must be a finite number of seconds >= 0, got -1"),
        (["--budget", "nan"], "--budget must be a finite number of seconds >= 0, got nan"),
        (["--validate-seconds", "-1"], "--validate-seconds must be a finite number of seconds >= 0, got -1"),
        (
            ["--validate-seconds", "inf"],
            "--validate-seconds must be a finite number of seconds >= 0, got inf",
        ),
        (["--max-length", "0"], "--max-length must be a positive integer, got 0"),
        (["--max-length", "-5"], "--max-length must be a positive integer, got -5"),
        (["--batch-sizes", "0,4"], "--batch-sizes must be positive integers, got 0,4"),
        (["--threads", "100000"], "--threads must be a whole number within 1.."),
    ],
)
def test_calibrate_bad_knobs_store_nothing(workdir, tiny_checkpoint, monkeypatch, capsys, extra, message):
    """A calibration made with a negative budget or a zero length was stored, and later runs trusted it."""
    from harness.measure import calibrate
    from harness.measure.calibration_store import calibration_dir

    monkeypatch.setattr(torch, "set_num_threads", lambda threads: None)  # old code: never 100000 threads

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the bad input was refused")

    monkeypatch.setattr(calibrate, "load_for_timing", refuse)
    code = cli.main(
        [
            "calibrate",
            "--models",
            str(tiny_checkpoint),
            "--max-length",
            "16",
            "--budget",
            "0.01",
            "--validate-seconds",
            "0",
            "--no-progress",
            *extra,
        ]
    )
    assert message in one_line_error(capsys, code)
    assert calibration_dir().is_relative_to(workdir) and not calibration_dir().exists()
