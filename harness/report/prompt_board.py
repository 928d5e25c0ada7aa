"""The prompt-mode leaderboard and its figures: how much each prompt mode loses at each speedup.

Rows are model × weights × task × prompt mode × speedup (from runs made with ``harness run --prompts``).
Columns: the main metric with its standard error, the spread across instruction templates, the drop
against speedup 1 of the same model, task and mode, measured and predicted speedup (the latency batch
is each mode's own prompts at their mean length, so long prompts show what they gain), FLOPs, mean
prompt tokens, the chat-template flag and the hardware.  Markdown and CSV beside the main boards;
figures per task: the metric against measured speedup, one line per mode; and the share of kept tokens
per prompt segment, layer by layer, for the few-shot and instruction modes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from harness.registry import HarnessError
from harness.report.leaderboard import RANDOM_WEIGHTS, busy, busy_mark, busy_note, fixed
from harness.report.plots import MARKERS, PAPER_STYLE, _legend, _save, _slug
from harness.report.store import RESULTS_FILE, report_rows, unique_runs, write_text_atomic

GROUP = ["model", "weights", "task", "prompt_mode", "method", "chat_template", "num_fewshot", "hardware"]
COLUMNS = [
    "model",
    "weights",
    "task",
    "prompt_mode",
    "chat_template",
    "num_fewshot",
    "method",
    "speedup",
    "main_metric",
    "score",
    "stderr",
    "template_spread",
    "drop",
    "measured_speedup",
    "predicted_speedup",
    "eval_predicted_speedup",
    "gflops_analytic",
    "mean_prompt_tokens",
    "seq_len",
    "eval_documents",
    "hardware",
    "host_busy",
]
PERCENT = {"score", "stderr", "template_spread", "drop"}
"""Shown in percent (points for the drop)."""
SEGMENT_COLORS = {
    "instruction": "#4477aa",
    "demonstrations": "#ccbb44",
    "input": "#ee6677",
    "options": "#228833",
}


def _row(raw: dict) -> dict:
    metrics = raw.get("metrics") or {}
    main = raw.get("main_metric")
    hardware = raw.get("hardware")
    random = raw.get("weights") == RANDOM_WEIGHTS
    return {
        **{column: raw.get(column) for column in COLUMNS},
        "score": None if random else raw.get("score"),
        "stderr": None if random or not main else metrics.get(f"{main}_stderr"),
        "template_spread": None if random else metrics.get("template_spread"),
        "gflops_analytic": None if raw.get("flops_analytic") is None else raw["flops_analytic"] / 1e9,
        "hardware": hardware.get("id") if isinstance(hardware, dict) else hardware,
        "host_busy": busy(raw.get("host_busy_cores")),
        "host_busy_cores": raw.get("host_busy_cores"),
        "kept_segments": raw.get("kept_segments"),
    }


def has_prompt_rows(run_dirs: Iterable[str | Path]) -> bool:
    """Whether any of the runs holds rows made with ``--prompts`` (``harness leaderboard`` and ``harness
    plot`` then rebuild the prompt-mode board and figures too)."""
    return any(
        raw.get("prompt_mode")
        for run_dir in unique_runs(run_dirs)
        for raw in report_rows(run_dir / RESULTS_FILE)
    )


def load_prompt_rows(run_dirs: Iterable[str | Path]) -> pd.DataFrame:
    """Every prompt-mode row of the runs, with ``drop`` against speedup 1 of the same group."""
    rows = []
    for run_dir in unique_runs(run_dirs):
        rows += [_row(raw) for raw in report_rows(run_dir / RESULTS_FILE) if raw.get("prompt_mode")]
    if not rows:
        raise HarnessError("no prompt-mode rows in " + ", ".join(map(str, run_dirs)) + "; run with --prompts")
    frame = pd.DataFrame(rows)
    base = frame[frame["speedup"] == 1].set_index(GROUP)["score"]
    keys = list(frame[GROUP].itertuples(index=False, name=None))
    baseline = [base.get(key) if key in base.index else None for key in keys]
    frame["drop"] = [
        None if b is None or s is None or _missing(s) else s - b for s, b in zip(frame["score"], baseline)
    ]
    return frame.sort_values(
        ["model", "weights", "task", "prompt_mode", "speedup"], kind="stable"
    ).reset_index(drop=True)


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _cell(column: str, value) -> str:
    if _missing(value):
        return ""
    if column in PERCENT:
        return f"{100 * value:+.2f}" if column == "drop" else f"{100 * value:.2f}"
    if isinstance(value, float):
        return f"{value:.4g}" if column == "gflops_analytic" else f"{value:.2f}"
    return str(value).replace("|", "\\|")


MARKDOWN = [
    "model",
    "method",
    "task",
    "mode",
    "speedup",
    "quality ± SE",
    "template spread",
    "drop",
    "measured / predicted",
    "GFLOPs",
    "prompt tokens",
    "hardware",
]
"""The Markdown board's columns (the CSV keeps ``COLUMNS``); an empty one (no instruction templates) is left
out, and what every row repeats (weights, metric, documents) is said once under the table."""


def _mode(record: dict) -> str:
    """The prompt mode with what sets it apart: the demonstrations of few-shot, the chat template."""
    mode = str(record["prompt_mode"])
    if mode == "few-shot" and not _missing(record["num_fewshot"]):
        mode += f" ({int(record['num_fewshot'])})"
    return mode + (", chat template" if record["chat_template"] is True else "")


def _markdown_cells(record: dict) -> dict[str, str]:
    quality, error = _cell("score", record["score"]), _cell("stderr", record["stderr"])
    measured = _cell("measured_speedup", record["measured_speedup"]) + busy_mark(record["host_busy_cores"])
    return {
        "model": _cell("model", record["model"]),
        "method": _cell("method", record["method"]),
        "task": _cell("task", record["task"]),
        "mode": _mode(record),
        "speedup": _cell("speedup", record["speedup"]),
        "quality ± SE": f"{quality} ± {error}" if quality and error else quality,
        "template spread": _cell("template_spread", record["template_spread"]),
        "drop": _cell("drop", record["drop"]),
        "measured / predicted": f"{measured} / {_cell('predicted_speedup', record['predicted_speedup'])}",
        "GFLOPs": _cell("gflops_analytic", record["gflops_analytic"]),
        "prompt tokens": fixed(record["mean_prompt_tokens"], ".1f"),
        "hardware": _cell("hardware", record["hardware"]),
    }


def _notes(frame: pd.DataFrame) -> list[str]:
    weights = frame[["model", "weights"]].drop_duplicates().itertuples(index=False)
    metrics = ", ".join(sorted({str(m) for m in frame["main_metric"].dropna()})) or "no metric"
    documents = ", ".join(sorted({str(int(d)) for d in frame["eval_documents"] if not _missing(d)}))
    return [
        "",
        "- weights: " + "; ".join(f"**{model}** {kind}" for model, kind in weights),
        f"- quality: {metrics} (percent) over {documents or 'all'} documents per mode ± lm-eval's standard "
        "error; template spread: across instruction templates; drop: quality minus speedup 1's in the same "
        "mode (points); measured / predicted: dense ÷ pruned latency on each mode's own prompts (prompt "
        "tokens: their mean length), and the FLOP prediction; GFLOPs: analytic, of that batch.  Every "
        "column: the CSV beside this file.",
    ]


def to_markdown(frame: pd.DataFrame) -> str:
    """The compact board (``MARKDOWN``): metric ± stderr and spread in percent, the drop in points, a busy
    host's measured speedup marked (``busy_mark``) and said under the table."""
    cells = [_markdown_cells(record) for record in frame.to_dict("records")]
    columns = [column for column in MARKDOWN if any(row[column] for row in cells)]
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(row[column] for column in columns) + " |" for row in cells]
    return "\n".join(lines + _notes(frame) + busy_note(frame["host_busy_cores"])) + "\n"


def write_prompt_board(frame: pd.DataFrame, out_dir: str | Path, name: str) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    md_path, csv_path = out_dir / f"{name}.md", out_dir / f"{name}.csv"
    write_text_atomic(md_path, to_markdown(frame))
    write_text_atomic(csv_path, frame[COLUMNS].to_csv(index=False))
    return md_path, csv_path


def plot_modes(frame: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """Per task: the metric (± stderr) against measured speedup, one line per prompt mode."""
    out_dir, paths = Path(out_dir), []
    scored = frame.dropna(subset=["score"])
    with matplotlib.rc_context(PAPER_STYLE):
        for (model, weights, task), rows in scored.groupby(["model", "weights", "task"], sort=True):
            fig = Figure(figsize=(3.6, 2.9), layout="constrained")
            ax = fig.subplots()
            for index, (mode, line) in enumerate(rows.groupby("prompt_mode", sort=False)):
                line = line.sort_values("speedup")
                tokens = line["mean_prompt_tokens"].dropna()
                label = f"{mode} ({tokens.mean():.0f} tokens)" if len(tokens) else mode
                ax.errorbar(
                    line["measured_speedup"],
                    100 * line["score"],
                    yerr=100 * line["stderr"].fillna(0),
                    marker=MARKERS[index % len(MARKERS)],
                    capsize=2,
                    label=label,
                )
                for _, point in line.iterrows():
                    ax.annotate(
                        f"{point['speedup']:g}×",
                        (point["measured_speedup"], 100 * point["score"]),
                        fontsize=6,
                        xytext=(3, 3),
                        textcoords="offset points",
                    )
            metric = ", ".join(rows["main_metric"].dropna().unique()) or "score"
            ax.set(xlabel="measured speedup (×, latency; labels: requested)", ylabel=f"{metric} (%)")
            ax.set_title(f"{model} ({weights}) · {task}")
            _legend(fig, ax, max_cols=2)
            paths += _save(fig, out_dir, _slug("prompt_modes", model, task))
    return paths


def plot_kept_segments(run_dirs: Iterable[str | Path], out_dir: str | Path) -> list[Path]:
    """Per model and task: for each traced mode (rows) and speedup (columns), the share of kept tokens
    from each prompt segment, layer by layer (layer 0: the prompt as it enters)."""
    frame = load_prompt_rows(run_dirs)
    traced = frame[frame["kept_segments"].map(lambda value: isinstance(value, dict) and bool(value))]
    out_dir, paths = Path(out_dir), []
    with matplotlib.rc_context(PAPER_STYLE):
        for (model, task), rows in traced.groupby(["model", "task"], sort=True):
            modes, speedups = list(dict.fromkeys(rows["prompt_mode"])), sorted(rows["speedup"].unique())
            fig = Figure(figsize=(1.9 * len(speedups) + 0.6, 1.7 * len(modes) + 0.6), layout="constrained")
            axes = np.atleast_2d(
                fig.subplots(len(modes), len(speedups), sharex=True, sharey=True, squeeze=False)
            )
            for (mode, speedup), row in rows.groupby(["prompt_mode", "speedup"]):
                ax = axes[modes.index(mode), speedups.index(speedup)]
                shares = row.iloc[0]["kept_segments"]
                layers = np.arange(len(next(iter(shares.values()))))
                ax.stackplot(
                    layers,
                    *(100 * np.array(shares[s]) for s in SEGMENT_COLORS),
                    labels=list(SEGMENT_COLORS),
                    colors=list(SEGMENT_COLORS.values()),
                )
                ax.set_title(f"{mode} · {speedup:g}×")
                ax.set(ylim=(0, 100), xlim=(0, layers[-1]))
            for ax in axes[-1]:
                ax.set_xlabel("layer (0 = prompt)")
            for ax in axes[:, 0]:
                ax.set_ylabel("kept tokens (%)")
            fig.suptitle(f"{model} · {task}: where the kept tokens come from", fontsize=8)
            _legend(fig, axes[0, 0], max_cols=4)
            paths += _save(fig, out_dir, _slug("kept_segments", model, task))
    return paths
