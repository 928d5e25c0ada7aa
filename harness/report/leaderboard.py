"""Leaderboards: every finished cell of one or more runs as one table, in Markdown and CSV.

Every board has the same columns in the same order and units (GFLOPs, milliseconds, speedups as
ratios), whatever produced it, so boards from different runs and machines can be laid side by side;
the ``hardware`` column keeps results from different machines from being silently compared.
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
    "hardware",
    "host_busy",
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
_MS_COLUMNS = {"latency_ms", "predicted_latency_ms", "dense_latency_ms"}
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
    if row.get("weights") == RANDOM_WEIGHTS:  # a score of random weights is chance, not quality
        flat["score"] = None
    for name, value in (row.get("metrics") or {}).items():
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
    return frame.reset_index(drop=True)


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


def marked(columns: list[str], cells: list[str], cores: Any, column: str = "measured_speedup") -> list[str]:
    """A table row's shown ``cells`` with ``busy_mark(cores)`` after the value of ``column`` (when shown)."""
    return [
        cell + busy_mark(cores) if name == column and cell else cell for name, cell in zip(columns, cells)
    ]


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


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub Markdown table: scores and metrics in percent, numbers right-aligned.

    Rendered here rather than with ``DataFrame.to_markdown`` to avoid depending on ``tabulate``,
    which this project does not declare."""
    columns = board_columns(df)
    numeric = {column for column in columns if column in _NUMERIC_COLUMNS or column.startswith("metrics.")}
    lines = [
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---:" if column in numeric else "---" for column in columns) + "|",
    ]
    cores = df["host_busy_cores"] if "host_busy_cores" in df else [None] * len(df)
    for record, load in zip(df[columns].to_dict("records"), cores):
        cells = marked(
            columns, [_format_cell(c, record[c], record.get("main_metric")) for c in columns], load
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines + busy_note(cores)) + "\n"


def write_leaderboard(df: pd.DataFrame, out_dir: str | Path, name: str) -> tuple[Path, Path]:
    """Write ``<name>.md`` and ``<name>.csv`` (raw values) into ``out_dir``, each atomically."""
    out_dir = Path(out_dir)
    md_path, csv_path = out_dir / f"{name}.md", out_dir / f"{name}.csv"
    write_text_atomic(md_path, to_markdown(df))
    write_text_atomic(csv_path, df[board_columns(df)].to_csv(index=False))
    return md_path, csv_path
