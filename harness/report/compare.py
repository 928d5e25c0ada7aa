"""``harness compare``: pruning methods side by side at equal cost, one table and one figure per task.

A reader of a token-pruning paper asks: at equal cost, who keeps the most quality, and who is really
fastest on this hardware?  So each row is one (model, method, requested speedup), over the seeds
that were fine-tuned:

* quality: the mean over seeds of the main metric, with its standard error on the evaluation rows
  (binomial, for accuracy: sqrt(p(1-p)/n)) and, with several seeds, their spread (standard deviation,
  lowest and highest);
* the drop against the dense model of the *same* method's recipe (its own speedup-1 row): every
  method is fine-tuned its own way, so each is measured against its own starting point;
* measured speedup (stock dense latency / pruned latency on the same batch), the FLOP model's
  predicted speedup for that batch, the speedup realised on the evaluation rows (methods whose counts
  depend on the input, such as LTP, and short inputs that cannot reach a target, differ there),
  measured GFLOPs and latency;
* †: the timing was taken while other processes used more than ``BUSY_CORES`` of the CPU (the
  sweep retries a busy timing before it keeps one): read that row's measured speedup with care
  (``leaderboard.busy_mark``, shared by every board; the CSV says it in ``host_busy`` and ``generation_busy``);
* ★: on the Pareto frontier of quality against measured latency among all rows of that task, model
  and machine (no other row is at least as fast and at least as good, and better in one).  Latency
  there is relative: the pruned median over the dense median timed beside it (1 / measured speedup),
  because rows timed minutes apart on a shared machine saw different machines; the dense forward
  of the same batch is the common unit.

Rows timed on several machines get one set of tables per machine, each named: a measured speedup
compares only with the others of its machine, and one table for two would hide that.

Decoder rows timed through ``generate`` (``ttft_speedup``: ``harness.measure.generation``) get their own
two tables per task, the equal-TTFT comparison: quality (accuracy ± lm-eval's standard error, or
perplexity, where lower is better) against measured time-to-first-token speedup, with decode tokens/s
and ★ on the Pareto frontier of quality against TTFT; then the same rows grouped by requested FLOP
speedup, best quality first, for the comparison at equal predicted FLOPs.  ‡ marks a predicted speedup
below the request (the timed prompt, or some evaluation prompts, could not reach it: gemfilter's
selection pass caps it, at 3.95x on smollm2's 256-token prompts).  Encoder rows keep the table above.

The table says the training budget (epochs, examples, recipes) so that "equal cost" can be checked.
Rows keep naming their weights (``weights``, ``checkpoint``).  Built from ``load_rows``; written with
the store's atomic writers.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from harness.report.leaderboard import (
    binomial_se,
    busy,
    busy_mark,
    busy_note,
    lower_is_better,
)
from harness.report.plots import MARKERS, PAPER_STYLE, _legend, _save, _slug
from harness.report.store import write_text_atomic

GROUP = ["task", "model", "weights", "checkpoint", "hardware", "speedup_model", "method", "speedup"]
MEANS = [
    "measured_speedup",
    "predicted_speedup",
    "eval_predicted_speedup",
    "gflops_measured",
    "latency_ms",
    "dense_latency_ms",
]
GENERATION_MEANS = [
    "ttft_speedup",
    "ttft_ms",
    "dense_ttft_ms",
    "decode_tokens_per_s",
    "dense_decode_tokens_per_s",
    "decode_speedup",
]
"""Decoders' timings through ``generate``; absent (NaN) for encoders and for rows from before them."""
COLUMNS = [
    *GROUP,
    "recipe",
    "seeds",
    "main_metric",
    "quality",
    "se",
    "seed_sd",
    "seed_min",
    "seed_max",
    "drop_vs_dense",
    *MEANS,
    "host_busy_cores",
    "host_busy",
    "frontier",
    "epochs",
    "train_examples",
    "eval_examples",
    "batch_size",
    "seq_len",
    *GENERATION_MEANS,
    "frontier_ttft",
    "generation_busy_cores",
    "generation_busy",
    "latency_clamped",
    "eval_clamped",
]


def _first(series: pd.Series):
    values = series.dropna()
    return values.iloc[0] if len(values) else None


def _numbers(rows: pd.DataFrame, column: str) -> pd.Series:
    """A column as floats; all NaN when the rows lack it (encoders have no TTFT, older rows no clamps)."""
    if column not in rows:
        return pd.Series(np.nan, index=rows.index, dtype=float)
    return pd.to_numeric(rows[column], errors="coerce").astype(float)


def _reported_se(rows: pd.DataFrame, metric) -> float | None:
    """The standard error the evaluation reported with the metric (lm-eval's ``<metric>_stderr``), mean
    over seeds; None where none was reported (perplexity, fine-tuned rows)."""
    errors = _numbers(rows, f"metrics.{metric}_stderr").dropna()
    return float(errors.mean()) if len(errors) else None


def _most(rows: pd.DataFrame, column: str) -> float | None:
    values = _numbers(rows, column).dropna()
    return float(values.max()) if len(values) else None


def _aggregate(rows: pd.DataFrame) -> dict:
    scores = rows.groupby("seed", dropna=False)["score"].mean().dropna()
    quality = float(scores.mean()) if len(scores) else None
    examples = _first(rows["eval_examples"])
    several = len(scores) > 1
    metric = _first(rows["main_metric"])
    se = binomial_se(quality, examples, metric)
    out = {
        "recipe": _first(rows["train_recipe"]),
        "seeds": max(1, rows["seed"].nunique()),
        "main_metric": metric,
        "quality": quality,
        "se": se if se is not None or quality is None else _reported_se(rows, metric),
        "seed_sd": float(scores.std(ddof=1)) if several else None,
        "seed_min": float(scores.min()) if several else None,
        "seed_max": float(scores.max()) if several else None,
        "epochs": _first(rows["train_epochs"]),
        "train_examples": _first(rows["train_examples"]),
        "eval_examples": examples,
        "batch_size": _first(rows["batch_size"]),
        "seq_len": _first(rows["seq_len"]),
    }
    out.update({column: rows[column].astype(float).mean() for column in MEANS})
    out.update({column: _numbers(rows, column).mean() for column in GENERATION_MEANS})
    out.update(
        latency_clamped=_most(rows, "latency_clamped"),
        eval_clamped=_most(rows, "eval_clamped"),
        generation_busy_cores=_most(rows, "generation_busy_cores"),
    )
    loads = rows["host_busy_cores"].astype(float)
    out["host_busy_cores"] = float(loads.max()) if loads.notna().any() else None  # the busiest seed's timing
    out["host_busy"], out["generation_busy"] = (
        busy(out["host_busy_cores"]),
        busy(out["generation_busy_cores"]),
    )
    return out


def _drops(table: pd.DataFrame) -> np.ndarray:
    """Quality minus the same method's speedup-1 quality (its own dense fine-tuned model).

    Rows without training (zero-shot, prompts) prune the same weights whatever the method, and every
    method at speedup 1 is that stock model (tested), so a method run without a speedup-1 row of its own
    (a sweep that spends the identical dense evaluation once) is compared with the speedup-1 row of
    another method on the same weights, timed on the same machine if there is one, else on another
    (the stock model's quality does not depend on where it was timed)."""
    key = [column for column in GROUP if column != "speedup"]
    shared = [column for column in key if column != "method"]
    untrained = table["recipe"].isna().to_numpy()
    reference = np.full(len(table), np.nan)
    lookups = [
        (key, np.ones(len(table), dtype=bool)),
        (shared, untrained),
        ([c for c in key if c != "hardware"], untrained),
        ([c for c in shared if c != "hardware"], untrained),
    ]
    for columns, allowed in lookups:
        found = table[columns].merge(_speedup_one(table[allowed], columns), on=columns, how="left")
        found = found["dense_quality"].astype(float).to_numpy()
        fill = np.isnan(reference) & ~np.isnan(found) & allowed
        reference[fill] = found[fill]
    return table["quality"].astype(float).to_numpy() - reference


def _speedup_one(table: pd.DataFrame, key: list[str]) -> pd.DataFrame:
    """The speedup-1 quality per ``key`` (the first row where several share it)."""
    dense = table.loc[table["speedup"] == 1, key + ["quality"]].rename(columns={"quality": "dense_quality"})
    return dense.drop_duplicates(key)


def pareto_mask(latency: np.ndarray, quality: np.ndarray) -> np.ndarray:
    """True where no other point is at least as fast and as good, and strictly better in one."""
    mask = np.zeros(len(latency), dtype=bool)
    for i in range(len(latency)):
        if np.isnan(latency[i]) or np.isnan(quality[i]):
            continue
        better = (
            (latency <= latency[i])
            & (quality >= quality[i])
            & ((latency < latency[i]) | (quality > quality[i]))
        )
        mask[i] = not better.any()
    return mask


def _apart_by_protocol(frame: pd.DataFrame) -> pd.DataFrame:
    """A method evaluated under several protocols (zero-shot on stock weights, finetune-lm on tuned ones)
    names two models: its rows are labelled ``method [protocol]`` so that they are never averaged."""
    if "protocol" not in frame or frame.groupby("method")["protocol"].nunique().max() <= 1:
        return frame
    shared = frame.groupby("method")["protocol"].transform("nunique") > 1
    frame = frame.copy()
    frame.loc[shared, "method"] = frame.loc[shared, "method"] + " [" + frame.loc[shared, "protocol"] + "]"
    return frame


def compare_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (task, model, weights, machine, method, speedup), aggregated over seeds and runs."""
    if frame.empty:
        return pd.DataFrame(columns=COLUMNS)
    frame = _apart_by_protocol(frame)
    records = []
    for key, rows in frame.groupby(GROUP, sort=True, dropna=False):
        records.append({**dict(zip(GROUP, key)), **_aggregate(rows)})
    table = pd.DataFrame.from_records(records)
    table["drop_vs_dense"] = _drops(table)
    table["frontier"] = table["frontier_ttft"] = False
    for _, rows in table.groupby(["task", "model", "weights", "hardware"], dropna=False):
        quality = rows["quality"].astype(float).to_numpy()
        quality = -quality if lower_is_better(_first(rows["main_metric"])) else quality
        relative = 1.0 / rows["measured_speedup"].to_numpy(float)  # latency in units of the dense forward
        table.loc[rows.index, "frontier"] = pareto_mask(relative, quality)
        table.loc[rows.index, "frontier_ttft"] = pareto_mask(
            1.0 / rows["ttft_speedup"].to_numpy(float), quality
        )
    return table[COLUMNS].reset_index(drop=True)


def _pct(value, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{100 * value:+.2f}" if signed else f"{100 * value:.2f}"


def _num(value, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.{digits}f}"


def _budget(rows: pd.DataFrame) -> str:
    """The training budget, said once per task; unequal budgets are said too."""
    epochs = sorted({float(v) for v in rows["epochs"].dropna()})
    examples = sorted({int(v) for v in rows["train_examples"].dropna()})
    recipes = ", ".join(f"{m}: {r}" for m, r in rows.groupby("method")["recipe"].first().dropna().items())
    if not epochs and not examples:
        if recipes:
            return f"Training budget: in each row's train context.  Recipes: {recipes}."
        return "Training budget: none (no fine-tuning in these rows)."
    equal = (
        "the same for every method" if len(epochs) <= 1 and len(examples) <= 1 else "NOT equal across rows"
    )
    return (
        f"Training budget: {', '.join(f'{e:g}' for e in epochs)} epoch(s) over "
        f"{', '.join(map(str, examples))} training examples, {equal}; seeds per row: "
        f"{', '.join(map(str, sorted(rows['seeds'].unique())))}.  Recipes: {recipes}."
    )


def compare_markdown(table: pd.DataFrame) -> str:
    """Per task: the budget line, the encoder table (quality in percent ± its standard error) for rows
    without TTFT, and the decoder tables (``_decoder_tables``) for rows timed through ``generate``; rows
    timed on several machines get one set of tables per machine, each named."""
    parts = []
    for task, rows in table.groupby("task", sort=True):
        parts += [f"### {task}", "", _budget(rows), ""]
        machines = list(rows.groupby("hardware", sort=True, dropna=False))
        for index, (hardware, on_machine) in enumerate(machines):
            if len(machines) > 1:  # measured speedups compare on one machine only: never one table for two
                parts += ([""] if index else []) + [f"Timed on {hardware} (its own frontier):", ""]
            parts += _tables(on_machine)
        checkpoints = rows.drop_duplicates(["model", "weights"])
        parts += busy_note([*rows["host_busy_cores"], *rows["generation_busy_cores"]])
        parts += [
            "",
            *(
                f"Weights of {r.model} ({r.weights}): {r.checkpoint or 'random weights'}."
                for r in checkpoints.itertuples()
            ),
            "",
        ]
    return "\n".join(parts)


def _tables(rows: pd.DataFrame) -> list[str]:
    """One machine's rows of a task: the encoder table for rows without TTFT, the decoder tables for the rest."""
    timed, parts = _numbers(rows, "ttft_speedup").notna(), []
    if not timed.all():
        parts += _encoder_table(rows[~timed])
    if timed.any():
        parts += ([] if timed.all() else [""]) + _decoder_tables(rows[timed])
    return parts


def _encoder_table(rows: pd.DataFrame) -> list[str]:
    """Rows without TTFT (encoders, decoders' classification heads, rows from before TTFT existed), as
    they always were: quality against forward latency, the seeds' spread, GFLOPs."""
    metric = _first(rows["main_metric"]) or "score"
    parts = [
        f"| model | weights | method | speedup | {metric} (%) ± SE | seed spread (sd; min–max) | drop vs own 1× "
        "| measured speedup | predicted speedup | eval speedup | GFLOPs | latency ms (dense) | frontier |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for row in rows.itertuples():
        quality = _pct(row.quality) + (f" ± {_pct(row.se)}" if _pct(row.se) else "")
        spread = (
            f"{_pct(row.seed_sd)}; {_pct(row.seed_min)}–{_pct(row.seed_max)} ({row.seeds} seeds)"
            if _pct(row.seed_sd)
            else ""
        )
        parts.append(
            f"| {row.model} | {row.weights} | {row.method} | {row.speedup:g} | {quality} | {spread} | "
            f"{_pct(row.drop_vs_dense, signed=True)} | {_num(row.measured_speedup)}{busy_mark(row.host_busy_cores)} | "
            f"{_num(row.predicted_speedup)} | "
            f"{_num(row.eval_predicted_speedup)} | {_num(row.gflops_measured, 3)} | "
            f"{_num(row.latency_ms, 0)} ({_num(row.dense_latency_ms, 0)}) | {'★' if row.frontier else ''} |"
        )
    return parts


def _quality(value, metric, signed: bool = False) -> str:
    """Perplexity-like metrics as they are, shares in percent."""
    if not lower_is_better(metric):
        return _pct(value, signed)
    return "" if _num(value) == "" else (f"{value:+.2f}" if signed else f"{value:.2f}")


def _drop(row) -> str:
    """The change against the method's own speedup 1: points, or for perplexity also its relative change."""
    text = _quality(row.drop_vs_dense, row.main_metric, signed=True)
    dense = None if not text else row.quality - row.drop_vs_dense
    if text and lower_is_better(row.main_metric) and dense:
        text += f" ({100 * row.drop_vs_dense / dense:+.1f}%)"
    return text


def _clamped(count) -> str:
    return " ‡" if count is not None and count > 0 else ""  # NaN (not recorded) compares False


def _decoder_row(row, first: list[str]) -> str:
    quality = _quality(row.quality, row.main_metric) + (
        f" ± {_quality(row.se, row.main_metric)}" if _quality(row.se, row.main_metric) else ""
    )
    return (
        "| "
        + " | ".join(
            [
                *first,
                quality,
                _drop(row),
                f"{_num(row.ttft_speedup)}{busy_mark(row.generation_busy_cores)}",
                f"{_num(row.ttft_ms, 0)} ({_num(row.dense_ttft_ms, 0)})",
                f"{_num(row.decode_tokens_per_s, 1)} ({_num(row.dense_decode_tokens_per_s, 1)})",
                f"{_num(row.predicted_speedup)}{_clamped(row.latency_clamped)}",
                f"{_num(row.eval_predicted_speedup)}{_clamped(row.eval_clamped)}",
                f"{_num(row.measured_speedup)}{busy_mark(row.host_busy_cores)}",
                "★" if row.frontier_ttft else "",
            ]
        )
        + " |"
    )


def _decoder_tables(rows: pd.DataFrame) -> list[str]:
    """Equal TTFT (per method, by speedup), then equal predicted FLOPs (per requested speedup, best first)."""
    metric = _first(rows["main_metric"]) or "score"
    unit = "" if lower_is_better(metric) else " (%)"
    columns = (
        f"{metric}{unit} ± SE | vs own 1× | TTFT speedup | TTFT ms (dense) | decode tok/s (dense) | "
        "predicted speedup | eval speedup | forward speedup | frontier (TTFT) |"
    )
    shape = f"{_first(rows['batch_size'])} × {_first(rows['seq_len'])} tokens"
    parts = [
        f"Equal TTFT: time to first token through `generate` (greedy, KV cache), prompt {shape}, "
        "pruned against stock dense, interleaved; ★: Pareto frontier of quality against TTFT.",
        "",
        f"| model | weights | method | speedup | {columns}",
        "|---|---|---|---:|" + "---:|" * 8 + ":---:|",
    ]
    parts += [
        _decoder_row(row, [row.model, row.weights, row.method, f"{row.speedup:g}"])
        for row in rows.itertuples()
    ]
    ordered = rows.assign(_rank=rows["quality"].astype(float) * (1 if lower_is_better(metric) else -1))
    ordered = ordered.sort_values(["speedup", "_rank"], kind="stable", na_position="last")
    parts += [
        "",
        "Equal predicted FLOPs: the same rows by requested (FLOP) speedup, best quality first.",
        "",
        f"| speedup | method | model | weights | {columns}",
        "|---:|---|---|---|" + "---:|" * 8 + ":---:|",
    ]
    parts += [
        _decoder_row(row, [f"{row.speedup:g}", row.method, row.model, row.weights])
        for row in ordered.itertuples()
    ]
    if any(_clamped(row.latency_clamped) or _clamped(row.eval_clamped) for row in rows.itertuples()):
        parts += [
            "",
            "‡ clamped: the timed prompt (predicted speedup) or some evaluation prompts (eval speedup) "
            "could not reach the requested speedup and ran at their maximum.",
        ]
    return parts


def write_compare(table: pd.DataFrame, out_dir: str | Path, name: str) -> tuple[Path, Path]:
    """``<name>.md`` and ``<name>.csv`` (raw values) in ``out_dir``, each written atomically."""
    out_dir = Path(out_dir)
    md_path, csv_path = out_dir / f"{name}.md", out_dir / f"{name}.csv"
    write_text_atomic(md_path, compare_markdown(table))
    write_text_atomic(csv_path, table.to_csv(index=False))
    return md_path, csv_path


def plot_compare(table: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """Quality against measured speedup, one line per method, the frontier drawn; one figure per task
    (and machine, since measured speedups only compare on one).  Rows timed through ``generate`` get a
    second figure, quality against measured TTFT speedup with the TTFT frontier (``compare_ttft_<task>``)."""
    out_dir, paths = Path(out_dir), []
    axes = [
        (
            "measured_speedup",
            "frontier",
            "compare",
            "measured speedup (×, latency vs stock dense)",
            "Pareto frontier (quality vs latency)",
        ),
        (
            "ttft_speedup",
            "frontier_ttft",
            "compare_ttft",
            "measured TTFT speedup (×, through generate vs stock dense)",
            "Pareto frontier (quality vs TTFT)",
        ),
    ]
    with matplotlib.rc_context(PAPER_STYLE):
        for x, frontier, stem, xlabel, front_label in axes:
            scored = table.dropna(subset=["quality", x])
            several = scored["hardware"].nunique() > 1
            for (task, hardware), rows in scored.groupby(["task", "hardware"], sort=True, dropna=False):
                fig = _figure(rows, x, frontier, xlabel, front_label)
                fig.axes[0].set_title(
                    f"{task} — {hardware} · batch {_first(rows['batch_size'])} × seq "
                    f"{_first(rows['seq_len'])}"
                )
                paths += _save(fig, out_dir, _slug(stem, task, hardware) if several else _slug(stem, task))
    return paths


def _figure(rows: pd.DataFrame, x: str, frontier: str, xlabel: str, front_label: str) -> Figure:
    """One line per (model, method) of quality against ``x``, error bars the seeds' spread or the SE."""
    metric = _first(rows["main_metric"]) or "score"
    scale = 1 if lower_is_better(metric) else 100
    fig = Figure(figsize=(4.2, 3.2), layout="constrained")
    ax = fig.subplots()
    for index, ((model, method), line) in enumerate(rows.groupby(["model", "method"], sort=True)):
        line = line.sort_values(x)
        spread = line["seed_sd"].where(line["seed_sd"].notna(), line["se"]).astype(float)
        ax.errorbar(
            line[x],
            scale * line["quality"],
            yerr=scale * spread.fillna(0),
            marker=MARKERS[index % len(MARKERS)],
            capsize=2,
            label=method if rows["model"].nunique() == 1 else f"{model} · {method}",
        )
    front = rows[rows[frontier].astype(bool)].sort_values(x)
    ax.plot(
        front[x],
        scale * front["quality"],
        color="0.3",
        linestyle="--",
        linewidth=0.8,
        drawstyle="steps-post",
        label=front_label,
    )
    ax.plot(
        front[x],
        scale * front["quality"],
        linestyle="none",
        marker="o",
        markersize=8,
        markerfacecolor="none",
        markeredgecolor="0.3",
    )
    ax.set(xlabel=xlabel, ylabel=f"{metric}{'' if scale == 1 else ' (%)'}")
    _legend(fig, ax)
    return fig
