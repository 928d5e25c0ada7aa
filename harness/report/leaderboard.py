"""Leaderboards: every finished cell of one or more runs as one table, in Markdown and CSV.

The CSV keeps every column (``BOARD_COLUMNS``, metrics, run) in the same order and units (GFLOPs,
milliseconds, MiB, speedups as ratios), whatever produced it, so boards from different runs and machines
can be laid side by side.  The Markdown (and the summary ``harness run`` prints) is the compact form a
reader compares (``COMPACT``): model, method, task, mode, speedup, quality ± SE, drop, measured /
predicted speedup, latency, GFLOPs, peak memory where measured, and the hardware; what every row would
repeat (weights and checkpoint provenance, the latency batch) is said once under the table.  The
``hardware`` column keeps results from different machines (and dtypes) from being silently compared.
A run folder counts once however it is spelled, a cell once per results file, and a row of another
harness version is refused (``store.report_rows``); a measured speedup timed while other processes
loaded the host is marked † with a footnote, the same on every board (``busy_mark``, ``busy_note``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from harness.measure.latency import BUSY_CORES
from harness.registry import HarnessError
from harness.report.location import default_name
from harness.report.store import RESULTS_FILE, report_rows, unique_runs, write_text_atomic

RANDOM_WEIGHTS = "random weights"

BOARD_COLUMNS = [
    "model",
    "weights",
    "checkpoint",
    "task",
    "protocol",
    "method",
    "speedup",
    "speedup_model",
    "main_metric",
    "score",
    "predicted_speedup",
    "measured_speedup",
    "predicted_wallclock_speedup",
    "eval_predicted_speedup",
    "gflops_measured",
    "gflops_analytic",
    "latency_ms",
    "predicted_latency_ms",
    "dense_latency_ms",
    "batch_size",
    "seq_len",
    "threads",
    "device",
    "dtype",
    "hardware",
    "host_busy",
    "stderr",
    "drop",
    "peak_memory_mb",
    "dense_peak_memory_mb",
]
GENERATION_COLUMNS = [
    "ttft_ms",
    "dense_ttft_ms",
    "ttft_speedup",
    "decode_tokens_per_s",
    "dense_decode_tokens_per_s",
    "decode_speedup",
    "generation_busy_cores",
]
"""Decoders' timings through ``generate`` (``harness.measure.generation``), read by ``harness compare``."""
# Kept in the frame for the plots, not shown on the board.
EXTRA_COLUMNS = [
    "cell_key",
    "kept_tokens",
    "latency_p10_ms",
    "latency_p90_ms",
    "seed",
    "eval_examples",
    "train_recipe",
    "train_epochs",
    "train_examples",
    "host_busy_cores",
    "eval_documents",
    "eval_clamped",
    "latency_clamped",
    *GENERATION_COLUMNS,
]
SORT_COLUMNS = ["model", "task", "method", "speedup_model", "speedup"]

_RATIO_COLUMNS = {
    "speedup",
    "predicted_speedup",
    "measured_speedup",
    "predicted_wallclock_speedup",
    "eval_predicted_speedup",
}
_MS_COLUMNS = {
    "latency_ms",
    "predicted_latency_ms",
    "dense_latency_ms",
    "peak_memory_mb",
    "dense_peak_memory_mb",
}
_GFLOPS_COLUMNS = {"gflops_measured", "gflops_analytic"}
_NUMERIC_COLUMNS = (
    _RATIO_COLUMNS | _MS_COLUMNS | _GFLOPS_COLUMNS | {"score", "batch_size", "seq_len", "threads"}
)


def _flatten(row: dict[str, Any], run: str) -> dict[str, Any]:
    flat = {column: row.get(column) for column in BOARD_COLUMNS + EXTRA_COLUMNS}
    for column in _GFLOPS_COLUMNS:
        flops = row.get("flops_" + column.removeprefix("gflops_"))
        flat[column] = None if flops is None else flops / 1e9
    flat["speedup_model"] = row.get("speedup_model") or "flops"  # rows from before the latency model
    flat["seed"] = row.get("seed", (row.get("train") or {}).get("seed"))
    train = row.get("train") or {}
    flat["train_recipe"], flat["train_epochs"] = train.get("recipe"), train.get("epochs")
    if train and not flat["train_recipe"] and str(row.get("protocol")).startswith("finetune-lm"):
        flat["train_recipe"] = "finetune-lm"  # tuned rows written before their train context named it
    flat["train_examples"] = train.get("examples")
    hardware = row.get("hardware")
    flat["hardware"] = hardware.get("id") if isinstance(hardware, dict) else hardware
    flat["host_busy"] = busy(row.get("host_busy_cores"))
    flat["dtype"] = row.get("dtype") or "float32"  # rows from before --dtype were all float32
    metrics = row.get("metrics") or {}
    if row.get("weights") == RANDOM_WEIGHTS:  # a score of random weights is chance, not quality
        flat["score"] = None
    else:
        main = row.get("main_metric")
        flat["stderr"] = metrics.get(f"{main}_stderr") or binomial_se(
            flat["score"], row.get("eval_examples"), main
        )
    for name, value in metrics.items():
        flat[f"metrics.{name}"] = value
    flat["run"] = run
    return flat


def _run_names(run_dirs: list[Path]) -> list[str]:
    """Folder names (``.`` named as the folder it is), or the full paths when two runs share a name."""
    names = [default_name(path) for path in run_dirs]
    return names if len(set(names)) == len(names) else [str(path) for path in run_dirs]


def load_rows(run_dirs: Iterable[str | Path]) -> pd.DataFrame:
    """All rows of the given run folders, one per cell and run, in board order.

    Columns: ``BOARD_COLUMNS``, then ``metrics.*`` (sorted), ``run``, then ``EXTRA_COLUMNS``.
    """
    run_dirs = unique_runs(run_dirs)
    records = []
    for run_dir, run in zip(run_dirs, _run_names(run_dirs)):
        if not run_dir.is_dir():
            raise HarnessError(f"run folder {run_dir} does not exist")
        records += [_flatten(row, run) for row in report_rows(run_dir / RESULTS_FILE)]
    metric_columns = sorted({key for record in records for key in record if key.startswith("metrics.")})
    columns = BOARD_COLUMNS + metric_columns + ["run"] + EXTRA_COLUMNS
    frame = pd.DataFrame.from_records(records, columns=columns)
    if frame.empty:
        return frame
    frame = frame.sort_values(SORT_COLUMNS + ["weights", "run"], kind="stable", na_position="last")
    frame["drop"] = drops(frame)
    return frame.reset_index(drop=True)


DROP_GROUP = ["model", "weights", "checkpoint", "task", "protocol", "method", "speedup_model", "seed", "run"]
"""The rows a cell's ``drop`` compares within: the same model, weights, task, mode, method, seed and run."""


def drops(frame: pd.DataFrame) -> list[float | None]:
    """Quality minus the speedup-1 quality of the same group (``DROP_GROUP``), in the score's units, as
    every board signs it (``harness compare``, the prompt board): negative where accuracy fell, positive
    where perplexity rose.  None without a speedup-1 row."""
    keys = [tuple(key) for key in frame[DROP_GROUP].astype(str).itertuples(index=False)]
    base = {key: score for key, speedup, score in zip(keys, frame["speedup"], frame["score"]) if speedup == 1}
    return [
        None if _missing(score) or _missing(base.get(key)) else score - base[key]
        for key, score in zip(keys, frame["score"])
    ]


def lower_is_better(metric) -> bool:
    """Perplexity and bits per byte fall as quality rises; every other main metric rises with it."""
    return any(word in str(metric) for word in UNBOUNDED_METRICS)


def binomial_se(quality: Any, examples: Any, metric: Any) -> float | None:
    """The standard error of an accuracy over ``examples`` independent items (lm-eval reports its own,
    ``<metric>_stderr``, which wins where present); None for other metrics or unknown counts."""
    if (
        _missing(quality)
        or metric != "accuracy"
        or _missing(examples)
        or not examples
        or not 0 <= quality <= 1
    ):
        return None
    return math.sqrt(quality * (1 - quality) / examples)


def board_columns(df: pd.DataFrame) -> list[str]:
    return [column for column in df.columns if column not in EXTRA_COLUMNS]


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


BUSY_MARK = "†"
"""Marks a timing taken while other processes used more than ``BUSY_CORES`` (``busy_mark``, ``busy_note``)."""


def busy(cores: Any) -> bool | None:
    """Whether a timing was taken on a busy host (the sweep's ``host_busy_cores`` or ``generation_busy_cores``);
    None where the row did not record it, which is unknown rather than quiet."""
    return None if cores is None or pd.isna(cores) else bool(cores > BUSY_CORES)


def busy_mark(cores: Any) -> str:
    """`` †`` after a value timed on a busy host: every board marks it the same way, so that a 5.50x measured
    at speedup 1 while another job ran is not read as a result."""
    return f" {BUSY_MARK}" if busy(cores) else ""


def busy_note(cores: Iterable[Any]) -> list[str]:
    """The footnote under a table with marked values (no lines when none is marked), with the worst load."""
    loads = [float(value) for value in cores if busy(value)]
    if not loads:
        return []
    return [
        "",
        f"{BUSY_MARK} timed while other processes used more than {BUSY_CORES:g} of a core (up to "
        f"{max(loads):.2g} cores): a busy machine, so read that timing with care.",
    ]


UNBOUNDED_METRICS = ("perplexity", "bits_per_byte")
"""Metrics shown as they are; every other score and metric is a 0..1 share, shown in percent."""


def _format_cell(column: str, value: Any, main_metric: Any = None) -> str:
    if _missing(value):
        return ""
    name = str(main_metric) if column == "score" else column
    if column == "score" or column.startswith("metrics."):
        return f"{value:.2f}" if any(word in name for word in UNBOUNDED_METRICS) else f"{100 * value:.2f}"
    if column in _RATIO_COLUMNS or column in _MS_COLUMNS:
        return f"{value:.2f}"
    if column in _GFLOPS_COLUMNS:
        return f"{value:.4g}"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # integer columns become float once a row lacks them
    return str(value).replace("|", "\\|").replace("\n", " ")


COMPACT = [
    "model",
    "method",
    "task",
    "mode",
    "speedup",
    "quality ± SE",
    "drop",
    "measured / predicted",
    "latency ms",
    "GFLOPs",
    "peak MiB",
    "hardware",
]
"""The Markdown board's columns; ``seed`` and ``run`` join them only where they vary, ``target`` where a row
asked for wall-clock speedups, and an empty column (quality of random weights, memory of older rows) is
left out."""
_OPTIONAL = {"target": "speedup_model", "seed": "seed", "run": "run"}


def _quality(record: dict) -> str:
    score = _format_cell("score", record["score"], record["main_metric"])
    error = _format_cell("score", record["stderr"], record["main_metric"])
    return f"{score} ± {error}" if score and error else score


def _drop(record: dict) -> str:
    value = record["drop"]
    if _missing(value):
        return ""
    scaled = value if lower_is_better(record["main_metric"]) else 100 * value
    return f"{scaled:+.2f}"


def _speeds(record: dict) -> str:
    """``measured / predicted``: the prediction of the speedup model the cell was pruned for."""
    wall = record["speedup_model"] == "latency"
    predicted = record["predicted_wallclock_speedup" if wall else "predicted_speedup"]
    measured = _format_cell("measured_speedup", record["measured_speedup"]) + busy_mark(
        record.get("host_busy_cores")
    )
    return f"{measured} / {_format_cell('predicted_speedup', predicted)}"


def _model(record: dict) -> str:
    """The model, naming its weights where they are not the pretrained checkpoint (random weights)."""
    weights = record["weights"]
    return record["model"] if weights in (None, "pretrained") else f"{record['model']} ({weights})"


def _text(value: Any) -> str:
    return "" if _missing(value) else str(value)


def fixed(value: Any, spec: str) -> str:
    """``value`` formatted with ``spec``, or empty where it is missing (a row without that column)."""
    return "" if _missing(value) else format(value, spec)


def _compact_cells(record: dict) -> dict[str, str]:
    return {
        "model": _model(record),
        "method": _text(record["method"]),
        "task": _text(record["task"]),
        "mode": _text(record["protocol"]),
        "speedup": _format_cell("speedup", record["speedup"]),
        "quality ± SE": _quality(record),
        "drop": _drop(record),
        "measured / predicted": _speeds(record),
        "latency ms": fixed(record["latency_ms"], ".1f"),
        "GFLOPs": _format_cell("gflops_measured", record["gflops_measured"]),
        "peak MiB": fixed(record["peak_memory_mb"], ".1f"),
        "hardware": _text(record["hardware"]),
        "target": "wall-clock" if record["speedup_model"] == "latency" else "FLOPs",
        "seed": _format_cell("seed", record["seed"]),
        "run": str(record["run"]),
    }


def _compact_columns(df: pd.DataFrame, cells: list[dict[str, str]]) -> list[str]:
    varying = [name for name, column in _OPTIONAL.items() if df[column].astype(str).nunique() > 1]
    varying += ["target"] if (df["speedup_model"] == "latency").any() else []  # FLOPs goes without saying
    columns = COMPACT[:5] + [c for c in ("target", "seed") if c in varying] + COMPACT[5:]
    columns += ["run"] if "run" in varying else []
    return [column for column in columns if any(row[column] for row in cells)]


def _footnotes(df: pd.DataFrame) -> list[str]:
    """What every row would repeat, said once: weights and checkpoint provenance, the latency batch."""
    notes = [""]
    provenance = df[["model", "weights", "checkpoint"]].drop_duplicates()
    for model, weights, checkpoint in provenance.itertuples(index=False):
        notes.append(f"- **{model}** ({weights}): {checkpoint}")
    shapes = df[["batch_size", "seq_len", "threads", "device", "dtype"]].drop_duplicates()
    for batch, length, threads, device, dtype in shapes.itertuples(index=False):
        notes.append(
            f"- latency batch: {_format_cell('batch_size', batch)} × {_format_cell('seq_len', length)} tokens "
            f"on {device} ({_format_cell('threads', threads)} threads, {dtype})"
        )
    notes.append(
        "- quality: the task's main metric (shares in percent) ± its standard error; drop: quality minus "
        "speedup 1's in the same model, method, task, mode and seed (points; perplexity rising is a loss); measured / "
        "predicted: dense ÷ pruned latency timed interleaved, and the speedup model's prediction; peak: "
        "memory one forward adds.  Every column: the CSV beside this file."
    )
    return notes


def to_markdown(df: pd.DataFrame) -> str:
    """The compact board (``COMPACT``) as a GitHub Markdown table, provenance once underneath; a busy host's
    measured speedup marked (``busy_mark``) and said under the table.

    Rendered here rather than with ``DataFrame.to_markdown`` to avoid depending on ``tabulate``,
    which this project does not declare."""
    if df.empty:
        return "(no finished cells)\n"
    records = df.to_dict("records")
    cells = [_compact_cells(record) for record in records]
    columns = _compact_columns(df, cells)
    left = {"model", "method", "task", "mode", "target", "hardware", "run"}
    lines = [
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---" if column in left else "---:" for column in columns) + "|",
        *("| " + " | ".join(row[c].replace("|", "\\|") for c in columns) + " |" for row in cells),
    ]
    cores = df["host_busy_cores"] if "host_busy_cores" in df else [None] * len(df)
    return "\n".join(lines + _footnotes(df) + busy_note(cores)) + "\n"


def write_leaderboard(df: pd.DataFrame, out_dir: str | Path, name: str) -> tuple[Path, Path]:
    """Write ``<name>.md`` and ``<name>.csv`` (raw values) into ``out_dir``, each atomically."""
    out_dir = Path(out_dir)
    md_path, csv_path = out_dir / f"{name}.md", out_dir / f"{name}.csv"
    write_text_atomic(md_path, to_markdown(df))
    write_text_atomic(csv_path, df[board_columns(df)].to_csv(index=False))  # every column, raw values
    return md_path, csv_path
