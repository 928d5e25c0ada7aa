"""Speedup efficiency of ACC pruning on the bert-base architecture (random weights: speed does not
depend on weight values).

efficiency = measured wall-clock speedup / predicted (analytic FLOP) speedup, where the measured
speedup is stock transformers' dense forward (its default attention) over the pruned forward, timed
interleaved in one process on the same batch.  Also reports the wrapper's overhead at speedup 1
(pruned model at speedup 1 vs stock).  Targets on CPU: efficiency >= 0.95, overhead within 3%.

Beside it, the *stock-layer bound*: the work the FLOP model counts, done by the stock modules and
kernels with nothing of ACC (layer l's stock self-attention over the k_{l-1} tokens entering it, then
its output projection and FFN on k_l of them; no scores, no selection), timed in the same interleaved
rounds.  ``bound = dense / stock-layer time / predicted`` is the efficiency the machine's kernels allow
at that shape; the gap between it and the efficiency is what ACC's scoring and selection cost.  Where
the bound itself is below the target, the kernels' cost per token grows as the tokens get few (a
matrix-vector product still reads the whole weight matrix), which a FLOP model does not see.

    python bench/bench_speedup.py [--lengths 128,512] [--batches 1,16] [--speedups 2,3,4] [--out bench/README.md]
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys

import torch
from transformers import BertConfig, BertForSequenceClassification

import harness
from harness.measure.hardware import check_device, hardware_fingerprint
from harness.measure.latency import interleaved_latency
from harness.pruning.pruned_model import stock_copy

TARGET_EFFICIENCY, TARGET_OVERHEAD = 0.95, 0.03


def stock_layers_at(stock, ids: torch.Tensor, counts: list[int]):
    """The FLOP model's work on the stock modules: layer l attends over the tokens entering it (stock
    attention kernel), then runs its output projection and FFN on the first ``counts[l]`` of them."""
    bert = stock.bert

    def forward():
        hidden = bert.embeddings(input_ids=ids)
        for layer, kept in zip(bert.encoder.layer, counts):
            context = layer.attention.self(hidden)[0][:, :kept]
            hidden = layer.feed_forward_chunk(layer.attention.output(context, hidden[:, :kept]))
        return stock.classifier(bert.pooler(hidden))

    return forward


def measure(
    model, stock, batch_size: int, seq_len: int, speedups: list[float], repeats: int, device: str = "cpu"
) -> list[dict]:
    ids = torch.randint(1000, 30000, (batch_size, seq_len), generator=torch.Generator().manual_seed(0)).to(
        device
    )
    rows = []
    with torch.no_grad():
        for speedup in [1.0, *speedups]:
            model.set_speedup(speedup)
            model(input_ids=ids)
            counts = [max(map(len, layer)) for layer in model.last_kept]
            timings = interleaved_latency(
                {
                    "dense": lambda: stock(input_ids=ids),
                    "pruned": lambda: model(input_ids=ids),
                    "bound": stock_layers_at(stock, ids, counts),
                },
                warmup=2,
                repeats=repeats,
                device=device,
            )
            dense, pruned = model.last_forward.dense_flops, model.last_forward.pruned_flops
            dense_ms, pruned_ms, bound_ms = (timings[k].median_ms for k in ("dense", "pruned", "bound"))
            predicted = dense / pruned
            rows.append(
                {
                    "seq_len": seq_len,
                    "batch": batch_size,
                    "speedup": speedup,
                    "predicted": predicted,
                    "measured": dense_ms / pruned_ms,
                    "efficiency": dense_ms / pruned_ms / predicted,
                    "bound": dense_ms / bound_ms / predicted,
                    "dense_ms": dense_ms,
                    "pruned_ms": pruned_ms,
                    "bound_ms": bound_ms,
                }
            )
            print(rows[-1], file=sys.stderr, flush=True)
    return rows


def table(rows: list[dict]) -> str:
    header = (
        "| seq len | batch | target | predicted | measured | efficiency | stock-layer bound | dense ms | pruned ms "
        "| stock layers ms | meets target |"
    )
    lines = [header, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:--|"]
    for r in rows:
        if r["speedup"] == 1.0:
            ok = abs(1 - r["measured"]) <= TARGET_OVERHEAD or r["measured"] > 1
            verdict = f"overhead {100 * (1 / r['measured'] - 1):+.1f}% ({'yes' if ok else 'no'})"
        else:
            verdict = "yes" if r["efficiency"] >= TARGET_EFFICIENCY else "no"
        lines.append(
            f"| {r['seq_len']} | {r['batch']} | {r['speedup']:g} | {r['predicted']:.2f} | {r['measured']:.2f} | "
            f"{r['efficiency']:.3f} | {r['bound']:.3f} | {r['dense_ms']:.1f} | {r['pruned_ms']:.1f} | "
            f"{r['bound_ms']:.1f} | {verdict} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="128,512")
    parser.add_argument("--batches", default="1,16")
    parser.add_argument("--speedups", default="2,3,4")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default: cpu)")
    parser.add_argument(
        "--out", default=None, help="write the Markdown table here (e.g. bench/README.md's table file)"
    )
    args = parser.parse_args()
    device = check_device(args.device)
    torch.manual_seed(0)
    stock = BertForSequenceClassification(BertConfig(num_labels=2)).to(device).eval()
    model = harness.prune(stock_copy(stock))
    rows = []
    for seq_len in map(int, args.lengths.split(",")):
        for batch in map(int, args.batches.split(",")):
            repeats = max(3, args.repeats // 2) if batch * seq_len >= 4096 else args.repeats
            rows += measure(
                model, stock, batch, seq_len, [float(s) for s in args.speedups.split(",")], repeats, device
            )
    hw = hardware_fingerprint(device)
    report = (
        f"Measured {dt.date.today()} on {hw['id']} ({hw['cpu']}, torch {hw.get('torch')}, "
        f"{hw.get('torch_threads')} threads), bert-base architecture, random weights, "
        f"command: `python bench/bench_speedup.py`\n\n{table(rows)}\n"
    )
    print(report)
    if args.out:
        from harness.report.store import write_text_atomic

        write_text_atomic(args.out, report)


if __name__ == "__main__":
    main()
