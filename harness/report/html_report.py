"""``harness report``: run folders as one static HTML report that opens from disk and can be browsed.

Why: the Markdown boards answer "who keeps the most quality at equal cost" but cannot be sorted, filtered
or zoomed, and a 156-row board is a wall of text.  The report is one folder, ``index.html`` with
``plotly.min.js`` beside it, that needs no server and fetches nothing (no CDN), so it can be zipped,
attached or opened on an offline machine from ``file://``.

Per task: every row of the runs (one per finished cell, read through ``load_rows``, which refuses
foreign and stale rows), sortable by a click on a header and filtered by method, model, requested
speedup and hardware; ★ marks the Pareto frontier of quality against measured speedup exactly as
``harness compare`` computes it (``compare_frame``: per task, model, weights and machine, the mean over
seeds), † a timing taken on a busy host (``busy_mark``).  A click on a row's ▸ shows its provenance: the
command that reproduces it (the sweep's own settings from ``sweep.json``, narrowed to the row's cell),
weights and checkpoint, the hardware fingerprint, dtype, date and harness version.  Figures: quality
against measured speedup with the frontier (per task and machine), kept tokens per layer, and, for runs
made with ``--prompts``, the prompt modes and the prompt segments the kept tokens come from.

Libraries, and why:

* Jinja2 renders the page from ``templates/report.html.j2``: it autoescapes, so a checkpoint or task name
  holding ``<`` or ``&`` cannot break the page, and the markup stays out of Python strings.
* Plotly draws the figures: hovering shows a point's values, the legend hides and shows a method (13 of
  them crowd a static figure), and the figures are plain JSON drawn by one JavaScript file that ships
  inside the plotly wheel, so the page works offline without vendoring anything.  Vega-Lite through
  Altair would need three more files (vega, vega-lite, vega-embed) that it loads from a CDN by default.
* The table script (``static/report.js``) is hand-written: sorting on a click and four select filters
  are about a hundred lines, less than vendoring DataTables and its jQuery would cost.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import shutil
import tempfile
from collections.abc import Iterable
from importlib.resources import files
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd
import plotly.graph_objects as go
from markupsafe import Markup, escape
from matplotlib.colors import to_hex
from plotly.colors import sample_colorscale
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from harness.registry import HarnessError
from harness.report.compare import GROUP, _apart_by_protocol, compare_frame
from harness.report.leaderboard import (
    BUSY_MARK,
    RANDOM_WEIGHTS,
    _format_cell,
    _run_names,
    busy_mark,
    busy_note,
    load_rows,
    lower_is_better,
)
from harness.report.plots import COLORS, _label, _slug
from harness.report.prompt_board import SEGMENT_COLORS, has_prompt_rows, load_prompt_rows
from harness.report.store import RESULTS_FILE, report_rows, unique_runs
from harness.version import __version__

REPORT_FILE, PLOTLY_FILE, MARKER_FILE = "index.html", "plotly.min.js", "report.json"
"""The page, the figures' script beside it, and the file that marks a folder as a report (``_check_out``)."""
FILTERS = ("method", "model", "speedup", "hardware")
PALETTE = [to_hex(color) for color in COLORS]
"""The paper figures' twelve colours (``plots.COLORS``), so that a method looks the same in both."""
SYMBOLS = ["circle", "square", "diamond", "triangle-up", "triangle-down", "cross", "star", "x", "hexagon"]
"""Marker shapes, so that lines of a repeated colour (a thirteenth method) still tell apart."""
FIGURE_CONFIG = {"displaylogo": False, "responsive": True}
TEXT_COLUMNS = {"run", "model", "weights", "method", "hardware", "frontier"}


def write_report(run_dirs: Iterable[str | Path], out: str | Path) -> Path:
    """Write the report of ``run_dirs`` into the folder ``out`` and return its ``index.html``.

    All of it or nothing: the folder is built beside ``out`` and renamed into place, so a failure (a
    foreign row, a full disk) leaves ``out`` as it was; a former report there is replaced, any other
    non-empty folder or a file is refused."""
    out = Path(out)
    _check_out(out)
    runs = checked_runs(run_dirs)
    page = render_report(runs)
    marker = {"runs": [str(run) for run in runs], "harness_version": __version__}
    _write_folder(
        out,
        {REPORT_FILE: page, PLOTLY_FILE: get_plotlyjs(), MARKER_FILE: json.dumps(marker, indent=1) + "\n"},
    )
    return out / REPORT_FILE


def checked_runs(run_dirs: Iterable[str | Path]) -> list[Path]:
    """The run folders, each once, or a ``HarnessError`` naming the first that is missing or not a run."""
    runs = unique_runs(run_dirs)
    if not runs:
        raise HarnessError("no run folders given; name at least one (a folder with results.jsonl)")
    for run in runs:
        if not run.is_dir():
            raise HarnessError(f"run folder {run} does not exist")
        if not (run / RESULTS_FILE).is_file():
            raise HarnessError(f"{run} is not a run folder: it has no {RESULTS_FILE}")
    return runs


def _check_out(out: Path) -> None:
    """Refuse an ``--out`` that is a file, or a folder holding anything but a former report.

    Why: the report replaces its folder whole, so ``--out .`` or ``--out leaderboards`` would otherwise
    delete what is there."""
    if out.exists() and not out.is_dir():
        raise HarnessError(f"--out {out} is a file; give a folder for the report")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER_FILE).is_file():
        raise HarnessError(
            f"--out {out} is a folder that holds other files than a report; give a new or empty folder"
        )


def _write_folder(out: Path, contents: dict[str, str]) -> None:
    """``contents`` (file name: text) as the folder ``out``, renamed into place once complete."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        building = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as exc:
        raise HarnessError(f"cannot write the report into {out}: {exc.strerror or exc}") from None
    try:
        os.chmod(building, 0o755)  # mkdtemp's 0700 would hide the report from a web server or other users
        for name, text in contents.items():
            (building / name).write_text(text, encoding="utf-8")
        _swap_in(building, out)
    except OSError as exc:
        raise HarnessError(f"cannot write the report into {out}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(building, ignore_errors=True)


def _swap_in(building: Path, out: Path) -> None:
    """Rename ``building`` to ``out``; a former report there is moved aside first and removed after."""
    if not out.exists():
        os.rename(building, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
    os.rename(out, old / "report")
    try:
        os.rename(building, out)
    except OSError:
        os.rename(old / "report", out)  # put the former report back rather than leave nothing
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def render_report(runs: list[Path]) -> str:
    """The page of ``runs`` (checked run folders) as HTML text."""
    frame = _apart_by_protocol(load_rows(runs))
    if frame.empty:
        raise HarnessError(f"{', '.join(map(str, runs))} hold no finished cells yet; nothing to report")
    table = compare_frame(frame)
    frame["frontier"] = _frontier(frame, table)
    names = _run_names(runs)
    raw = {
        (name, json.dumps(row["cell_key"])): (row, run)
        for run, name in zip(runs, names)
        for row in report_rows(run / RESULTS_FILE)
    }
    configs = {name: _sweep_config(run) for run, name in zip(runs, names)}
    prompts = load_prompt_rows(runs) if has_prompt_rows(runs) else None
    tasks = [
        _task(task, rows, table[table["task"] == task], raw, configs, prompts)
        for task, rows in frame.groupby("task", sort=True)
    ]
    template = _environment().get_template("report.html.j2")
    return template.render(
        title="harness report: " + ", ".join(names),
        runs=[_run_summary(run, name, frame[frame["run"] == name]) for run, name in zip(runs, names)],
        tasks=tasks,
        version=__version__,
        busy=BUSY_MARK,
        style=Markup(_static("report.css")),
        script=Markup(_static("report.js")),
        plotly_file=PLOTLY_FILE,
    )


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("harness.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,  # a misspelt name fails the report, not renders as nothing
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _static(name: str) -> str:
    """A file of ``static/``, inlined into the page: one file fewer to lose when the folder is copied."""
    return (files("harness.report") / "static" / name).read_text(encoding="utf-8")


def _frontier(frame: pd.DataFrame, table: pd.DataFrame) -> np.ndarray:
    """Whether each row's (task, model, weights, machine, method, speedup) is on the frontier of
    ``table`` (``compare_frame``'s): the mean over seeds decides, so every seed row of a point is marked."""

    def keys(df: pd.DataFrame) -> pd.DataFrame:  # None and NaN alike, so that the merge matches them
        return df[GROUP].map(lambda value: "" if _missing(value) else repr(value))

    marked = keys(table).assign(frontier=table["frontier"].to_numpy())
    merged = keys(frame).merge(marked, on=GROUP, how="left")
    return merged["frontier"].fillna(False).astype(bool).to_numpy()


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _sweep_config(run: Path) -> dict:
    """The run's ``sweep.json`` settings; empty where the folder has none (or it does not parse)."""
    try:
        config = json.loads((run / "sweep.json").read_text()).get("config")
    except (OSError, ValueError, AttributeError):
        return {}
    return config if isinstance(config, dict) else {}


def _run_summary(run: Path, name: str, rows: pd.DataFrame) -> dict:
    return {
        "name": name,
        "path": str(run),
        "rows": len(rows),
        "tasks": ", ".join(sorted(rows["task"].unique())),
        "hardware": ", ".join(sorted(rows["hardware"].dropna().unique())),
    }


# --- the table -----------------------------------------------------------------------------------


def _task(task: str, rows: pd.DataFrame, table: pd.DataFrame, raw: dict, configs: dict, prompts) -> dict:
    """One task's section: its columns, rows, filter choices, figures and footnotes."""
    metric = _first(rows["main_metric"]) or "score"
    columns = _columns(rows, metric)
    task_prompts = None if prompts is None else prompts[prompts["task"] == task]
    return {
        "id": "task-" + _slug(task),
        "name": task,
        "metric": metric,
        "direction": "lower is better" if lower_is_better(metric) else "higher is better",
        "columns": [{"label": label, "numeric": key not in TEXT_COLUMNS} for key, label in columns],
        "rows": [_table_row(record, columns, raw, configs) for record in rows.to_dict("records")],
        "filters": {name: _choices(rows, name) for name in FILTERS},
        "figures": _figures(task, rows, table, task_prompts),
        "notes": busy_note([*rows["host_busy_cores"], *rows["generation_busy_cores"]])[1:],
    }


def _first(series: pd.Series) -> Any:
    values = series.dropna()
    return values.iloc[0] if len(values) else None


def _columns(rows: pd.DataFrame, metric: str) -> list[tuple[str, str]]:
    """(key, header) of the task's table; a column only where some row has it (run, seed, TTFT)."""
    unit = "" if lower_is_better(metric) else " (%)"
    columns = [("run", "run")] if rows["run"].nunique() > 1 else []
    columns += [("model", "model"), ("weights", "weights"), ("method", "method"), ("speedup", "speedup")]
    columns += [("seed", "seed")] if rows["seed"].nunique() > 1 else []
    columns += [
        ("score", f"{metric}{unit}"),
        ("measured_speedup", "measured speedup"),
        ("predicted_speedup", "predicted speedup"),
        ("eval_predicted_speedup", "eval speedup"),
    ]
    if pd.to_numeric(rows["ttft_speedup"], errors="coerce").notna().any():
        columns += [("ttft_speedup", "TTFT speedup")]
    columns += [("latency_ms", "latency ms"), ("gflops_measured", "GFLOPs"), ("hardware", "hardware")]
    return columns + [("frontier", "frontier")]


def _cell(key: str, record: dict) -> dict:
    """A cell's shown text and its sort value (the raw number, so that 10 sorts after 9)."""
    value = record.get(key)
    if key == "frontier":
        return {"text": "★" if value else "", "sort": int(bool(value))}
    if key == "speedup":
        return {"text": f"{value:g}×", "sort": value}
    if _missing(value):
        return {"text": "", "sort": ""}
    text = value if isinstance(value, str) else _format_cell(key, value, record.get("main_metric"))
    if key == "measured_speedup":
        text += busy_mark(record.get("host_busy_cores"))
    elif key == "ttft_speedup":  # not a board column: formatted here as the board's speedups are
        text = f"{value:.2f}{busy_mark(record.get('generation_busy_cores'))}"
    return {"text": text, "sort": value if isinstance(value, int | float) else str(value)}


def _table_row(record: dict, columns: list[tuple[str, str]], raw: dict, configs: dict) -> dict:
    row, run = raw[(record["run"], json.dumps(record["cell_key"]))]
    return {
        "cells": [_cell(key, record) for key, _ in columns],
        "filters": {name: _filter_value(record, name) for name in FILTERS},
        "cell_key": record["cell_key"],
        "provenance": _provenance(row, run, configs[record["run"]]),
    }


def _filter_value(record: dict, name: str) -> str:
    value = record.get(name)
    return "" if _missing(value) else f"{value:g}" if name == "speedup" else str(value)


def _choices(rows: pd.DataFrame, name: str) -> list[str]:
    values = rows[name].dropna().unique()
    return [f"{value:g}" for value in sorted(values)] if name == "speedup" else sorted(map(str, values))


# --- provenance ----------------------------------------------------------------------------------


def _provenance(row: dict, run: Path, config: dict) -> list[tuple[str, str]]:
    """What made the row, as (label, text) pairs: enough to reproduce it and to tell it from another."""
    settings = (row.get("identity") or {}).get("settings") or {}
    items = [
        ("command", command(row, config)),
        ("run folder", str(run)),
        ("cell", str(row["cell_key"])),
        ("weights", row["weights"]),
        ("checkpoint", row.get("checkpoint") or RANDOM_WEIGHTS),
        ("checkpoint check", row.get("checkpoint_verified")),
        ("fine-tuning", _pairs(row.get("train"))),
        ("data", _pairs(row.get("data"))),
        ("hardware", _pairs(row["hardware"])),
        ("dtype", settings.get("dtype") or row.get("dtype")),
        ("date", row.get("timestamp")),
        ("harness version", row.get("harness_version") or "not recorded (a harness older than 0.1.0)"),
    ]
    return [(label, str(text)) for label, text in items if text]


def _pairs(value: Any) -> str:
    """A dict as ``key: value`` pairs (nested values as compact JSON); anything else as it is."""
    if not isinstance(value, dict):
        return "" if value is None else str(value)
    return "; ".join(
        f"{key}: {json.dumps(item) if isinstance(item, dict | list) else item}"
        for key, item in value.items()
        if item is not None
    )


SWEEP_OPTIONS = [
    ("protocol", "--protocol"),
    ("speedup_model", "--speedup-model"),
    ("device", "--device"),
    ("dtype", "--dtype"),
    ("batch_size", "--batch-size"),
    ("max_length", "--max-length"),
    ("max_eval", "--limit"),
    ("max_train", "--max-train"),
    ("data_dir", "--data-dir"),
    ("repeats", "--repeats"),
    ("seeds", "--seeds"),
    ("search", "--search"),
    ("num_fewshot", "--num-fewshot"),
]
"""``sweep.json`` config keys and the ``harness run`` options that set them."""


def command(row: dict, config: dict) -> str:
    """The ``harness run`` that reproduces ``row``: its sweep's settings (``config``, from ``sweep.json``),
    narrowed to the row's model, task, method and speedup.  Without ``sweep.json``, the row's own
    model, task, method, speedup, device and batch size, the rest at their defaults."""
    args = ["harness", "run", "--models", row["model"], "--tasks", row["task"], "--methods", row["method"]]
    args += ["--speedups", f"{row['speedup']:g}"]
    args += ["--weights", "random" if row["weights"] == RANDOM_WEIGHTS else "pretrained"]
    defaults = {"device": row.get("device"), "batch_size": row.get("batch_size")}
    for key, option in SWEEP_OPTIONS:
        value = config.get(key, defaults.get(key))
        if value is not None:
            args += [option, str(value)]
    args += _training_options(config)
    if config.get("prompts"):
        args += ["--prompts", ",".join(config["prompts"])]
    if config.get("chat_template"):
        args.append("--chat-template")
    if row.get("threads"):
        args += ["--threads", str(row["threads"])]
    if config.get("out"):
        args += ["--out", str(config["out"])]
    return shlex.join(args)


def _training_options(config: dict) -> list[str]:
    """Fine-tuning's epochs, and finetune-lm's steps, length, LoRA rank and data, where the sweep used them."""
    args = []
    epochs = (config.get("train") or {}).get("epochs")
    if epochs is not None and config.get("protocol") in (None, "finetune"):
        args += ["--epochs", f"{epochs:g}"]
    lm_train = config.get("lm_train") or {}
    if config.get("protocol") == "finetune-lm":
        for key, option in (("steps", "--train-steps"), ("max_length", "--train-length"), ("lora", "--lora")):
            if lm_train.get(key) is not None:
                args += [option, str(lm_train[key])]
        if config.get("train_on"):
            args += ["--train-on", ",".join(config["train_on"])]
    return args


# --- figures -------------------------------------------------------------------------------------


def _figures(task: str, rows: pd.DataFrame, table: pd.DataFrame, prompts) -> list[Markup]:
    """The task's figures as HTML fragments (no script tag of their own: the page loads plotly.min.js)."""
    scored = table.dropna(subset=["quality", "measured_speedup"])
    figures = [
        _quality_figure(task, key, group)
        for key, group in scored.groupby(["hardware", "model", "weights"], sort=True)
    ]
    profiled = rows[rows["kept_tokens"].map(lambda kept: isinstance(kept, list) and len(kept) > 0)]
    figures += [
        _kept_figure(task, model, weights, group)
        for (model, weights), group in profiled.groupby(["model", "weights"], sort=True)
    ]
    if prompts is not None and not prompts.empty:
        figures += _prompt_figures(task, prompts)
    return [_html(figure) for figure in figures]


def _html(figure: go.Figure) -> Markup:
    figure.update_layout(
        template="plotly_white",
        font={"family": "system-ui, sans-serif", "size": 12},
        margin={"l": 60, "r": 20, "t": 70, "b": 50},
        height=440,
        title={"font": {"size": 14}, "x": 0.01, "xanchor": "left"},
    )
    return Markup(figure.to_html(full_html=False, include_plotlyjs=False, config=FIGURE_CONFIG))


def _title(text: str, subtitle: str) -> str:
    """A figure title with its context on a second, smaller line (a half-page figure has no room for one)."""
    return f"{escape(text)}<br><span style='font-size:12px;color:#59636e'>{escape(subtitle)}</span>"


def _quality_figure(task: str, key: tuple, rows: pd.DataFrame) -> go.Figure:
    """Mean quality (± seeds' sd, else SE) against measured speedup, one line per method, the frontier as
    a dashed step line through open circles (``compare.plot_compare``'s figure); one figure per machine,
    model and weights, the rows among which ``compare_frame`` draws a frontier."""
    hardware, model, weights = key
    metric = _first(rows["main_metric"]) or "score"
    scale = 1 if lower_is_better(metric) else 100
    figure = go.Figure()
    for index, (method, line) in enumerate(rows.groupby("method", sort=True)):
        line = line.sort_values("measured_speedup")
        spread = line["seed_sd"].where(line["seed_sd"].notna(), line["se"]).astype(float).fillna(0)
        figure.add_scatter(
            x=line["measured_speedup"],
            y=scale * line["quality"],
            error_y={"array": scale * spread, "thickness": 1, "width": 3},
            customdata=line["speedup"],
            mode="lines+markers",
            name=method,
            line={"color": PALETTE[index % len(PALETTE)]},
            marker={"symbol": SYMBOLS[index % len(SYMBOLS)], "size": 7},
            hovertemplate="%{fullData.name}<br>requested %{customdata:g}×<br>measured %{x:.2f}×"
            "<br>%{y:.2f}<extra></extra>",
        )
    front = rows[rows["frontier"].astype(bool)].sort_values("measured_speedup")
    figure.add_scatter(
        x=front["measured_speedup"],
        y=scale * front["quality"],
        mode="lines+markers",
        name="★ Pareto frontier",
        line={"color": "#333", "dash": "dash", "shape": "hv", "width": 1},
        marker={"symbol": "circle-open", "size": 13, "color": "#333"},
        hoverinfo="skip",
    )
    shape = f"batch {_first(rows['batch_size'])} × seq {_first(rows['seq_len'])}"
    figure.update_layout(
        title=_title(
            f"{task}: quality vs measured speedup — {_label(model, weights)}",
            f"{hardware} · {shape}; ○ and dashes: frontier",
        ),
        xaxis_title="measured speedup (×, latency vs stock dense)",
        yaxis_title=f"{metric}{'' if scale == 1 else ' (%)'}, mean over seeds",
    )
    return figure


def _kept_figure(task: str, model: str, weights: str, rows: pd.DataFrame) -> go.Figure:
    """Mean kept tokens per layer, one line per requested speedup; a menu picks the method."""
    figure = go.Figure()
    methods = sorted(rows["method"].unique())
    speedups = sorted(rows["speedup"].unique())
    colors = dict(zip(speedups, sample_colorscale("Viridis", list(np.linspace(0, 0.9, len(speedups))))))
    owners = []
    for method in methods:
        for speedup, group in rows[rows["method"] == method].groupby("speedup", sort=True):
            kept = _mean_profile(group["kept_tokens"])
            figure.add_scatter(
                x=list(range(1, len(kept) + 1)),
                y=kept,
                mode="lines+markers",
                name=f"{speedup:g}× requested",
                line={"color": colors[speedup]},
                visible=method == methods[0],
                hovertemplate=f"{method} · {speedup:g}×<br>layer %{{x}}: %{{y:.1f}} tokens<extra></extra>",
            )
            owners.append(method)
    for seq_len in rows["seq_len"].dropna().unique()[:1]:
        figure.add_hline(y=seq_len, line={"dash": "dash", "color": "#888", "width": 1})
    if len(methods) > 1:
        buttons = [
            {"label": method, "method": "update", "args": [{"visible": [o == method for o in owners]}]}
            for method in methods
        ]
        figure.update_layout(
            updatemenus=[{"buttons": buttons, "x": 1.0, "xanchor": "right", "y": 1.02, "yanchor": "bottom"}]
        )
    figure.update_layout(
        title=_title(
            f"{task}: kept tokens per layer — {_label(model, weights)}",
            "pick the method in the menu" if len(methods) > 1 else methods[0],
        ),
        xaxis_title="layer",
        yaxis_title="mean kept tokens (dashed: sequence length)",
        yaxis_rangemode="tozero",
    )
    return figure


def _mean_profile(profiles: pd.Series) -> list[float]:
    """The mean of the rows' kept-token profiles (seeds, runs); the first where their lengths differ."""
    lists = [list(kept) for kept in profiles]
    if len({len(kept) for kept in lists}) > 1:
        return lists[0]
    return list(np.mean(np.array(lists, dtype=float), axis=0))


def _prompt_figures(task: str, prompts: pd.DataFrame) -> list[go.Figure]:
    """Per model and weights, the metric against measured speedup per prompt mode; per model, where the
    kept tokens come from (``prompt_board.plot_modes`` and ``plot_kept_segments``' figures)."""
    figures = []
    scored = prompts.dropna(subset=["score"])
    for (model, weights), rows in scored.groupby(["model", "weights"], sort=True):
        figure = go.Figure()
        for index, (mode, line) in enumerate(rows.groupby("prompt_mode", sort=False)):
            line = line.sort_values("speedup")
            figure.add_scatter(
                x=line["measured_speedup"],
                y=100 * line["score"],
                error_y={"array": 100 * line["stderr"].astype(float).fillna(0), "thickness": 1},
                text=[f"{speedup:g}×" for speedup in line["speedup"]],
                mode="lines+markers+text",
                textposition="top right",
                name=mode,
                line={"color": PALETTE[index % len(PALETTE)]},
            )
        metric = _first(rows["main_metric"]) or "score"
        figure.update_layout(
            title=_title(f"{task}: prompt modes — {model} ({weights})", "± standard error"),
            xaxis_title="measured speedup (×; labels: requested)",
            yaxis_title=f"{metric} (%)",
        )
        figures.append(figure)
    traced = prompts[prompts["kept_segments"].map(lambda value: isinstance(value, dict) and bool(value))]
    figures += [_segments_figure(task, model, rows) for model, rows in traced.groupby("model", sort=True)]
    return figures


def _segments_figure(task: str, model: str, rows: pd.DataFrame) -> go.Figure:
    """For each traced mode (rows) and speedup (columns): the share of kept tokens from each prompt
    segment, layer by layer, stacked (layer 0: the prompt as it enters)."""
    modes, speedups = list(dict.fromkeys(rows["prompt_mode"])), sorted(rows["speedup"].unique())
    figure = make_subplots(
        rows=len(modes),
        cols=len(speedups),
        shared_xaxes=True,
        shared_yaxes=True,
        subplot_titles=[f"{mode} · {speedup:g}×" for mode in modes for speedup in speedups],
    )
    for (mode, speedup), group in rows.groupby(["prompt_mode", "speedup"]):
        shares = group.iloc[0]["kept_segments"]
        first = (mode, speedup) == (modes[0], speedups[0])
        for segment, color in SEGMENT_COLORS.items():
            values = shares.get(segment) or []
            figure.add_scatter(
                x=list(range(len(values))),
                y=[100 * value for value in values],
                stackgroup=f"{mode}-{speedup}",
                name=segment,
                legendgroup=segment,
                showlegend=first,
                line={"color": color, "width": 0.5},
                row=modes.index(mode) + 1,
                col=speedups.index(speedup) + 1,
            )
    figure.update_yaxes(range=[0, 100])
    figure.update_layout(
        title=_title(f"{task}: where the kept tokens come from — {model}", "% of kept tokens per layer")
    )
    return figure
