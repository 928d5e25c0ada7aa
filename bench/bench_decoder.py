"""Decoders under ACC: prefill and time-to-first-token speedup, decode speed, and quality of smollm2
at each speedup.

Prefill latency is the forward over the prompt that produces the first token's logits
(``logits_to_keep=1``, no KV cache), on ``--prompt-length`` tokens, pruned vs stock transformers'
forward of the same weights, timed interleaved.  The predicted speedup counts the LM head on one token
on both sides.  TTFT and decode tokens/s come from ``generate`` itself (KV cache: the pruned prefill
leaves each layer's kept tokens in the cache; decoding prunes nothing and attends fewer cached tokens).  Quality comes from the harness's lm-eval tasks (``tasks/``) at each speedup, and the
attention-sink option (``protect_first`` 0 vs 1) is compared on the same tasks.

The prefill table has a stock-layer bound beside each row: the same kept counts run on stock modules and
kernels (fused causal attention over the tokens entering each layer, projection and MLP on the kept
ones; for GemFilter its selection pass, then the whole model on the selection), so efficiency
(measured ÷ predicted) can be read against what those kernels allow.

    python bench/bench_decoder.py [--model smollm2] [--speedups 1,2,4] [--limit 200] [--out FILE]
    python bench/bench_decoder.py --parts prefill --methods acc,last-token,gemfilter,acc-recent --speedups 1,2,3,4
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

import torch

import harness
from harness.contracts.flops import forward_flops
from harness.measure.generation import generation_calls, generation_speeds
from harness.measure.hardware import check_device, hardware_fingerprint
from harness.measure.latency import interleaved_latency
from harness.models.catalog import load_causal_lm
from harness.pruning.pruned_model import stock_copy
from harness.runners.lm_eval_bridge import evaluate

TASKS = ["rt-polarity-zs", "boolq-zs", "heldout-ppl"]


def stock_runs(model, length: int, counts: list[int]) -> list[tuple[int, list[int]]]:
    """The FLOP model's work as runs of stock layers: ``(tokens entering the first layer, tokens each
    layer keeps)``.  One run for a method that prunes inside the forward; GemFilter's selection pass
    (layers before its filter layer on every token, the filter layer keeping k) then the whole model on
    the k selected tokens."""
    layer = model.pruning_method.filter_layer(model.arch_spec)
    if layer is None or counts[0] >= length:
        return [(length, counts)]
    return [(length, [length] * layer + [counts[0]]), (counts[0], counts)]


def stock_layers_at(stock, ids: torch.Tensor, runs: list[tuple[int, list[int]]]):
    """The bound: the FLOP model's work on stock modules and kernels (what no implementation on them can
    beat).  Each layer attends over the tokens entering it with the fused causal kernel (SDPA), then runs
    its output projection and MLP on the last ``kept`` of them; the head reads the last token.  Which
    tokens a method keeps does not change the time, so the bound keeps the most recent ones."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, repeat_kv

    inner = stock.model

    def layer_at(layer, hidden, cos, sin, kept):
        attn, (b, n, _) = layer.self_attn, hidden.shape
        x = layer.input_layernorm(hidden)
        q, k, v = (
            proj(x).view(b, n, -1, attn.head_dim).transpose(1, 2)
            for proj in (attn.q_proj, attn.k_proj, attn.v_proj)
        )
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        k, v = repeat_kv(k, attn.num_key_value_groups), repeat_kv(v, attn.num_key_value_groups)
        context = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)[:, :, n - kept :]
        hidden = hidden[:, n - kept :] + attn.o_proj(context.transpose(1, 2).reshape(b, kept, -1))
        return hidden + layer.mlp(layer.post_attention_layernorm(hidden))

    def forward():
        for tokens, counts in runs:
            hidden = inner.embed_tokens(ids[:, ids.shape[1] - tokens :])
            cos, sin = inner.rotary_emb(hidden, torch.arange(tokens, device=ids.device)[None])
            for layer, kept in zip(inner.layers, counts):
                hidden = layer_at(layer, hidden, cos, sin, kept)
                cos, sin = cos[:, cos.shape[1] - kept :], sin[:, sin.shape[1] - kept :]
        return stock.lm_head(inner.norm(hidden[:, -1:]))

    return forward


def prefill(
    model, stock, length: int, speedups: list[float], repeats: int, device: str = "cpu"
) -> list[dict]:
    """Prefill speedup at each speedup: measured (pruned vs stock dense), predicted (the method's FLOP
    model, head on one token) and the stock-layer bound, timed interleaved."""
    ids = torch.randint(
        100, model.config.vocab_size, (1, length), generator=torch.Generator().manual_seed(0)
    ).to(device)
    spec = model.arch_spec
    one_token_head = dataclasses.replace(spec, head_per_token=0, head_flops=spec.head_per_token)
    method = model.pruning_method
    rows = []
    with torch.no_grad():
        for speedup in speedups:
            model.set_speedup(speedup)
            model(ids, logits_to_keep=1)
            counts = [len(layer[0]) for layer in model.last_kept]
            predicted = forward_flops(one_token_head, length) / method.flops(one_token_head, length, counts)
            timings = interleaved_latency(
                {
                    "dense": lambda: stock(ids, logits_to_keep=1),
                    "pruned": lambda: model(ids, logits_to_keep=1),
                    "bound": stock_layers_at(stock, ids, stock_runs(model, length, counts)),
                },
                warmup=1,
                repeats=repeats,
                device=device,
            )
            dense_ms, pruned_ms, bound_ms = (timings[k].median_ms for k in ("dense", "pruned", "bound"))
            rows.append(
                {
                    "method": model.pruning.method,
                    "speedup": speedup,
                    "predicted": predicted,
                    "measured": dense_ms / pruned_ms,
                    "bound": dense_ms / bound_ms,
                    "dense_ms": dense_ms,
                    "pruned_ms": pruned_ms,
                    "bound_ms": bound_ms,
                }
            )
            print(rows[-1], file=sys.stderr, flush=True)
    return rows


def prefill_table(rows: list[dict]) -> list[str]:
    """Efficiency = measured ÷ predicted; the bound's = bound speedup ÷ predicted: how much of the gap
    the stock kernels leave to close."""
    lines = [
        "| method | speedup | predicted | measured | efficiency | stock-layer bound | bound efficiency | "
        "dense ms | pruned ms | stock layers ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['method']} | {r['speedup']:g} | {r['predicted']:.2f} | {r['measured']:.2f} | "
        f"{r['measured'] / r['predicted']:.3f} | {r['bound']:.2f} | {r['bound'] / r['predicted']:.3f} | "
        f"{r['dense_ms']:.0f} | {r['pruned_ms']:.0f} | {r['bound_ms']:.0f} |"
        for r in rows
    ]
    return lines


def generation(
    model, stock, length: int, speedups: list[float], repeats: int, new_tokens: int = 32, device: str = "cpu"
) -> list[dict]:
    """Time to first token and decode tokens/s through ``generate`` (greedy, KV cache), with the calls and
    fields the sweep records (``harness.measure.generation``)."""
    ids = torch.randint(
        100, model.config.vocab_size, (1, length), generator=torch.Generator().manual_seed(1)
    ).to(device)
    prompt = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    rows = []
    for speedup in speedups:
        model.set_speedup(speedup)
        calls, clocks = generation_calls(model, stock, prompt, new_tokens, device)
        timings = interleaved_latency(calls, warmup=1, repeats=repeats, device=device)
        rows.append({"speedup": speedup, **generation_speeds(timings, clocks, 1, new_tokens)})
        print(rows[-1], file=sys.stderr, flush=True)
    return rows


def quality(loaded, method: str, speedups: list[float], limit: int, protect_first: int) -> dict[float, dict]:
    out = {}
    for speedup in speedups:
        harness.prune(loaded.model, method=method, speedup=speedup, protect_first=protect_first)
        out[speedup] = evaluate(loaded.model, loaded.tokenizer, TASKS, batch_size=8, limit=limit)
        print(speedup, protect_first, out[speedup], file=sys.stderr, flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--speedups", default="1,2,4")
    parser.add_argument(
        "--methods",
        default="acc",
        help="methods whose prefill rows the efficiency table shows; generation and quality use the first",
    )
    parser.add_argument("--parts", default="prefill,generate,quality", help="which tables to make")
    parser.add_argument("--prompt-length", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default: cpu)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    speedups = [float(s) for s in args.speedups.split(",")]
    methods, parts = args.methods.split(","), set(args.parts.split(","))
    device = check_device(args.device)
    loaded = load_causal_lm(args.model, "pretrained")
    loaded.model.to(device)
    stock = stock_copy(loaded.model)
    hw = hardware_fingerprint(device)
    lines = [
        f"{args.model} ({loaded.checkpoint}) on {hw['id']}, torch {hw['torch']}, {hw['torch_threads']} threads; "
        f"command: `python bench/bench_decoder.py {' '.join(sys.argv[1:])}`"
    ]
    if "prefill" in parts:
        speed = []
        for method in methods:
            harness.prune(loaded.model, method=method)
            speed += prefill(loaded.model, stock, args.prompt_length, speedups, args.repeats, device)
        lines += [
            "",
            f"Prefill latency on {args.prompt_length}-token prompts (batch 1, logits for the last token; "
            f"medians of {args.repeats} interleaved rounds):",
            "",
            *prefill_table(speed),
        ]
    harness.prune(loaded.model, method=methods[0])
    if "generate" in parts:
        generate = generation(
            loaded.model, stock, args.prompt_length, speedups, max(2, args.repeats // 2), device=device
        )
        lines += [
            "",
            f"Generation through `generate` ({methods[0]}; greedy, KV cache; the prefill is pruned, decoding "
            f"is not), {args.prompt_length}-token prompt, 32 new tokens:",
            "",
            "| speedup | TTFT dense ms | TTFT pruned ms | TTFT speedup | decode tok/s dense | decode tok/s pruned |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {r['speedup']:g} | {r['dense_ttft_ms']:.0f} | {r['ttft_ms']:.0f} | {r['ttft_speedup']:.2f} | "
            f"{r['dense_decode_tokens_per_s']:.1f} | {r['decode_tokens_per_s']:.1f} |"
            for r in generate
        ]
    if "quality" in parts:
        scores = {first: quality(loaded, methods[0], speedups, args.limit, first) for first in (0, 1)}
        lines += [
            "",
            f"Quality ({methods[0]}; lm-eval, limit {args.limit} documents per task; ± standard error):",
            "",
            "| protect_first | speedup | rt-polarity-zs acc | boolq-zs acc | heldout-ppl word perplexity |",
            "|---:|---:|---:|---:|---:|",
        ]
        for first, by_speedup in scores.items():
            for speedup, result in by_speedup.items():
                rt, bq, ppl = (result[t] for t in TASKS)
                lines.append(
                    f"| {first} | {speedup:g} | {100 * rt['acc']:.1f} ± {100 * rt['acc_stderr']:.1f} | "
                    f"{100 * bq['acc']:.1f} ± {100 * bq['acc_stderr']:.1f} | {ppl['word_perplexity']:.2f} |"
                )
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        from harness.report.store import write_text_atomic

        write_text_atomic(args.out, report)


if __name__ == "__main__":
    main()
