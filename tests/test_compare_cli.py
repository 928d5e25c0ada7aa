"""``harness run --methods ... --seeds N`` and ``harness compare`` end to end on a tiny model; bad values."""

from __future__ import annotations

import json

import pytest
from cli_checks import run_args

from harness import cli


def test_methods_with_their_own_recipes_and_seeds_end_to_end(
    workdir, tiny_checkpoint, tiny_sentiment_dir, capsys
):
    out = workdir / "runs" / "cmp"
    args = run_args(
        tiny_checkpoint,
        tiny_sentiment_dir,
        *("--methods", "lat,ltp,layerdrop,tome", "--seeds", "2", "--search", "1"),
        out=str(out),
        speedups="1,2",
        batch_size="16",
    )
    assert cli.main(args) == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 4 * 2 * 2 and len({row["cell_key"] for row in rows}) == 16
    recipes = {row["method"]: row["train"]["recipe"] for row in rows}
    assert recipes == {
        "lat": "lat-sandwich",
        "ltp": "ltp-soft-masks",
        "layerdrop": "layerdrop-top",
        "tome": "offline-tuning",
    }
    caches = {(row["method"], row["seed"]): row["train"]["cache"] for row in rows}
    assert len(set(caches.values())) == 8  # one fine-tune per method and seed
    for row in rows:
        assert row["train"]["seed"] == row["seed"] and row["eval_examples"] == 40
        if row["speedup"] > 1 and row["method"] != "tome":  # tome: constant r, clamped at short inputs
            assert row["eval_predicted_speedup"] > 1.2, row["method"]
    board = (out / "leaderboards" / "cmp_compare.md").read_text()
    assert "Training budget: 1 epoch(s) over 96 training examples, the same for every method" in board
    assert board.count("(2 seeds)") == 8 and "★" in board
    assert (out / "plots" / "cmp" / "compare_sst2.png").is_file()
    capsys.readouterr()

    # the same comparison from the run folder
    assert cli.main(["compare", str(out), "--out", str(workdir / "reports")]) == 0
    assert (workdir / "reports" / "leaderboards" / "cmp_compare.csv").is_file()
    assert (workdir / "reports" / "plots" / "cmp" / "compare_sst2.svg").is_file()


def test_acc_search_reuses_accs_fine_tune_and_searches_its_lengths(
    workdir, tiny_checkpoint, tiny_sentiment_dir
):
    out = workdir / "runs" / "search"
    args = run_args(
        tiny_checkpoint,
        tiny_sentiment_dir,
        *("--methods", "acc,acc-search", "--search", "1"),
        out=str(out),
        speedups="1,2",
        batch_size="16",
    )
    assert cli.main(args) == 0
    rows = {
        (row["method"], row["speedup"]): row
        for row in map(json.loads, (out / "results.jsonl").read_text().splitlines())
    }
    assert rows["acc-search", 2.0]["train"]["cache"] == rows["acc", 2.0]["train"]["cache"]  # one fine-tune
    assert (
        rows["acc-search", 2.0]["train"]["reused"]
        and rows["acc-search", 1.0]["score"] == rows["acc", 1.0]["score"]
    )
    assert rows["acc-search", 2.0]["eval_predicted_speedup"] >= 2.0 - 1e-6


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["run", "--methods", "acc,nope"],
            "unknown method 'nope'; valid methods: acc, random, truncation, power-bert",
        ),
        (["run", "--methods", "acc,lat,acc"], "--methods names a method twice: acc,lat,acc"),
        (["run", "--methods", ","], "--methods is empty"),
        (["run", "--seeds", "0"], "--seeds must be a positive integer, got 0"),
        (["run", "--seeds", "-2"], "--seeds must be a positive integer, got -2"),
        (["run", "--seeds", "two"], "argument --seeds: invalid int value: 'two'"),
        (["run", "--search", "-1"], "--search must be an integer >= 0, got -1"),
        (["run", "--methods", "ltp", "--speedup-model", "latency"], "method 'ltp' plans its own counts"),
        (["compare", "no-such-run"], "no-such-run is not a run folder"),
    ],
)
def test_bad_methods_and_seeds_are_one_line_and_exit_2(workdir, capsys, args, message):
    try:
        code = cli.main(args)
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert err.startswith("harness: error:") and err.count("\n") == 1 and "Traceback" not in err
