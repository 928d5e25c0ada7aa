"""What the CLI tests share: the one-line error check, a guard that no model loads before bad input is
refused, and the arguments of a tiny fine-tuning run and of a tiny random-weights run.  (A module beside the tests, imported by name:
pytest puts this folder on ``sys.path``.)"""

from __future__ import annotations


def one_line_error(capsys, code: int) -> str:
    """The command exited 2 with one ``harness: error:`` line and no traceback; returns that line."""
    err = capsys.readouterr().err
    assert code == 2, err[-3000:]
    assert err.startswith("harness: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def no_model_load(monkeypatch, *more) -> None:
    """Loading any model (lm-eval's HFLM, and each ``(module, name)`` in ``more``) fails the test: the
    error must come first."""
    from lm_eval.models.huggingface import HFLM

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the bad input was refused")

    monkeypatch.setattr(HFLM, "__init__", refuse)
    for module, name in more:
        monkeypatch.setattr(module, name, refuse)


def run_args(checkpoint, data_dir, *extra, out="run", speedups="2", batch_size="8"):
    """``harness run`` of a tiny checkpoint on sst2-style files: one epoch, ``speedups``, one timed forward."""
    return [
        "run",
        "--models",
        str(checkpoint),
        "--tasks",
        "sst2",
        "--data-dir",
        str(data_dir),
        "--speedups",
        speedups,
        "--epochs",
        "1",
        "--batch-size",
        batch_size,
        "--max-length",
        "32",
        "--repeats",
        "1",
        "--out",
        out,
        "--no-progress",
        *extra,
    ]


def random_run_args(checkpoint, out, *extra):
    """``harness run`` of a tiny checkpoint's architecture with random weights: speed only, no data, no training."""
    return [
        "run",
        "--models",
        str(checkpoint),
        "--weights",
        "random",
        "--tasks",
        "sst2",
        "--speedups",
        "2",
        "--batch-size",
        "2",
        "--max-length",
        "32",
        "--repeats",
        "1",
        "--out",
        str(out),
        "--no-progress",
        *extra,
    ]
