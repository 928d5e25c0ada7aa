"""Equal-TTFT comparison for decoders: TTFT and decode tokens/s through ``generate`` in sweep rows (tiny random
Llama), ``harness compare``'s decoder tables (TTFT columns, TTFT frontier, lm-eval SE, perplexity lower is
better, clamped marks) and figure; the encoder table unchanged."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import harness
from harness import cli
from harness.measure.generation import generation_calls, generation_speeds
from harness.measure.latency import interleaved_latency
from harness.report.compare import compare_frame, compare_markdown, plot_compare

TINY = dict(
    hidden_size=64,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=128,
    vocab_size=97,
    max_position_embeddings=256,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
)
GENERATION_FIELDS = (
    "ttft_ms",
    "dense_ttft_ms",
    "ttft_speedup",
    "decode_tokens_per_s",
    "dense_decode_tokens_per_s",
    "decode_speedup",
)


def random_decoder_run(folder, out, speedups, *extra, tasks="rt-polarity", batch_size="1"):
    """``harness run`` of a tiny decoder's architecture with random weights at 64 tokens: speed only."""
    return [
        "run",
        "--models",
        str(folder),
        "--weights",
        "random",
        "--tasks",
        tasks,
        "--speedups",
        speedups,
        "--batch-size",
        batch_size,
        "--max-length",
        "64",
        "--repeats",
        "1",
        "--out",
        str(out),
        "--no-progress",
        *extra,
    ]


def test_generation_calls_time_the_first_token_and_every_decoding_step():
    torch.manual_seed(0)
    stock = LlamaForCausalLM._from_config(LlamaConfig(**TINY)).eval()
    model = harness.prune(copy.deepcopy(stock), method="last-token", speedup=2)
    ids = torch.randint(3, 97, (2, 48))
    calls, clocks = generation_calls(
        model, stock, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, 3
    )
    first = calls["pruned_first"]()
    assert first.shape == (2, 49)  # the prompt and one new token
    timings = interleaved_latency(calls, warmup=1, repeats=2)
    assert (
        len(clocks["pruned"].stamps) == 4 and len(clocks["dense"].durations_ms) == 3
    )  # 1 + 3 tokens; warm-up too
    speeds = generation_speeds(timings, clocks, 2, 3)
    assert speeds["ttft_speedup"] == pytest.approx(speeds["dense_ttft_ms"] / speeds["ttft_ms"])
    median = sorted(clocks["pruned"].durations_ms[-2:])
    assert speeds["decode_tokens_per_s"] == pytest.approx(1000 * 2 * 3 / ((median[0] + median[1]) / 2))
    assert all(speeds[field] > 0 for field in GENERATION_FIELDS)


@pytest.fixture
def tiny_llama_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    LlamaConfig(**TINY).save_pretrained(tmp_path / "tiny-llama")
    return tmp_path / "tiny-llama"


def test_decoder_sweep_rows_carry_ttft_at_speedups_one_and_one_and_a_half(tiny_llama_folder, capsys):
    out = tiny_llama_folder.parent / "run"
    assert (
        cli.main(
            random_decoder_run(tiny_llama_folder, out, "1,1.5", "--methods", "last-token", batch_size="2")
        )
        == 0
    )
    rows = {row["speedup"]: row for row in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    assert sorted(rows) == [1.0, 1.5] and rows[1.5]["cell_key"].endswith("|last-token|1.5")
    for row in rows.values():
        assert all(row[field] > 0 for field in GENERATION_FIELDS), row
        assert (
            row["decode_new_tokens"] == 8 and row["generation_repeats"] == 1 and row["latency_clamped"] == 0
        )
        assert row["generation_prompt_len"] == row["seq_len"] == 64
    one = rows[1.0]
    assert one["ttft_speedup"] == pytest.approx(one["dense_ttft_ms"] / one["ttft_ms"])
    assert rows[1.5]["predicted_speedup"] == pytest.approx(1.5, rel=0.02)
    capsys.readouterr()
    assert cli.main(["compare", str(out), "--out", str(tiny_llama_folder.parent / "reports")]) == 0
    text = capsys.readouterr().out
    assert (
        "| TTFT speedup | TTFT ms (dense) | decode tok/s (dense) |" in text
        and "Equal predicted FLOPs" in text
    )


def test_tasks_of_a_zero_shot_sweep_share_one_timing_of_the_same_random_ids(tiny_llama_folder):
    """Zero-shot cells time random ids, the same work in every task: one measurement per (method, speedup)
    serves both tasks' rows (equal to the last digit, which two timings never are), and says which task took it."""
    out = tiny_llama_folder.parent / "two"
    assert (
        cli.main(
            random_decoder_run(
                tiny_llama_folder,
                out,
                "1,2",
                "--methods",
                "acc",
                "--limit",
                "2",
                tasks="rt-polarity,heldout-ppl",
            )
        )
        == 0
    )
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    by_task = {(row["task"], row["speedup"]): row for row in rows}
    assert len(rows) == 4 and {task for task, _ in by_task} == {"rt-polarity", "heldout-ppl"}
    for speedup in (1.0, 2.0):
        first, second = by_task["rt-polarity", speedup], by_task["heldout-ppl", speedup]
        for field in ("latency_ms", "dense_latency_ms", "measured_speedup", *GENERATION_FIELDS):
            assert first[field] == second[field], field
        assert first["latency_timed_with"] == second["latency_timed_with"] == "rt-polarity"
    assert by_task["rt-polarity", 1.0]["ttft_ms"] != by_task["rt-polarity", 2.0]["ttft_ms"]


def test_gemfilter_clamped_below_its_request_is_reported(tiny_llama_folder, capsys):
    """At 64 tokens gemfilter's selection pass caps it at 1.71x, though the shared profile reaches 2.08x:
    the row says so (``latency_clamped``) and compare marks the predicted speedup with ‡."""
    out = tiny_llama_folder.parent / "gem"
    assert cli.main(random_decoder_run(tiny_llama_folder, out, "2", "--methods", "gemfilter")) == 0
    row = json.loads((out / "results.jsonl").read_text())
    assert row["latency_clamped"] == 1 and row["predicted_speedup"] == pytest.approx(1.709, abs=1e-3)
    capsys.readouterr()
    assert cli.main(["compare", str(out), "--out", str(tiny_llama_folder.parent / "reports")]) == 0
    text = capsys.readouterr().out
    assert "| 1.71 ‡ |" in text and "‡ clamped" in text


def test_a_prompt_at_the_models_last_position_leaves_room_for_the_new_tokens(tiny_llama_folder):
    from transformers import GPT2Config

    folder, out = tiny_llama_folder.parent / "tiny-gpt2", tiny_llama_folder.parent / "gpt2-run"
    GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=64, vocab_size=97).save_pretrained(folder)
    assert cli.main(random_decoder_run(folder, out, "1")) == 0
    row = json.loads((out / "results.jsonl").read_text())
    assert row["seq_len"] == 64 and row["generation_prompt_len"] == 64 - 9 and row["ttft_ms"] > 0


def decoder_rows():
    """Two methods on an accuracy task and a perplexity task, speedups 1 and 2; gemfilter clamped at 2."""
    rows = []
    timing = {
        ("acc", 1.0): (100.0, 0.70, 30.0),
        ("acc", 2.0): (60.0, 0.66, 45.0),
        ("gemfilter", 1.0): (102.0, 0.70, 30.0),
        ("gemfilter", 2.0): (55.0, 0.60, 40.0),
    }
    for task, metric in (("rt-polarity", "acc"), ("heldout-ppl", "word_perplexity")):
        for (method, speedup), (ttft, acc, ppl) in timing.items():
            score = acc if metric == "acc" else ppl
            rows.append(
                {
                    "task": task,
                    "model": "smollm2",
                    "weights": "pretrained",
                    "checkpoint": "asset:smollm2",
                    "hardware": "cpu:x",
                    "speedup_model": "flops",
                    "method": method,
                    "speedup": speedup,
                    "score": score,
                    "seed": 0,
                    "main_metric": metric,
                    "eval_examples": None,
                    "eval_documents": 500,
                    "metrics.acc_stderr": 0.02 if metric == "acc" else None,
                    "train_recipe": None,
                    "train_epochs": None,
                    "train_examples": None,
                    "batch_size": 1,
                    "seq_len": 1024,
                    "measured_speedup": 100 / ttft,
                    "predicted_speedup": speedup,
                    "eval_predicted_speedup": speedup,
                    "gflops_measured": 1 / speedup,
                    "latency_ms": ttft,
                    "dense_latency_ms": 100.0,
                    "host_busy_cores": 0.0,
                    "ttft_ms": ttft + 5,
                    "dense_ttft_ms": 105.0,
                    "ttft_speedup": 105.0 / (ttft + 5),
                    "decode_tokens_per_s": 20.0,
                    "dense_decode_tokens_per_s": 18.0,
                    "decode_speedup": 20 / 18,
                    "generation_busy_cores": 0.0,
                    "latency_clamped": int(method == "gemfilter" and speedup == 2),
                    "eval_clamped": 0,
                }
            )
    return pd.DataFrame(rows)


def test_compare_decoder_tables_have_ttft_columns_frontier_and_perplexity(tmp_path):
    table = compare_frame(decoder_rows())
    rt = table[table.task == "rt-polarity"].set_index(["method", "speedup"])
    assert rt.loc[("acc", 2.0), "se"] == pytest.approx(0.02)  # lm-eval's stderr, not a binomial guess
    # gemfilter at 1x is as good as acc at 1x and slower; at 2x it is the fastest
    assert {key for key, front in rt["frontier_ttft"].items() if front} == {
        ("acc", 1.0),
        ("acc", 2.0),
        ("gemfilter", 2.0),
    }
    ppl = table[table.task == "heldout-ppl"].set_index(["method", "speedup"])
    # lower perplexity is better: gemfilter at 2x (40, and faster) beats acc at 2x (45)
    assert {key for key, front in ppl["frontier_ttft"].items() if front} == {("acc", 1.0), ("gemfilter", 2.0)}
    text = compare_markdown(table)
    header = (
        "| model | weights | method | speedup | acc (%) ± SE | vs own 1× | TTFT speedup | TTFT ms (dense) | "
        "decode tok/s (dense) | predicted speedup | eval speedup | forward speedup | frontier (TTFT) |"
    )
    assert header in text and "| word_perplexity ± SE |" in text
    assert (
        "| smollm2 | pretrained | acc | 2 | 66.00 ± 2.00 | -4.00 | 1.62 | 65 (105) | 20.0 (18.0) | 2.00 | 2.00 | "
        "1.67 | ★ |" in text
    )
    assert (
        "| smollm2 | pretrained | gemfilter | 2 | 40.00 | +10.00 (+33.3%) | 1.75 | 60 (105) | 20.0 (18.0) | 2.00 ‡ |"
        in text
        and "‡ clamped" in text
    )
    sections = {
        part.split("\n")[0]: part[part.index("Equal predicted FLOPs") :] for part in text.split("### ")[1:]
    }
    order = {
        task: section.index("| 2 | acc | smollm2") < section.index("| 2 | gemfilter | smollm2")
        for task, section in sections.items()
    }
    assert order == {
        "rt-polarity": True,
        "heldout-ppl": False,
    }  # best quality first within a requested speedup
    figures = {path.name for path in plot_compare(table, tmp_path)}
    assert {
        "compare_ttft_rt-polarity.png",
        "compare_ttft_heldout-ppl.svg",
        "compare_rt-polarity.png",
    } <= figures


def test_zero_shot_methods_without_their_own_speedup_1_row_compare_with_the_stock_one():
    """Zero-shot methods prune the same weights and equal them at speedup 1: a sweep may evaluate
    speedup 1 once, and the others' drops read that row.  A fine-tuned method's drop needs its own."""
    rows = decoder_rows()
    rows = rows[~((rows.method == "gemfilter") & (rows.speedup == 1.0))]
    table = compare_frame(rows).set_index(["task", "method", "speedup"])
    assert table.loc[("rt-polarity", "gemfilter", 2.0), "drop_vs_dense"] == pytest.approx(0.60 - 0.70)
    assert table.loc[("heldout-ppl", "gemfilter", 2.0), "drop_vs_dense"] == pytest.approx(40.0 - 30.0)
    tuned = compare_frame(rows.assign(train_recipe="offline-tuning")).set_index(["task", "method", "speedup"])
    assert np.isnan(tuned.loc[("rt-polarity", "gemfilter", 2.0), "drop_vs_dense"])
    assert tuned.loc[("rt-polarity", "acc", 2.0), "drop_vs_dense"] == pytest.approx(0.66 - 0.70)


def test_rows_timed_on_two_machines_get_a_table_each_and_share_the_stock_quality():
    """Measured speedups compare on one machine only, so each machine's rows get their own named tables
    and frontier; a zero-shot row on a machine with no speedup-1 row reads the stock quality of another."""
    rows = decoder_rows()
    moved = rows[(rows.method == "gemfilter") & (rows.speedup == 2.0)].assign(
        hardware="cpu:y", ttft_speedup=1.1
    )
    table = compare_frame(pd.concat([rows[rows.speedup == 1.0], moved]))
    on_y = table[table.hardware == "cpu:y"].set_index("task")
    assert on_y.loc["rt-polarity", "drop_vs_dense"] == pytest.approx(0.60 - 0.70)
    assert on_y["frontier_ttft"].all()  # alone on its machine, whatever cpu:x's rows did
    text = compare_markdown(table)
    section = text[text.index("### rt-polarity") :]
    assert (
        section.index("Timed on cpu:x")
        < section.index("| smollm2 | pretrained | acc | 1 |")
        < section.index("Timed on cpu:y")
        < section.index("| smollm2 | pretrained | gemfilter | 2 | 60.00 ± 2.00 | -10.00 |")
    )
    assert "Timed on" not in compare_markdown(compare_frame(rows))  # one machine: the tables as before


ENCODER_TABLE = """### sst2

Training budget: 1 epoch(s) over 96 training examples, the same for every method; seeds per row: 1.  Recipes: acc: offline-tuning.

| model | weights | method | speedup | accuracy (%) ± SE | seed spread (sd; min–max) | drop vs own 1× | measured speedup | predicted speedup | eval speedup | GFLOPs | latency ms (dense) | frontier |
|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|
| m | pretrained | acc | 1 | 80.00 ± 2.00 |  | +0.00 | 1.00 | 1.00 | 1.00 | 1.000 | 100 (100) | ★ |
| m | pretrained | acc | 2 | 75.00 ± 2.17 |  | -5.00 | 2.00 | 2.00 | 2.00 | 0.500 | 50 (100) | ★ |

Weights of m (pretrained): local:m.
"""


def test_encoder_compare_table_is_unchanged():
    """The encoder table, byte for byte as before the decoder tables existed (rows without TTFT fields)."""
    rows = [
        {
            "task": "sst2",
            "model": "m",
            "weights": "pretrained",
            "checkpoint": "local:m",
            "hardware": "cpu:x",
            "speedup_model": "flops",
            "method": "acc",
            "speedup": speedup,
            "score": score,
            "seed": 0,
            "main_metric": "accuracy",
            "eval_examples": 400,
            "train_recipe": "offline-tuning",
            "train_epochs": 1.0,
            "train_examples": 96,
            "batch_size": 8,
            "seq_len": 32,
            "measured_speedup": speedup,
            "predicted_speedup": speedup,
            "eval_predicted_speedup": speedup,
            "gflops_measured": 1 / speedup,
            "latency_ms": 100 / speedup,
            "dense_latency_ms": 100.0,
            "host_busy_cores": 0.0,
        }
        for speedup, score in ((1.0, 0.80), (2.0, 0.75))
    ]
    assert compare_markdown(compare_frame(pd.DataFrame(rows))) == ENCODER_TABLE
