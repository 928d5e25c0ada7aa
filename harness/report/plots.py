"""Paper-style figures of a leaderboard frame (from ``load_rows``), saved as PNG and SVG.

Figures are built on ``matplotlib.figure.Figure`` directly, never through pyplot, so no GUI
backend or global figure state is involved (headless machines, repeated calls in one process).
Measured speedups are only comparable on one machine, so every figure with a measured axis is made
per hardware id, and every title names the hardware and the batch/sequence shape.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from harness.report.store import write_bytes_atomic

COLORS = [*matplotlib.colormaps["tab10"].colors, "black", "#b8860b"]
"""Twelve line colours: matplotlib's ten repeat, and a comparison of every encoder method has eleven lines
(the 11th drew in the 1st's colour)."""
PAPER_STYLE = {
    "axes.prop_cycle": matplotlib.cycler(color=COLORS),
    "font.family": "serif",
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "legend.fontsize": 7,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "lines.linewidth": 1.2,
    "lines.markersize": 4,
    "legend.frameon": False,
    "svg.fonttype": "none",
}
MARKERS = "osD^vP*Xh<>"


def _slug(*parts: object) -> str:
    return "_".join(re.sub(r"[^A-Za-z0-9._+-]+", "-", str(part)).strip("-") for part in parts)


def _groups(df: pd.DataFrame, keys: list[str]) -> Iterator[tuple[tuple, pd.DataFrame]]:
    """Sorted groups, keeping rows whose keys are missing rather than silently dropping them."""
    yield from df.groupby(keys, sort=True, dropna=False)


def _values(series: pd.Series) -> str:
    return ", ".join(str(value) for value in series.dropna().unique()) or "?"


def _context(df: pd.DataFrame) -> str:
    return f"{_values(df['hardware'])} · batch {_values(df['batch_size'])} × seq {_values(df['seq_len'])}"


def _label(model: str, weights: str, method: str | None = None) -> str:
    label = model if method is None else f"{model} · {method}"
    return label if weights == "pretrained" else f"{label} ({weights})"


def _by_hardware(df: pd.DataFrame, stem: str) -> Iterator[tuple[str, pd.DataFrame]]:
    """One (file stem, rows) per hardware id; the stem names the hardware only when there are several."""
    groups = list(_groups(df, ["hardware"]))
    for (hardware,), rows in groups:
        yield (stem if len(groups) == 1 else _slug(stem, hardware)), rows


def _legend(fig: Figure, ax: Axes, max_cols: int = 3) -> None:
    """Below the axes, so that it never hides data."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), max_cols))


def _save(fig: Figure, out_dir: Path, stem: str) -> list[Path]:
    paths = []
    for fmt in ("png", "svg"):
        buffer = io.BytesIO()
        fig.savefig(buffer, format=fmt, dpi=200, bbox_inches="tight")
        path = out_dir / f"{stem}.{fmt}"
        write_bytes_atomic(path, buffer.getvalue())
        paths.append(path)
    return paths


def plot_quality_vs_speedup(df: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """Score against measured (left) and predicted (right) speedup; one figure per task.

    Rows without a score (random weights) are left out: they have no quality to plot."""
    out_dir, paths = Path(out_dir), []
    scored = df.dropna(subset=["score"])
    with matplotlib.rc_context(PAPER_STYLE):
        for (task,), task_rows in _groups(scored, ["task"]):
            for stem, rows in _by_hardware(task_rows, _slug("quality_vs_speedup", task)):
                fig = Figure(figsize=(6.4, 2.8), layout="constrained")
                measured_ax, predicted_ax = fig.subplots(1, 2, sharey=True)
                lines = _groups(rows, ["model", "weights", "method", "speedup_model"])
                for index, ((model, weights, method, speedup_model), line) in enumerate(lines):
                    line = line.sort_values("speedup")
                    label = _label(model, weights, method) + (
                        " · latency-solved" if speedup_model == "latency" else ""
                    )
                    style = dict(marker=MARKERS[index % len(MARKERS)], label=label)
                    measured_ax.plot(line["measured_speedup"], 100 * line["score"], **style)
                    predicted_ax.plot(line["predicted_speedup"], 100 * line["score"], **style)
                metric = _values(rows["main_metric"]) if rows["main_metric"].notna().any() else "score"
                measured_ax.set(xlabel="measured speedup (×, latency)", ylabel=f"{metric} (%)")
                predicted_ax.set(xlabel="predicted speedup (×, FLOPs)")
                fig.suptitle(f"{task} — {_context(rows)}", fontsize=8)
                _legend(fig, measured_ax)
                paths += _save(fig, out_dir, stem)
    return paths


def plot_measured_vs_predicted(df: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """Measured against predicted speedup with the y = x diagonal; one series per model/method.

    Open markers, so that coinciding points of different series stay visible."""
    out_dir, paths = Path(out_dir), []
    both = df.dropna(subset=["measured_speedup", "predicted_speedup"])
    with matplotlib.rc_context(PAPER_STYLE):
        for stem, rows in _by_hardware(both, "measured_vs_predicted"):
            fig = Figure(figsize=(3.4, 3.4), layout="constrained")
            ax = fig.subplots()
            for index, ((model, method), series) in enumerate(_groups(rows, ["model", "method"])):
                ax.plot(
                    series["predicted_speedup"],
                    series["measured_speedup"],
                    linestyle="none",
                    marker=MARKERS[index % len(MARKERS)],
                    markerfacecolor="none",
                    label=f"{model} · {method}",
                )
            values = np.concatenate([rows["predicted_speedup"], rows["measured_speedup"], [1.0]])
            pad = 0.05 * ((values.max() - values.min()) or 1.0)
            limits = (values.min() - pad, values.max() + pad)
            ax.plot(limits, limits, color="0.5", linestyle="--", linewidth=0.8, label="measured = predicted")
            ax.set(
                xlabel="predicted speedup (×, FLOPs)",
                ylabel="measured speedup (×, latency)",
                xlim=limits,
                ylim=limits,
                aspect="equal",
            )
            ax.set_title(_context(rows))
            _legend(fig, ax)
            paths += _save(fig, out_dir, stem)
    return paths


def plot_kept_profile(df: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """Mean kept tokens per layer, one line per requested speedup; one figure per model/task/method
    (and weights, since random weights prune differently)."""
    out_dir, paths = Path(out_dir), []
    has_profile = df["kept_tokens"].map(lambda kept: isinstance(kept, list) and len(kept) > 0)
    profiled = df.loc[has_profile.astype(bool)]
    with matplotlib.rc_context(PAPER_STYLE):
        for (model, weights, task, method), rows in _groups(profiled, ["model", "weights", "task", "method"]):
            fig = Figure(figsize=(4.0, 2.8), layout="constrained")
            ax = fig.subplots()
            rows = rows.sort_values(["speedup", "run"])
            colors = matplotlib.colormaps["viridis"](np.linspace(0.0, 0.9, len(rows)))
            several_runs = rows["run"].nunique() > 1
            for color, row in zip(colors, rows.itertuples()):
                layers = np.arange(1, len(row.kept_tokens) + 1)
                label = f"{row.speedup:g}× requested" + (f" ({row.run})" if several_runs else "")
                ax.plot(layers, row.kept_tokens, marker="o", color=color, label=label)
            for index, seq_len in enumerate(rows["seq_len"].dropna().unique()):
                ax.axhline(
                    seq_len,
                    color="0.5",
                    linestyle="--",
                    linewidth=0.8,
                    label="sequence length" if index == 0 else None,
                )
            ax.set(xlabel="layer", ylabel="mean kept tokens", ylim=(0, None))
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.set_title(f"{_label(model, weights)} · {task} · {method}\n{_context(rows)}")
            _legend(fig, ax, max_cols=4)
            paths += _save(fig, out_dir, _slug("kept_profile", model, weights, task, method))
    return paths
