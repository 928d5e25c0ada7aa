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
  sweep retries a busy timing before it keeps one): read that row's measured speedup with care;
* ★: on the Pareto frontier of quality against measured latency among all rows of that task, model
  and machine (no other row is at least as fast and at least as good, and better in one).  Latency
  there is relative: the pruned median over the dense median timed beside it (1 / measured speedup),
  because rows timed minutes apart on a shared machine saw different machines; the dense forward
  of the same batch is the common unit.

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

from harness.measure.latency import BUSY_CORES
from harness.report.plots import MARKERS, PAPER_STYLE, _legend, _save, _slug
from harness.report.store import write_text_atomic

GROUP = ["task", "model", "weights", "checkpoint", "hardware", "speedup_model", "method", "speedup"]
MEANS = ["measured_speedup", "predicted_speedup", "eval_predicted_speedup", "gflops_measured", "latency_ms",
         "dense_latency_ms"]
COLUMNS = [*GROUP, "recipe", "seeds", "main_metric", "quality", "se", "seed_sd", "seed_min", "seed_max", "drop_vs_dense",
           *MEANS, "host_busy_cores", "frontier", "epochs", "train_examples", "eval_examples", "batch_size", "seq_len"]


def _first(series: pd.Series):
    values = series.dropna()
    return values.iloc[0] if len(values) else None


def _binomial_se(quality: float | None, examples, metric) -> float | None:
    if quality is None or metric != "accuracy" or not examples or not 0 <= quality <= 1:
        return None
    return math.sqrt(quality * (1 - quality) / examples)


def _aggregate(rows: pd.DataFrame) -> dict:
    scores = rows.groupby("seed", dropna=False)["score"].mean().dropna()
    quality = float(scores.mean()) if len(scores) else None
    examples = _first(rows["eval_examples"])
    several = len(scores) > 1
    out = {
        "recipe": _first(rows["train_recipe"]), "seeds": max(1, rows["seed"].nunique()),
        "main_metric": _first(rows["main_metric"]), "quality": quality,
        "se": _binomial_se(quality, examples, _first(rows["main_metric"])),
        "seed_sd": float(scores.std(ddof=1)) if several else None,
        "seed_min": float(scores.min()) if several else None, "seed_max": float(scores.max()) if several else None,
        "epochs": _first(rows["train_epochs"]), "train_examples": _first(rows["train_examples"]),
        "eval_examples": examples, "batch_size": _first(rows["batch_size"]), "seq_len": _first(rows["seq_len"]),
    }
    out.update({column: rows[column].astype(float).mean() for column in MEANS})
    busy = rows["host_busy_cores"].astype(float)
    out["host_busy_cores"] = float(busy.max()) if busy.notna().any() else None  # the busiest seed's timing
    return out


def _drops(table: pd.DataFrame) -> np.ndarray:
    """Quality minus the same method's speedup-1 quality (its own dense fine-tuned model)."""
    key = [column for column in GROUP if column != "speedup"]
    dense = table.loc[table["speedup"] == 1, key + ["quality"]].rename(columns={"quality": "dense_quality"})
    merged = table[key + ["quality"]].merge(dense.drop_duplicates(key), on=key, how="left")
    return (merged["quality"].astype(float) - merged["dense_quality"].astype(float)).to_numpy()


def pareto_mask(latency: np.ndarray, quality: np.ndarray) -> np.ndarray:
    """True where no other point is at least as fast and as good, and strictly better in one."""
    mask = np.zeros(len(latency), dtype=bool)
    for i in range(len(latency)):
        if np.isnan(latency[i]) or np.isnan(quality[i]):
            continue
        better = (latency <= latency[i]) & (quality >= quality[i]) & ((latency < latency[i]) | (quality > quality[i]))
        mask[i] = not better.any()
    return mask


def compare_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (task, model, weights, machine, method, speedup), aggregated over seeds and runs."""
    if frame.empty:
        return pd.DataFrame(columns=COLUMNS)
    records = []
    for key, rows in frame.groupby(GROUP, sort=True, dropna=False):
        records.append({**dict(zip(GROUP, key)), **_aggregate(rows)})
    table = pd.DataFrame.from_records(records)
    table["drop_vs_dense"] = _drops(table)
    table["frontier"] = False
    for _, rows in table.groupby(["task", "model", "weights", "hardware"], dropna=False):
        relative = 1.0 / rows["measured_speedup"].to_numpy(float)
        mask = pareto_mask(relative, rows["quality"].astype(float).to_numpy())
        table.loc[rows.index, "frontier"] = mask
    return table[COLUMNS].reset_index(drop=True)


def _pct(value, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{100 * value:+.2f}" if signed else f"{100 * value:.2f}"


def _num(value, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.{digits}f}"


def _busy(cores) -> str:
    return " †" if cores is not None and cores > BUSY_CORES else ""  # NaN (not recorded) compares False


def _budget(rows: pd.DataFrame) -> str:
    """The training budget, said once per task; unequal budgets are said too."""
    epochs = sorted({float(v) for v in rows["epochs"].dropna()})
    examples = sorted({int(v) for v in rows["train_examples"].dropna()})
    if not epochs and not examples:
        return "Training budget: none (no fine-tuning in these rows)."
    recipes = ", ".join(f"{m}: {r}" for m, r in rows.groupby("method")["recipe"].first().dropna().items())
    equal = "the same for every method" if len(epochs) <= 1 and len(examples) <= 1 else "NOT equal across rows"
    return (f"Training budget: {', '.join(f'{e:g}' for e in epochs)} epoch(s) over "
            f"{', '.join(map(str, examples))} training examples, {equal}; seeds per row: "
            f"{', '.join(map(str, sorted(rows['seeds'].unique())))}.  Recipes: {recipes}.")


def compare_markdown(table: pd.DataFrame) -> str:
    """Per task: the budget line and a table, quality in percent (± its standard error)."""
    parts = []
    for task, rows in table.groupby("task", sort=True):
        metric = _first(rows["main_metric"]) or "score"
        parts += [f"### {task}", "", _budget(rows), "",
                  f"| model | weights | method | speedup | {metric} (%) ± SE | seed spread (sd; min–max) | drop vs own 1× "
                  "| measured speedup | predicted speedup | eval speedup | GFLOPs | latency ms (dense) | frontier |",
                  "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|"]
        for row in rows.itertuples():
            quality = _pct(row.quality) + (f" ± {_pct(row.se)}" if _pct(row.se) else "")
            spread = (f"{_pct(row.seed_sd)}; {_pct(row.seed_min)}–{_pct(row.seed_max)} ({row.seeds} seeds)"
                      if _pct(row.seed_sd) else "")
            parts.append(f"| {row.model} | {row.weights} | {row.method} | {row.speedup:g} | {quality} | {spread} | "
                         f"{_pct(row.drop_vs_dense, signed=True)} | {_num(row.measured_speedup)}{_busy(row.host_busy_cores)} | "
                         f"{_num(row.predicted_speedup)} | "
                         f"{_num(row.eval_predicted_speedup)} | {_num(row.gflops_measured, 3)} | "
                         f"{_num(row.latency_ms, 0)} ({_num(row.dense_latency_ms, 0)}) | {'★' if row.frontier else ''} |")
        checkpoints = rows.drop_duplicates(["model", "weights"])
        if any(_busy(cores) for cores in rows["host_busy_cores"]):
            parts += ["", f"† timed while other processes used more than {BUSY_CORES:g} of a core: a busy machine."]
        parts += ["", *(f"Weights of {r.model} ({r.weights}): {r.checkpoint or 'random weights'}."
                        for r in checkpoints.itertuples()), ""]
    return "\n".join(parts)


def write_compare(table: pd.DataFrame, out_dir: str | Path, name: str) -> tuple[Path, Path]:
    """``<name>.md`` and ``<name>.csv`` (raw values) in ``out_dir``, each written atomically."""
    out_dir = Path(out_dir)
    md_path, csv_path = out_dir / f"{name}.md", out_dir / f"{name}.csv"
    write_text_atomic(md_path, compare_markdown(table))
    write_text_atomic(csv_path, table.to_csv(index=False))
    return md_path, csv_path


def plot_compare(table: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """Quality against measured speedup, one line per method, the frontier drawn; one figure per task
    (and machine, since measured speedups only compare on one)."""
    out_dir, paths = Path(out_dir), []
    scored = table.dropna(subset=["quality", "measured_speedup"])
    with matplotlib.rc_context(PAPER_STYLE):
        for (task, hardware), rows in scored.groupby(["task", "hardware"], sort=True, dropna=False):
            fig = Figure(figsize=(4.2, 3.2), layout="constrained")
            ax = fig.subplots()
            for index, ((model, method), line) in enumerate(rows.groupby(["model", "method"], sort=True)):
                line = line.sort_values("measured_speedup")
                spread = line["seed_sd"].where(line["seed_sd"].notna(), line["se"]).astype(float)
                ax.errorbar(line["measured_speedup"], 100 * line["quality"], yerr=100 * spread.fillna(0),
                            marker=MARKERS[index % len(MARKERS)], capsize=2,
                            label=method if rows["model"].nunique() == 1 else f"{model} · {method}")
            front = rows[rows["frontier"].astype(bool)].sort_values("measured_speedup")
            ax.plot(front["measured_speedup"], 100 * front["quality"], color="0.3", linestyle="--", linewidth=0.8,
                    drawstyle="steps-post", label="Pareto frontier (quality vs latency)")
            ax.plot(front["measured_speedup"], 100 * front["quality"], linestyle="none", marker="o", markersize=8,
                    markerfacecolor="none", markeredgecolor="0.3")
            metric = _first(rows["main_metric"]) or "score"
            ax.set(xlabel="measured speedup (×, latency vs stock dense)", ylabel=f"{metric} (%)")
            ax.set_title(f"{task} — {hardware} · batch {_first(rows['batch_size'])} × seq {_first(rows['seq_len'])}")
            _legend(fig, ax)
            parts = ("compare", task) if scored["hardware"].nunique() <= 1 else ("compare", task, hardware)
            paths += _save(fig, out_dir, _slug(*parts))
    return paths
