"""Decoders under ACC: prefill and time-to-first-token speedup, decode speed, and quality of smollm2
at each speedup.

Prefill latency is the forward over the prompt that produces the first token's logits
(``logits_to_keep=1``, no KV cache), on ``--prompt-length`` tokens, pruned vs stock transformers'
forward of the same weights, timed interleaved.  The predicted speedup counts the LM head on one token
on both sides.  TTFT and decode tokens/s come from ``generate`` itself (KV cache: the pruned prefill
leaves each layer's kept tokens in the cache; decoding prunes nothing and attends fewer cached tokens).  Quality comes from the harness's lm-eval tasks (``tasks/``) at each speedup, and the
attention-sink option (``protect_first`` 0 vs 1) is compared on the same tasks.

    python bench/bench_decoder.py [--model smollm2] [--speedups 1,2,4] [--limit 200] [--out FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

import torch

import harness
from harness.measure.generation import generation_calls, generation_speeds
from harness.measure.hardware import check_device, hardware_fingerprint
from harness.measure.latency import interleaved_latency
from harness.models.catalog import load_causal_lm
from harness.pruning.surface import stock_copy
from harness.pruning.flops import forward_flops
from harness.runners.lm_eval_bridge import evaluate

TASKS = ["rt-polarity-zs", "boolq-zs", "heldout-ppl"]


def prefill(model, stock, length: int, speedups: list[float], repeats: int, device: str = "cpu") -> list[dict]:
    ids = torch.randint(100, model.config.vocab_size, (1, length), generator=torch.Generator().manual_seed(0)).to(device)
    spec = model.arch_spec
    one_token_head = dataclasses.replace(spec, head_per_token=0, head_flops=spec.head_per_token)
    rows = []
    with torch.no_grad():
        for speedup in speedups:
            model.set_speedup(speedup)
            timings = interleaved_latency({"dense": lambda: stock(ids, logits_to_keep=1),
                                           "pruned": lambda: model(ids, logits_to_keep=1)}, warmup=1, repeats=repeats,
                                          device=device)
            counts = [len(layer[0]) for layer in model.last_kept]
            predicted = forward_flops(one_token_head, length) / forward_flops(one_token_head, length, counts)
            measured = timings["dense"].median_ms / timings["pruned"].median_ms
            rows.append({"speedup": speedup, "predicted": predicted, "measured": measured,
                         "dense_ms": timings["dense"].median_ms, "pruned_ms": timings["pruned"].median_ms})
            print(rows[-1], file=sys.stderr, flush=True)
    return rows


def generation(model, stock, length: int, speedups: list[float], repeats: int, new_tokens: int = 32,
               device: str = "cpu") -> list[dict]:
    """Time to first token and decode tokens/s through ``generate`` (greedy, KV cache), with the calls and
    fields the sweep records (``harness.measure.generation``)."""
    ids = torch.randint(100, model.config.vocab_size, (1, length), generator=torch.Generator().manual_seed(1)).to(device)
    prompt = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    rows = []
    for speedup in speedups:
        model.set_speedup(speedup)
        calls, clocks = generation_calls(model, stock, prompt, new_tokens, device)
        timings = interleaved_latency(calls, warmup=1, repeats=repeats, device=device)
        rows.append({"speedup": speedup, **generation_speeds(timings, clocks, 1, new_tokens)})
        print(rows[-1], file=sys.stderr, flush=True)
    return rows


def quality(loaded, speedups: list[float], limit: int, protect_first: int) -> dict[float, dict]:
    out = {}
    for speedup in speedups:
        harness.prune(loaded.model, speedup=speedup, protect_first=protect_first)
        out[speedup] = evaluate(loaded.model, loaded.tokenizer, TASKS, batch_size=8, limit=limit)
        print(speedup, protect_first, out[speedup], file=sys.stderr, flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--speedups", default="1,2,4")
    parser.add_argument("--prompt-length", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default: cpu)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    speedups = [float(s) for s in args.speedups.split(",")]
    device = check_device(args.device)
    loaded = load_causal_lm(args.model, "pretrained")
    loaded.model.to(device)
    stock = stock_copy(loaded.model)
    harness.prune(loaded.model)
    speed = prefill(loaded.model, stock, args.prompt_length, speedups, args.repeats, device)
    generate = generation(loaded.model, stock, args.prompt_length, speedups, max(2, args.repeats // 2), device=device)
    scores = {first: quality(loaded, speedups, args.limit, first) for first in (0, 1)}
    hw = hardware_fingerprint(device)
    lines = [f"{args.model} ({loaded.checkpoint}) on {hw['id']}, torch {hw['torch']}, {hw['torch_threads']} threads; "
             f"command: `python bench/bench_decoder.py --limit {args.limit}`", "",
             f"Prefill latency on {args.prompt_length}-token prompts (batch 1, logits for the last token):", "",
             "| speedup | predicted | measured | efficiency | dense ms | pruned ms |", "|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['speedup']:g} | {r['predicted']:.2f} | {r['measured']:.2f} | {r['measured'] / r['predicted']:.3f} | "
              f"{r['dense_ms']:.0f} | {r['pruned_ms']:.0f} |" for r in speed]
    lines += ["", f"Generation through `generate` (greedy, KV cache; the prefill is pruned, decoding is not), "
              f"{args.prompt_length}-token prompt, 32 new tokens:", "",
              "| speedup | TTFT dense ms | TTFT pruned ms | TTFT speedup | decode tok/s dense | decode tok/s pruned |",
              "|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['speedup']:g} | {r['dense_ttft_ms']:.0f} | {r['ttft_ms']:.0f} | {r['ttft_speedup']:.2f} | "
              f"{r['dense_decode_tokens_per_s']:.1f} | {r['decode_tokens_per_s']:.1f} |" for r in generate]
    lines += ["", f"Quality (lm-eval, limit {args.limit} documents per task; ± standard error):", "",
              "| protect_first | speedup | rt-polarity-zs acc | boolq-zs acc | heldout-ppl word perplexity |",
              "|---:|---:|---:|---:|---:|"]
    for first, by_speedup in scores.items():
        for speedup, result in by_speedup.items():
            rt, bq, ppl = (result[t] for t in TASKS)
            lines.append(f"| {first} | {speedup:g} | {100 * rt['acc']:.1f} ± {100 * rt['acc_stderr']:.1f} | "
                         f"{100 * bq['acc']:.1f} ± {100 * bq['acc_stderr']:.1f} | {ppl['word_perplexity']:.2f} |")
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        from harness.report.store import write_text_atomic

        write_text_atomic(args.out, report)


if __name__ == "__main__":
    main()
