"""Requested vs measured wall-clock speedup for both speedup models (FLOP and latency), on this machine.

For each model and shape (batch × tokens) the script makes or reuses the model's latency calibration
(``harness calibrate``; its held-out validation is printed and put in the report), then times, in
interleaved rounds in one process, stock transformers' dense forward and the pruned forward at speedup 1
(the noise: identical arithmetic, so its measured speedup shows how far this machine's timings wander)
and at each requested speedup under ``speedup_model="flops"`` and ``"latency"``.  Measured speedup =
median dense ms / median pruned ms over ``--repeats`` rounds (after one warm-up round); the order of
the variants rotates every round, and switching a variant's settings happens outside the timed call.

Random weights (speed does not depend on them): bert is BertConfig() (bert-base), smollm2 its Llama
architecture (``harness.models.catalog``).  smollm2 is timed as a prefill, as ``bench_decoder.py`` does:
logits for the last token only (``logits_to_keep=1``), which the latency model sees and counts; its
"FLOP speedup" column is the FLOP model's, which counts the LM head on every kept token.

    python bench/bench_latency_model.py                      # the issue's tables: bert 1,16 x 128,512; smollm2 1 x 1024
    python bench/bench_latency_model.py --models bert --shapes 1x128 --repeats 3 --speedups 2   # a quick look
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time

import torch

import harness
from harness.contracts.flops import UnreachableSpeedupError
from harness.measure.calibrate import calibrate, load_for_timing, validation_line
from harness.measure.hardware import check_device, hardware_fingerprint, set_threads
from harness.models import family_for
from harness.pruning.pruned_model import last_token_kwargs, stock_copy

SHAPES = {"bert": ["1x128", "1x512", "16x128", "16x512"], "smollm2": ["1x1024"]}
TOLERANCE = 0.05


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def interleaved(variants: dict, repeats: int, device: str) -> dict[str, float]:
    """name -> (setup, call); median ms of ``call`` over ``repeats`` rounds after one warm-up round."""
    names, samples = list(variants), {name: [] for name in variants}
    for round_index in range(repeats + 1):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            setup, call = variants[name]
            setup()
            _sync(device)
            start = time.perf_counter()
            call()
            _sync(device)
            if round_index:
                samples[name].append((time.perf_counter() - start) * 1000)
    return {name: float(torch.tensor(values).median()) for name, values in samples.items()}


@torch.no_grad()
def measure_shape(
    name: str, model, stock, batch: int, length: int, speedups: list[float], repeats: int, device: str
) -> list[dict]:
    ids = torch.randint(
        1, model.config.vocab_size, (batch, length), generator=torch.Generator().manual_seed(0)
    )
    inputs = {k: v.to(device) for k, v in family_for(model).latency_inputs(model, ids).items()}
    last = last_token_kwargs(
        model
    )  # a decoder's prefill: logits for the last token only, as bench_decoder.py times it
    inputs.update(last)
    prefill = bool(last)
    method = model.pruning.method
    variants = {"dense": (lambda: None, lambda: stock(**inputs))}
    settings, unreachable = {}, {}

    def setter(speedup, speedup_model):
        return lambda: harness.prune(model, method=method, speedup=speedup, speedup_model=speedup_model)

    plans = [(1.0, "flops")] + [(s, m) for s in speedups for m in ("flops", "latency")]
    for speedup, speedup_model in plans:
        try:
            setter(speedup, speedup_model)()
            if speedup_model == "latency":
                from harness.pruning.latency_model import calibration_for, require_reachable_latency

                latency = calibration_for(model.harness_pruner, device).head(prefill)
                require_reachable_latency(
                    latency,
                    model.arch_spec,
                    batch,
                    length,
                    model.pruning.schedule,
                    speedup,
                    f"at batch {batch} x {length} tokens",
                )
        except UnreachableSpeedupError as error:
            unreachable[(speedup, speedup_model)] = str(error).split("; ")[-1]
            continue
        model(**inputs)
        predicted = model.predicted_latency()
        settings[(speedup, speedup_model)] = {
            "flop_speedup": model.last_forward.realised_speedup,
            "clamped": model.last_forward.clamped,
            "predicted_ms": predicted and predicted[1],
            "predicted_dense_ms": predicted and predicted[0],
        }
        variants[f"{speedup:g}/{speedup_model}"] = (setter(speedup, speedup_model), lambda: model(**inputs))
    print(
        f"{name} batch {batch} x {length}: timing {len(variants)} variants, {repeats} rounds",
        file=sys.stderr,
        flush=True,
    )
    medians = interleaved(variants, repeats, device)
    dense_ms = medians["dense"]
    noise = dense_ms / medians["1/flops"]
    rows = []
    for speedup, speedup_model in plans:
        if speedup == 1:
            continue
        row = {
            "model": name,
            "batch": batch,
            "tokens": length,
            "requested": speedup,
            "speedup_model": speedup_model,
            "noise": noise,
            "dense_ms": dense_ms,
        }
        if (speedup, speedup_model) in unreachable:
            row["unreachable"] = unreachable[(speedup, speedup_model)]
        else:
            pruned_ms = medians[f"{speedup:g}/{speedup_model}"]
            info = settings[(speedup, speedup_model)]
            row.update(
                info,
                pruned_ms=pruned_ms,
                measured=dense_ms / pruned_ms,
                predicted_wallclock=(
                    info["predicted_dense_ms"] / info["predicted_ms"] if info["predicted_ms"] else None
                ),
            )
        rows.append(row)
        print(row, file=sys.stderr, flush=True)
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| model | batch | tokens | requested | speedup model | FLOP speedup | predicted wall-clock | measured "
        "| measured / requested | within ±5% | speedup-1 noise | dense ms | pruned ms (predicted) |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|:--|---:|---:|---:|",
    ]
    for r in rows:
        head = f"| {r['model']} | {r['batch']} | {r['tokens']} | {r['requested']:g} | {r['speedup_model']} |"
        if "unreachable" in r:
            lines.append(
                f"{head} – | – | – | – | unreachable: {r['unreachable']} | {r['noise']:.3f} | "
                f"{r['dense_ms']:.1f} | – |"
            )
            continue
        ratio = r["measured"] / r["requested"]
        predicted = f"{r['predicted_wallclock']:.2f}" if r["predicted_wallclock"] else "–"
        predicted_ms = f" ({r['predicted_ms']:.1f})" if r["predicted_ms"] else ""
        ok = "yes" if abs(ratio - 1) <= TOLERANCE else "no"
        lines.append(
            f"{head} {r['flop_speedup']:.2f} | {predicted} | {r['measured']:.2f} | {ratio:.3f} | {ok} | "
            f"{r['noise']:.3f} | {r['dense_ms']:.1f} | {r['pruned_ms']:.1f}{predicted_ms} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="bert,smollm2")
    parser.add_argument(
        "--shapes", default=None, help="batch x tokens, e.g. 1x128,16x512 (default: the issue's)"
    )
    parser.add_argument("--speedups", default="2,3,4")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--recalibrate", action="store_true", help="calibrate again even where one is stored")
    parser.add_argument("--out", default=None, help="also write the report (Markdown) here")
    args = parser.parse_args()
    device = check_device(args.device)
    set_threads(args.threads)
    speedups = [float(s) for s in args.speedups.split(",")]
    started = time.perf_counter()
    sections = []
    for name in args.models.split(","):
        shapes = [
            tuple(map(int, s.split("x"))) for s in (args.shapes.split(",") if args.shapes else SHAPES[name])
        ]
        torch.manual_seed(0)
        model = load_for_timing(name, device)
        stock = stock_copy(model)  # shares the weights: dense and pruned read the same memory
        latency, reused = calibrate(
            name,
            sorted({b for b, _ in shapes}),
            device=device,
            max_length=max(n for _, n in shapes),
            force=args.recalibrate,
            log=lambda line: print(line, file=sys.stderr, flush=True),
            model=model,
        )
        line = validation_line(latency.validation)
        print(f"{name}: {line}", file=sys.stderr, flush=True)
        rows = []
        for batch, length in shapes:
            rows += measure_shape(name, model, stock, batch, length, speedups, args.repeats, device)
        spread = latency.info.get("timing_spread")
        sections.append(
            f"### {name}\n\nCalibration ({'reused' if reused else 'made'}; "
            f"{latency.info.get('seconds', '?')} s, batch sizes {latency.batch_sizes}, up to "
            f"{latency.max_length} tokens, timing spread {spread}): {line}.\n\n{table(rows)}\n"
        )
        del model, stock
    hw = hardware_fingerprint(device)
    report = (
        f"Measured {dt.date.today()} on {hw['id']} ({hw.get('gpu') or hw['cpu']}, torch {hw['torch']}, "
        f"{hw['torch_threads']} threads), random weights, medians of {args.repeats} interleaved rounds, "
        f"{(time.perf_counter() - started) / 60:.0f} minutes; command: `python bench/bench_latency_model.py "
        f"{' '.join(sys.argv[1:])}`\n\n" + "\n".join(sections)
    )
    print(report)
    if args.out:
        from harness.report.store import write_text_atomic

        write_text_atomic(args.out, report)


if __name__ == "__main__":
    main()
