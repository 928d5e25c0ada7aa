"""The offline-tuning study's table: stock, training-free and offline-tuned rows of one decoder, side by side.

Reads the ``results.jsonl`` of run folders made with ``--protocol zero-shot`` (stock at speedup 1 and the
training-free methods) and ``--protocol finetune-lm`` (the tuned model), on heldout-ppl,
rt-polarity-recall and rt-polarity, and prints one Markdown row per (protocol, method, speedup):
held-out word perplexity (and its change against stock), exact recall ± its binomial standard error,
short rt-polarity accuracy, the measured time-to-first-token speedup (``generate``, the timed task's
prompt) and forward speedup (batch 1, ``--max-length`` tokens, interleaved with the dense model; p10-p90
of the pruned forward), the FLOP model's prediction, and the foreign load seen while timing (cores).
The speedup-1 rows show what the timing noise alone does.  ``docs/results/finetune-lm.md`` gives the commands that make the folders.

    python bench/finetune_lm_study.py runs/smollm2_training_free runs/smollm2_finetune_lm
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from harness.report.store import report_rows

TASKS = {"heldout-ppl": "ppl", "rt-polarity-recall": "recall", "rt-polarity": "short"}


def _cells(folders: list[str]) -> dict:
    cells: dict = {}
    for folder in folders:
        for row in report_rows(Path(folder) / "results.jsonl"):
            key = (row["protocol"], row["method"], row["speedup"])
            cells.setdefault(key, {})[TASKS.get(row["task"], row["task"])] = row
    return cells


def _recall(row) -> str:
    if row is None:
        return "–"
    acc, n = row["metrics"]["acc"], row.get("eval_documents") or 0
    se = math.sqrt(acc * (1 - acc) / n) if n else float("nan")
    return f"{100 * acc:.1f} ± {100 * se:.1f}"


def _ppl(row, stock) -> str:
    if row is None:
        return "–"
    change = f" ({100 * (row['score'] / stock['score'] - 1):+.0f}%)" if stock else ""
    return f"{row['score']:.1f}{change}"


def _ttft(row) -> str:
    if not row.get("ttft_speedup"):
        return "–"
    return f"{row['ttft_speedup']:.2f} ({row['ttft_ms']:.0f}, {row['dense_ttft_ms']:.0f})"


def _forward(row) -> str:
    if not row.get("dense_latency_ms"):
        return "–"
    spread = f"{row['latency_p10_ms']:.0f}-{row['latency_p90_ms']:.0f}"
    return (
        f"{row['measured_speedup']:.2f} ({row['latency_ms']:.0f} [{spread}], {row['dense_latency_ms']:.0f})"
    )


def table(folders: list[str]) -> str:
    cells = _cells(folders)
    stock = cells.get(("zero-shot", "acc", 1.0), {}).get("ppl")
    lines = [
        "| protocol | method | speedup | heldout-ppl word ppl (vs stock) | recall exact % ± SE | rt-polarity acc % "
        "| TTFT speedup (ms, dense ms) | forward speedup (ms [p10-p90], dense ms) | predicted | busy cores |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (protocol, method, speedup), row in sorted(cells.items()):
        ppl, recall, short = row.get("ppl"), row.get("recall"), row.get("short")
        timed = recall or ppl or short
        columns = [
            protocol,
            method,
            f"{speedup:g}",
            _ppl(ppl, stock),
            _recall(recall),
            f"{100 * short['score']:.1f}" if short else "–",
            _ttft(timed),
            _forward(timed),
            f"{timed['predicted_speedup']:.2f}",
            f"{max(timed.get('host_busy_cores') or 0, timed.get('generation_busy_cores') or 0):.2f}",
        ]
        lines.append("| " + " | ".join(columns) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run folders (zero-shot and finetune-lm)")
    print(table(parser.parse_args().runs))


if __name__ == "__main__":
    main()
