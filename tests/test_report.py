"""Result store crash safety, leaderboard layout, and that the figures get written."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from harness.registry import HarnessError
from harness.report import (
    ResultStore,
    load_rows,
    plot_kept_profile,
    plot_measured_vs_predicted,
    plot_quality_vs_speedup,
    write_json_atomic,
    write_leaderboard,
    write_text_atomic,
)
from harness.report.leaderboard import BOARD_COLUMNS, COMPACT, board_columns, to_markdown

HARDWARE = {"id": "cpu:Test CPU:2t", "cpu": "Test CPU"}


def _row(model: str, weights: str, speedup: float, score: float | None, task: str = "rt-polarity") -> dict:
    random = weights == "random weights"
    return {
        "cell_key": f"{model}|{weights}|{task}|acc|{speedup}",
        "model": model,
        "checkpoint": f"org/{model}",
        "weights": weights,
        "task": task,
        "method": "acc",
        "speedup": speedup,
        "metrics": {} if random else {"accuracy": score, "f1": score - 0.01},
        "main_metric": None if random else "accuracy",
        "score": None if random else score,
        "predicted_speedup": speedup * 0.97,
        "measured_speedup": speedup * 0.8,
        "eval_predicted_speedup": None if random else speedup * 0.95,
        "eval_examples": None if random else 200,
        "flops_measured": int(2.5e9 / speedup),
        "flops_analytic": int(2.4e9 / speedup),
        "flops_dense": int(2.5e9),
        "latency_ms": 40.0 / speedup,
        "latency_p10_ms": 38.0 / speedup,
        "latency_p90_ms": 45.0 / speedup,
        "dense_latency_ms": 40.0,
        "batch_size": 8,
        "seq_len": 64,
        "threads": 2,
        "device": "cpu",
        "kept_tokens": [64 / speedup ** (layer / 6) for layer in range(1, 7)],
        "hardware": HARDWARE,
        "data": {"source": "synthetic"},
        "train": {"epochs": 1},
        "timestamp": "2025-01-01T00:00:00Z",
        "harness_version": "0.1.0",
        "extra_key": "tolerated",
    }


def _rows() -> list[dict]:
    rows = [_row("minilm", "pretrained", s, 0.90 - 0.04 * (s - 1)) for s in (1.0, 1.5, 2.0, 3.0)]
    rows += [_row("tinybert", "pretrained", s, 0.85 - 0.06 * (s - 1)) for s in (1.0, 2.0, 3.0)]
    rows += [_row("minilm", "random weights", s, None) for s in (1.0, 2.0)]
    return rows


def _run_dir(tmp_path: Path, name: str, rows: list[dict]) -> Path:
    store = ResultStore(tmp_path / name)
    for row in rows:
        store.append(row)
    return store.run_dir


# --- store -------------------------------------------------------------------------------------


def test_append_and_resume_repairs_truncated_tail(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "run")
    rows = _rows()[:3]
    for row in rows:
        store.append(row)
    assert store.rows() == rows
    with open(store.path, "ab") as handle:  # a crash in the middle of the fourth append
        handle.write(json.dumps(_rows()[3]).encode()[:40])

    resumed = ResultStore(tmp_path / "run")
    assert resumed.done_keys() == {row["cell_key"] for row in rows}
    resumed.append(_rows()[4])
    lines = store.path.read_text().splitlines()
    assert len(lines) == 4 and all(json.loads(line) for line in lines)
    assert resumed.done_keys() == {row["cell_key"] for row in rows + [_rows()[4]]}


def test_complete_json_without_newline_is_not_counted(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "run")
    store.append(_rows()[0])
    with open(store.path, "ab") as handle:
        handle.write(json.dumps(_rows()[1]).encode())
    assert len(store.rows()) == 1
    store.append(_rows()[1])
    assert [row["cell_key"] for row in store.rows()] == [r["cell_key"] for r in _rows()[:2]]


def test_bad_line_in_the_middle_names_file_and_line(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "run")
    good = [json.dumps(row) for row in _rows()[:2]]
    store.path.write_text(f"{good[0]}\n{{not json\n{good[1]}\n")
    with pytest.raises(HarnessError, match=r"results\.jsonl line 2"):
        store.rows()


def test_bad_last_line_is_dropped_and_cut_before_append(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "run")
    store.path.write_text(json.dumps(_rows()[0]) + '\n{"cell_key": "x", \x00\x00\n')
    assert len(store.rows()) == 1
    store.append(_rows()[1])
    assert [json.loads(line)["cell_key"] for line in store.path.read_text().splitlines()] == [
        row["cell_key"] for row in _rows()[:2]
    ]


def test_unwritable_folder_is_a_harness_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(HarnessError, match="is not writable"):
        ResultStore(blocker / "run")
    if os.geteuid() != 0:  # root ignores directory permissions
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        try:
            with pytest.raises(HarnessError, match=f"output folder {locked}/run is not writable"):
                ResultStore(locked / "run")
        finally:
            locked.chmod(0o700)


def test_atomic_writers_replace_whole_files(tmp_path: Path) -> None:
    target = tmp_path / "meta" / "run.json"
    write_json_atomic(target, {"a": 1})
    write_json_atomic(target, {"b": [1, 2]})
    assert json.loads(target.read_text()) == {"b": [1, 2]}
    write_text_atomic(tmp_path / "note.txt", "hello\n")
    assert (tmp_path / "note.txt").read_text() == "hello\n"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["meta", "note.txt", "run.json"]
    with pytest.raises(HarnessError, match="cannot write"):
        write_text_atomic(tmp_path / "note.txt" / "below-a-file.txt", "x")


# --- leaderboard -------------------------------------------------------------------------------


def test_leaderboard_columns_sorting_and_formatting(tmp_path: Path) -> None:
    run = _run_dir(tmp_path, "run-a", list(reversed(_rows())))
    df = load_rows([run])
    assert list(df.columns[: len(BOARD_COLUMNS)]) == BOARD_COLUMNS
    assert {"metrics.accuracy", "metrics.f1", "run"} <= set(df.columns)
    assert len(df) == len(_rows()) and df["hardware"].eq(HARDWARE["id"]).all()
    assert df["gflops_measured"].iloc[0] == pytest.approx(2.5)
    assert df[["model", "weights", "speedup"]].head(4).values.tolist() == [
        ["minilm", "pretrained", 1.0],
        ["minilm", "random weights", 1.0],
        ["minilm", "pretrained", 1.5],
        ["minilm", "pretrained", 2.0],
    ]

    md_path, csv_path = write_leaderboard(df, tmp_path / "boards", "board")
    md = md_path.read_text().splitlines()
    header = [cell.strip() for cell in md[0].strip("|").split("|")]
    assert header == [c for c in COMPACT if c not in ("mode", "peak MiB")]  # empty columns are left out
    first = dict(zip(header, (c.strip() for c in md[2].strip("|").split("|"))))
    se = 100 * (0.9 * 0.1 / 200) ** 0.5  # an accuracy over 200 examples
    assert first["quality ± SE"] == f"90.00 ± {se:.2f}" and first["speedup"] == "1.00"
    assert first["measured / predicted"] == "0.80 / 0.97" and first["drop"] == "+0.00"
    assert first["GFLOPs"] == "2.5" and first["latency ms"] == "40.0"
    random_row = dict(zip(header, (c.strip() for c in md[3].strip("|").split("|"))))
    assert random_row["model"] == "minilm (random weights)" and random_row["quality ± SE"] == ""
    at_two = dict(zip(header, (c.strip() for c in md[5].strip("|").split("|"))))
    assert at_two["speedup"] == "2.00" and at_two["drop"] == f"{100 * (df['score'].iloc[3] - 0.90):+.2f}"
    # provenance once per table (once per weights of a model), not once per row
    text = md_path.read_text()
    assert text.count("org/minilm") == 2 and "latency batch: 8 × 64 tokens on cpu" in text

    csv = pd.read_csv(csv_path)  # every column, raw values
    assert list(csv.columns) == [c for c in df.columns if c in board_columns(df)]
    assert set(BOARD_COLUMNS) <= set(csv.columns) and "kept_tokens" not in csv.columns
    assert csv["score"].iloc[0] == pytest.approx(0.90)
    assert csv["drop"].iloc[3] == pytest.approx(df["score"].iloc[3] - 0.90)


def test_drop_of_perplexity_is_its_rise(tmp_path: Path) -> None:
    rows = [_row("gpt2", "pretrained", s, 0.5) for s in (1.0, 2.0)]
    for row, ppl in zip(rows, (20.0, 26.5)):
        row.update(main_metric="perplexity", score=ppl, metrics={"perplexity": ppl})
    board = to_markdown(load_rows([_run_dir(tmp_path, "ppl", rows)])).splitlines()
    header = [cell.strip() for cell in board[0].strip("|").split("|")]
    at_two = dict(zip(header, (c.strip() for c in board[3].strip("|").split("|"))))
    assert at_two["quality ± SE"] == "26.50" and at_two["drop"] == "+6.50"  # perplexity rose by 6.5


def test_duplicate_cells_across_runs_are_kept_with_run_names(tmp_path: Path) -> None:
    first = _run_dir(tmp_path, "run-a", _rows()[:2])
    second = _run_dir(tmp_path, "run-b", _rows()[:2])
    df = load_rows([first, second])
    assert len(df) == 4 and sorted(df["run"].unique()) == ["run-a", "run-b"]
    with pytest.raises(HarnessError, match="does not exist"):
        load_rows([tmp_path / "missing"])


# --- plots -------------------------------------------------------------------------------------


def test_plots_write_png_and_svg(tmp_path: Path) -> None:
    rows = _rows() + [_row("minilm", "pretrained", s, 0.8 - 0.05 * s, task="sst2") for s in (1.0, 2.0)]
    df = load_rows([_run_dir(tmp_path, "run", rows)])
    out = tmp_path / "figures"
    quality = plot_quality_vs_speedup(df, out)
    diagonal = plot_measured_vs_predicted(df, out)
    profiles = plot_kept_profile(df, out)
    assert {p.name for p in quality} == {
        f"quality_vs_speedup_{task}.{ext}" for task in ("rt-polarity", "sst2") for ext in ("png", "svg")
    }
    assert {p.name for p in diagonal} == {"measured_vs_predicted.png", "measured_vs_predicted.svg"}
    assert len(profiles) == 2 * 4  # minilm×2 weights on rt-polarity, tinybert, minilm on sst2
    for path in quality + diagonal + profiles:
        assert path.stat().st_size > 1000
        data = path.read_bytes()
        assert data.startswith(b"\x89PNG") if path.suffix == ".png" else b"<svg" in data


def test_measured_speedups_of_different_machines_get_separate_figures(tmp_path: Path) -> None:
    other = [dict(row, hardware={"id": "cuda:Test GPU"}) for row in _rows()]
    df = load_rows([_run_dir(tmp_path, "cpu-run", _rows()), _run_dir(tmp_path, "gpu-run", other)])
    names = {path.name for path in plot_measured_vs_predicted(df, tmp_path / "figures")}
    assert names == {
        f"measured_vs_predicted_{hw}.{ext}"
        for hw in ("cpu-Test-CPU-2t", "cuda-Test-GPU")
        for ext in ("png", "svg")
    }


def test_perplexity_scores_are_not_shown_as_percent():
    from harness.report.leaderboard import _format_cell

    assert _format_cell("score", 0.8123, "accuracy") == "81.23"
    assert _format_cell("score", 52.39, "word_perplexity") == "52.39"
    assert _format_cell("metrics.bits_per_byte", 1.25) == "1.25"
    assert _format_cell("metrics.acc_stderr", 0.045) == "4.50"
