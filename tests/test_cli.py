"""The command line end to end on a tiny local model and tiny local data, resume, and bad input."""

import json

import pytest
from cli_checks import run_args

from harness import cli
from harness.report import store


def tiny_run_args(checkpoint, data_dir, out, speedups="1,2"):
    return run_args(checkpoint, data_dir, "--methods", "acc,truncation", out=str(out), speedups=speedups)


def read_rows(run_dir):
    return [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]


def test_end_to_end_and_resume(workdir, tiny_checkpoint, tiny_sentiment_dir, capsys):
    out = workdir / "runs" / "tiny"
    assert cli.main(tiny_run_args(tiny_checkpoint, tiny_sentiment_dir, out)) == 0
    rows = read_rows(out)
    assert all(r["protocol"] == "finetune" for r in rows)
    assert sorted((r["method"], r["speedup"]) for r in rows) == [
        ("acc", 1.0),
        ("acc", 2.0),
        ("truncation", 1.0),
        ("truncation", 2.0),
    ]
    for row in rows:
        assert 0.0 <= row["score"] <= 1.0 and row["main_metric"] == "accuracy"
        assert row["weights"] == "pretrained" and row["checkpoint"].startswith("local")
        assert row["predicted_speedup"] == pytest.approx(row["speedup"], rel=0.05)
        assert row["flops_measured"] == pytest.approx(row["flops_analytic"], rel=0.02)
        assert len(row["kept_tokens"]) == 6 and row["hardware"]["id"]
        assert row["train"]["reused"] is False
        assert row["eval_clamped"] >= 0 if row["speedup"] > 1 else row["eval_clamped"] == 0
    assert (out / "leaderboards" / "tiny.md").read_text().count("| sst2 |") == 4
    assert list((out / "plots" / "tiny").glob("*.png")) and list((out / "plots" / "tiny").glob("*.svg"))
    assert not (workdir / "leaderboards").exists() and not (workdir / "plots").exists()  # not into the cwd

    # Same sweep plus one speedup: only the new cells run, from the cached fine-tune.
    assert cli.main(tiny_run_args(tiny_checkpoint, tiny_sentiment_dir, out, speedups="1,2,1.5")) == 0
    rows = read_rows(out)
    assert len(rows) == 6 and len({r["cell_key"] for r in rows}) == 6
    assert all(r["train"]["reused"] for r in rows if r["speedup"] == 1.5)


def test_fine_tune_depends_only_on_its_settings(workdir, tiny_checkpoint, tiny_sentiment_dir, monkeypatch):
    """Two fresh caches, different random draws beforehand: the same fine-tuned weights and scores.

    The checkpoint is a bare encoder (like minilm), so the classification head is initialised anew.
    """
    import shutil

    import torch
    from safetensors.torch import load_file
    from transformers import BertForSequenceClassification

    encoder = workdir / "encoder-only"
    BertForSequenceClassification.from_pretrained(tiny_checkpoint).bert.save_pretrained(encoder)
    for tokenizer_file in tiny_checkpoint.glob("*tok*"):
        shutil.copy(tokenizer_file, encoder)
    shutil.copy(tiny_checkpoint / "vocab.txt", encoder)
    weights, scores = [], []
    for attempt in range(2):
        monkeypatch.setenv("HARNESS_CACHE", str(workdir / f"cache{attempt}"))
        torch.rand(attempt + 1)
        out = workdir / f"run{attempt}"
        assert cli.main(tiny_run_args(encoder, tiny_sentiment_dir, out, speedups="2")) == 0
        weights.append(
            load_file(next((workdir / f"cache{attempt}" / "finetuned").glob("*/model.safetensors")))
        )
        scores.append(sorted((r["method"], r["score"]) for r in read_rows(out)))
    assert scores[0] == scores[1]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])


def test_decoder_classification_head_fine_tunes(workdir, tiny_gpt2_checkpoint, tiny_sentiment_dir):
    out = workdir / "gpt2-head"
    args = tiny_run_args(tiny_gpt2_checkpoint, tiny_sentiment_dir, out)
    args[args.index("--max-length") + 1] = "64"  # decoders keep >= 16 tokens: 2x is out of reach at 32
    assert cli.main([*args, "--protocol", "finetune"]) == 0
    rows = read_rows(out)
    assert len(rows) == 4 and {r["protocol"] for r in rows} == {"finetune"}
    for row in rows:
        assert 0.0 <= row["score"] <= 1.0 and len(row["kept_tokens"]) == 6
        assert row["flops_measured"] == pytest.approx(row["flops_analytic"], rel=0.02)


def test_crash_mid_sweep_resumes_without_loss_or_duplicates(
    workdir, tiny_checkpoint, tiny_sentiment_dir, monkeypatch
):
    out = workdir / "crash"
    real_append, calls = store.ResultStore.append, []

    def dying_append(self, row):
        if len(calls) == 1:
            raise KeyboardInterrupt  # the machine dies after the first finished cell
        calls.append(row)
        real_append(self, row)

    monkeypatch.setattr(store.ResultStore, "append", dying_append)
    assert cli.main(tiny_run_args(tiny_checkpoint, tiny_sentiment_dir, out)) == 130
    assert len(read_rows(out)) == 1
    with open(out / "results.jsonl", "a") as broken:  # and a half-written line from the crash
        broken.write('{"cell_key": "half')
    monkeypatch.setattr(store.ResultStore, "append", real_append)
    assert cli.main(tiny_run_args(tiny_checkpoint, tiny_sentiment_dir, out)) == 0
    rows = read_rows(out)
    assert len(rows) == 4 and len({r["cell_key"] for r in rows}) == 4


def test_bfloat16_rows_say_so_and_a_rerun_in_float32_is_refused(
    workdir, tiny_checkpoint, tiny_sentiment_dir, capsys
):
    """--dtype: evaluation and timing in bf16 (the fine-tune in float32), recorded in the row and the
    hardware id; the folder's experiment is bf16, so a float32 rerun into it is refused, naming the change."""
    out = workdir / "bf16"
    args = tiny_run_args(tiny_checkpoint, tiny_sentiment_dir, out, speedups="1,2")
    assert cli.main([*args, "--dtype", "bfloat16"]) == 0
    rows = read_rows(out)
    assert len(rows) == 4 and {row["dtype"] for row in rows} == {"bfloat16"}
    for row in rows:
        assert row["hardware"]["dtype"] == "bfloat16" and row["hardware"]["id"].endswith(":bf16")
        assert 0.0 <= row["score"] <= 1.0 and row["identity"]["settings"]["dtype"] == "bfloat16"
        assert row["peak_memory_mb"] >= 0 and row["dense_peak_memory_mb"] >= 0
    capsys.readouterr()
    assert cli.main([*args, "--dtype", "float32"]) == 2
    assert "--dtype bfloat16 -> float32" in capsys.readouterr().err
    assert len(read_rows(out)) == 4


def test_random_weights_rows_have_no_quality(workdir, tiny_checkpoint):
    out = workdir / "random"
    assert (
        cli.main(
            [
                "run",
                "--models",
                str(tiny_checkpoint),
                "--weights",
                "random",
                "--tasks",
                "sst2",
                "--speedups",
                "1,2",
                "--batch-size",
                "2",
                "--max-length",
                "48",
                "--repeats",
                "1",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    rows = read_rows(out)
    assert [r["weights"] for r in rows] == ["random weights"] * 2
    assert all(r["score"] is None and r["metrics"] == {} for r in rows)
    assert "random weights" in (out / "leaderboards" / "random.md").read_text()


def test_limit_is_max_eval_and_repeats_follow_the_protocol():
    from harness.runners.sweep import PROMPT_REPEATS, REPEATS, SweepConfig

    parse = cli.build_parser().parse_args
    assert parse(["run", "--limit", "7"]).max_eval == parse(["run", "--max-eval", "7"]).max_eval == 7
    assert parse(["run"]).max_eval is None and parse(["run"]).repeats is None
    config = SweepConfig(models=["minilm"])
    config.validate()
    assert config.repeats == REPEATS == 10
    config = SweepConfig(models=["smollm2"], tasks=["piqa"], prompts=["zero-shot"])
    config.validate()
    assert config.repeats == PROMPT_REPEATS == 3
    config = SweepConfig(models=["smollm2"], tasks=["piqa"], prompts=["zero-shot"], repeats=5)
    config.validate()
    assert config.repeats == 5


def test_without_methods_each_protocol_runs_its_default():
    from harness.runners.protocols import PROTOCOLS
    from harness.runners.sweep import SweepConfig

    config = SweepConfig(models=["minilm", "smollm2"])
    assert config.methods_for(PROTOCOLS.get("finetune")) == ["acc-decay-distill"]  # the study's best recipe
    assert config.methods_for(PROTOCOLS.get("zero-shot")) == ["acc"]  # nothing trained: the reference
    assert SweepConfig(methods=["tome"]).methods_for(PROTOCOLS.get("finetune")) == ["tome"]
    config.validate()  # the defaults are registered and fit both families


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "--models", "nope"], "unknown model 'nope'; valid models: bert, minilm"),
        (["run", "--tasks", "nope"], "unknown task 'nope'; valid tasks: cola, sst2"),
        (["run", "--methods", "nope"], "unknown method 'nope'; valid methods: acc, random, truncation"),
        (["run", "--speedups", "0.5"], "speedup must be a number >= 1, got '0.5'"),
        (["run", "--speedups", "fast"], "speedup must be a number >= 1, got 'fast'"),
        (
            ["run", "--speedups", "1,50"],
            "speedup 50 is unreachable for minilm at --max-length 128; the largest reachable speedup is",
        ),
        (["run", "--weights", "heavy"], "unknown weights 'heavy'; valid weights: pretrained, random"),
        (["run", "--dtype", "half"], "unknown --dtype 'half'; valid dtypes: float32, bfloat16, float16"),
        (["run", "--dtype", "float16"], "--dtype float16 needs a CUDA device"),
        (["run", "--batch-size", "0"], "--batch-size must be a positive integer"),
        (["run", "--batch-size", "x"], "argument --batch-size: invalid int value: 'x'"),
        (["leaderboard", "no-such-run"], "no-such-run is not a run folder"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(workdir, capsys, args, message):
    with pytest.raises(SystemExit) if args[0] == "frobnicate" or "x" in args else _no_raise() as caught:
        code = cli.main(args)
    code = caught.value.code if caught is not None and hasattr(caught, "value") else code
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and err.startswith("harness: error:")
    assert err.count("\n") == 1 and "Traceback" not in err


class _no_raise:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def test_unreachable_hub_checkpoint_names_alternatives(workdir, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(workdir / "hf"))
    assert cli.main(["run", "--models", "bert", "--speedups", "1,2", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "google-bert/bert-base-uncased" in err and "--models minilm" in err and "--weights random" in err
    assert err.count("\n") == 1


def test_bad_data_and_output_folders(workdir, tiny_checkpoint, tiny_sentiment_dir, capsys):
    (workdir / "bad").mkdir()
    (workdir / "bad" / "train.csv").write_text("text,y\nhello,1\n")
    (workdir / "bad" / "validation.csv").write_text("text,y\nhello,1\n")
    (workdir / "a-file").write_text("")
    cases = [
        (["--data-dir", str(workdir / "missing")], "missing"),
        (["--data-dir", str(workdir / "bad")], "expected columns"),
        (["--data-dir", str(tiny_sentiment_dir), "--out", str(workdir / "a-file" / "run")], "not writable"),
    ]
    for extra, message in cases:
        code = cli.main(
            [
                "run",
                "--models",
                str(tiny_checkpoint),
                "--tasks",
                "sst2",
                "--speedups",
                "1,2",
                "--no-progress",
                *extra,
            ]
        )
        err = capsys.readouterr().err
        assert code == 2 and message in err and err.count("\n") == 1, err
