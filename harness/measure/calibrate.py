"""``harness calibrate``: time an architecture's layer calls on this machine, fit the latency model, and
check it on shapes it was not fitted on.

What is timed is what the pruned forward runs (``harness.pruning.latency_model`` names the series): the
model (random weights: speed does not depend on them) is pruned, its real forward is run once per
(batch, length) with the layer loop replaced by a recorder (``_recording_stack``), and the recorded
hidden states, tokens and layer-call state are handed to the family's own ``run_layer``,
``drop_layer`` and ``single_token_layer``, cycling over all layers so that weights come from memory
as they do in a forward.  Everything but the layers (embeddings, masks, final norm, head) is timed as
the real forward with the layer loop replaced by the identity, and again with ``logits_to_keep=1``
where the forward takes it (a decoder's prefill).  Every grid point of every batch size is timed in
``ROUNDS`` interleaved rounds over the whole grid (``time_probes`` says why); a point is the median
of its rounds.  Then whole pruned forwards are timed against the stock dense one at two lengths per batch
size for what the tables' sum misses (``fit_residuals``).

Validation, on shapes outside the grid: lengths between the grid points and batch sizes between the
calibrated ones, stock dense forwards and pruned forwards at FLOP targets 2 and 3.5 (real kept counts),
interleaved, medians of ``repeats``; the mean absolute percentage error of predicted vs measured
latency, the share within ±10% and ±5%, and the same for the predicted speedup.  Shapes are taken
cheapest first until ``validate_s`` seconds are spent.  Stored with the calibration and printed.
"""

from __future__ import annotations

import copy
import datetime as dt
import math
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch

from harness.api import prune
from harness.contracts.family import Tokens
from harness.measure.calibration_store import calibration_key, find_calibration, save_calibration
from harness.measure.hardware import DTYPES, check_device, check_dtype, hardware_fingerprint, set_threads
from harness.measure.latency import interleaved_latency
from harness.models import family_for, stack
from harness.pruning.attention import layer_mask
from harness.pruning.latency_model import RESIDUAL, LatencyModel, describe_key
from harness.pruning.pruned_model import last_token_kwargs, stock_copy
from harness.registry import HarnessError

LENGTHS = (
    1,
    2,
    3,
    4,
    6,
    8,
    12,
    16,
    24,
    32,
    48,
    64,
    80,
    96,
    128,
    160,
    192,
    256,
    320,
    384,
    448,
    512,
    640,
    768,
    896,
    1024,
    1280,
    1536,
    2048,
    3072,
    4096,
    6144,
    8192,
)
"""The length grid, cut at the calibrated maximum (which is added)."""


ROUNDS = 7
"""Rounds over the whole grid: each point's value is the median of its rounds."""


SPREADS: list[float] = []
"""Upper over lower quartile of every point's rounds timed in this process: how busy the machine was."""
BUSY_SPREAD = 1.15
"""A median spread above this: the calibration warns that the machine looked busy."""


def length_grid(max_length: int) -> list[int]:
    return sorted({n for n in LENGTHS if n < max_length} | {max_length})


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


@dataclass(eq=False)
class Probe:
    """One grid point: a series at one (batch, length), timed by calling ``call`` on ``items`` in turn
    (the layers, so weights stream from memory as they do in a forward)."""

    series: str
    index: int | None
    """Position in the length grid (None: ``single``, one value per batch size)."""
    call: Callable
    items: list
    per_round: int = 1
    warm: bool = False
    """Make one untimed call first in each round (cheap points: see ``time_probes``)."""
    samples: list = field(default_factory=list)
    cursor: int = 0

    def run(self, device: str) -> float:
        """Mean seconds of ``per_round`` calls, cycling over the items."""
        if self.warm:
            self.call(self.items[self.cursor % len(self.items)])
            _sync(device)
        start = time.perf_counter()
        for _ in range(self.per_round):
            self.call(self.items[self.cursor % len(self.items)])
            self.cursor += 1
        _sync(device)
        return (time.perf_counter() - start) / self.per_round


@torch.no_grad()
def time_probes(
    probes: list[Probe], device: str, budget_s: float, rounds: int = ROUNDS, progress: bool = False
) -> None:
    """Time every probe in ``rounds`` interleaved rounds over the whole grid, without autograd, as the
    forwards it predicts run (inference, ``torch.no_grad``).

    Why say so: the probes are built under ``no_grad`` but called here, and until 2026-12-03 they ran
    with autograd on (the random-weight model's parameters require grad), recording a graph and keeping
    every saved tensor (the explicit attention's 200 MB of scores at batch 16 × 512) alive until the
    call returned.  That slowed the long batch-16 drop layers by up to 40% against the same call in
    a real pruned forward, so the pruned forward at batch 16 × 512 was predicted 5-6% slow and the
    latency model overshot every request there by as much.

    Why interleaved: on a shared VM this machine's speed wandered by 20% within seconds (the same
    forward: 176, 204, 235 ms in one process).  Timing the grid one point after another put each
    point in whatever state the machine was in at that moment, and those errors did not cancel between
    the dense and pruned predictions (the held-out MAPE was 11%, with single points 37% off).  Each
    round visits every point (order rotating), so every point sees the same spread of machine states;
    a point's value is the median over rounds of the mean of its calls in a round (as many calls as fit
    ``budget_s / rounds``, at least one, at most two passes over the layers).  A point cheaper than that
    share first makes one untimed call in each round, so that its timed calls follow a call of their own
    kind, as a layer's call in a forward follows the layer before (a guard: on bert-base it moved the
    points by less than the machine's noise)."""
    from tqdm.auto import tqdm

    share = budget_s / max(rounds, 1)
    for probe in probes:  # one untimed call (first-touch allocation), then one to size the rounds
        probe.run(device)
        once = probe.run(device)
        probe.per_round = int(max(1, min(2 * len(probe.items), share // max(once, 1e-6))))
        probe.warm = once < share
    for index in tqdm(
        range(rounds), desc="calibration rounds", unit="round", disable=not progress, file=sys.stderr
    ):
        shift = index * len(probes) // max(rounds, 1)
        for probe in probes[shift:] + probes[:shift]:
            probe.samples.append(probe.run(device))
    for probe in probes:
        low, high = np.percentile(probe.samples, [25, 75])
        SPREADS.append(float(high / low) if low > 0 else 1.0)


def probe_value(probe: Probe) -> float:
    """A probe's milliseconds: the median over its rounds."""
    return float(np.median(probe.samples) * 1000)


@contextmanager
def _recording_stack(record: dict | None = None, out: int | None = None):
    """Within the block the pruned forward's layer loop records its inputs and runs no layer: it returns
    the hidden states (their first ``out`` tokens, as after drops, when ``out`` is given)."""
    original = stack.run_stack

    def recorder(family, layers, hidden, tokens, call):
        if record is not None:
            record.update(family=family, layers=list(layers), hidden=hidden, tokens=tokens, call=call)
        if out is None:
            return hidden, tokens, False
        cut = Tokens(tokens.valid[:, :out], tokens.positions[:, :out], tokens.protected[:, :out])
        return hidden[:, :out], cut, True

    stack.run_stack = recorder
    try:
        yield
    finally:
        stack.run_stack = original


def _after_drop(family, layer, hidden, tokens, call, keep):
    """A drop layer's output and the layer-call state the loop hands the next layer (as ``run_stack``)."""
    hidden, tokens = family.drop_layer(layer, hidden, tokens, keep, call)
    call = copy.copy(call)
    call.mask = layer_mask(tokens.valid, call.causal, hidden, call.implementation)
    family.after_drop(call, tokens)
    return hidden, tokens, call


def load_for_timing(name: str, device: str, dtype: str = "float32"):
    """The alias's architecture with random weights, pruned (speedup 1, acc), in eval mode on ``device``,
    in ``dtype`` (a name of ``hardware.DTYPES``)."""
    from harness.models.catalog import load_causal_lm, load_classifier, model_spec

    spec = model_spec(name)
    torch.manual_seed(0)
    loaded = load_causal_lm(name, "random") if spec.is_decoder else load_classifier(name, "random", 2)
    model = loaded.model.to(device=device, dtype=DTYPES[dtype]).eval()
    return prune(model)


def _inputs(model, batch: int, length: int, device: str) -> dict:
    ids = torch.randint(
        1, model.config.vocab_size, (batch, length), generator=torch.Generator().manual_seed(batch)
    )
    return {key: value.to(device) for key, value in family_for(model).latency_inputs(model, ids).items()}


@torch.no_grad()
def grid_probes(model, batch: int, lengths: list[int], device: str) -> tuple[list[Probe], dict]:
    """The probes of one batch size over ``lengths``, and what the tables need besides their values:
    the protected count, and which series alias another (an encoder without padding runs the same
    stock call after a drop; a drop to the protected minimum of a short input keeps all of it)."""
    probes: list[Probe] = []
    last = last_token_kwargs(model)
    outside = ["outside_dense", "outside_min", "outside_all"] + (
        ["outside_dense_last", "outside_last"] if last else []
    )
    meta = {"protected": 1, "separate_after": True, "aliases": [], "outside": outside}

    def add(series, index, call, items):
        probes.append(Probe(series, index, call, items))

    for index, n in enumerate(lengths):
        inputs = _inputs(model, batch, n, device)
        record: dict = {}
        with _recording_stack(record):
            model(**inputs)
        family, layers, hidden, tokens, call = (
            record[k] for k in ("family", "layers", "hidden", "tokens", "call")
        )
        call.cache = None  # a layer's KV-cache update is not timed (it stores references)
        meta["protected"] = protected = int(tokens.protected.sum(dim=1).max())
        low = min(protected, n)
        keep_low = torch.full((batch,), low, dtype=torch.long, device=hidden.device)
        keep_all = torch.full((batch,), n, dtype=torch.long, device=hidden.device)
        add("stock", index, lambda layer, h=hidden, c=call, f=family: f.run_layer(layer, h, c), layers)
        add(
            "drop_all",
            index,
            lambda layer, h=hidden, t=tokens, c=call, f=family, k=keep_all: f.drop_layer(layer, h, t, k, c),
            layers,
        )
        if low == n:
            meta["aliases"].append(("drop_min", index, "drop_all"))
        else:
            add(
                "drop_min",
                index,
                lambda layer, h=hidden, t=tokens, c=call, f=family, k=keep_low: f.drop_layer(
                    layer, h, t, k, c
                ),
                layers,
            )
        after_hidden, _, after_call = _after_drop(family, layers[0], hidden, tokens, call, keep_all)
        # encoders without padding run the same stock call after a drop (no mask either way)
        meta["separate_after"] = call.causal or call.mask is not None or after_call.mask is not None
        if meta["separate_after"]:
            add(
                "stock_after",
                index,
                lambda layer, h=after_hidden, c=after_call, f=family: f.run_layer(layer, h, c),
                layers,
            )
        if index == 0 and family.single_token_layer(layers[0], hidden[:, :1]) is not None:
            add(
                "single",
                None,
                lambda layer, h=hidden[:, :1], f=family: f.single_token_layer(layer, h),
                layers,
            )
        for name, out, extra in (
            ("outside_dense", None, {}),
            ("outside_min", low, {}),
            ("outside_all", n, {}),
            ("outside_dense_last", None, last),
            ("outside_last", low, last),
        ):
            if name in outside:
                add(name, index, lambda _, i=inputs, o=out, e=extra: _outside(model, i, o, e), [None])
    return probes, meta


def _outside(model, inputs: dict, out: int | None, extra: dict):
    """The forward with its layer loop replaced by the identity (cut to ``out`` tokens, as after drops)."""
    with _recording_stack(out=out):
        return model(**inputs, **extra)


def grid_tables(probes: list[Probe], meta: dict, lengths: list[int]) -> dict:
    """One batch size's latency series (per-layer ms over ``lengths``) from its timed probes."""
    series: dict = {
        name: [None] * len(lengths)
        for name in ("stock", "drop_min", "drop_all", "stock_after", *meta["outside"])
    }
    series["single"] = None
    for probe in probes:
        if probe.index is None:
            series[probe.series] = probe_value(probe)
        else:
            series[probe.series][probe.index] = probe_value(probe)
    for name, index, source in meta["aliases"]:
        series[name][index] = series[source][index]
    if not meta["separate_after"]:
        series["stock_after"] = None
    return series


@torch.no_grad()
def validate(
    model,
    latency: LatencyModel,
    device: str,
    repeats: int = 3,
    budget_s: float = 60.0,
    targets=(2.0, 3.5),
    progress: bool = True,
) -> dict:
    """Predicted vs measured latency on shapes off the calibration grid (see the module docstring).

    The dense reference and the pruned copies share ``model``'s weight tensors (a copy's own weights
    may sit where they run 20% faster or slower)."""
    sizes = latency.batch_sizes
    batches = sorted(set(sizes) | {round(math.sqrt(a * b)) for a, b in zip(sizes, sizes[1:])})
    grid = set(latency.lengths)
    lengths = sorted({_off_grid(round(share * latency.max_length), grid) for share in (0.1, 0.3, 0.55, 0.8)})
    lengths = [n for n in lengths if 2 < n <= latency.max_length]
    shapes = sorted(((b, n) for b in batches for n in lengths), key=lambda s: latency.dense_ms(*s))
    stock = stock_copy(model)
    errors, speedup_errors, measured_shapes, spent = [], [], [], 0.0
    for batch, n in shapes:
        if spent > budget_s:
            break
        start = time.perf_counter()
        inputs = _inputs(model, batch, n, device)
        fns, predicted = (
            {"dense": lambda inputs=inputs: stock(**inputs)},
            {"dense": latency.dense_ms(batch, n)},
        )
        for target in targets:
            pruned, counts = _pruned_at(model, target, inputs)
            predicted[target] = latency.pruned_ms(batch, n, counts)
            fns[target] = lambda m=pruned, inputs=inputs: m(**inputs)
        timings = interleaved_latency(fns, warmup=1, repeats=repeats, device=device)
        dense_ms = timings["dense"].median_ms
        for name, stats in timings.items():
            errors.append(predicted[name] / stats.median_ms - 1)
            if name != "dense":
                speedup_errors.append(
                    (predicted["dense"] / predicted[name]) / (dense_ms / stats.median_ms) - 1
                )
        measured_shapes.append([batch, n])
        spent += time.perf_counter() - start
        if progress:
            print(
                f"  validation batch {batch} x {n} tokens: "
                + ", ".join(
                    f"{name}: predicted {predicted[name]:.1f} ms, measured {stats.median_ms:.1f} ms"
                    for name, stats in timings.items()
                ),
                file=sys.stderr,
                flush=True,
            )
    return {
        **summarise(errors, "latency"),
        **summarise(speedup_errors, "speedup"),
        "shapes": measured_shapes,
        "skipped_shapes": len(shapes) - len(measured_shapes),
        "repeats": repeats,
        "flop_targets": list(targets),
    }


def _pruned_at(model, target: float, inputs: dict):
    """A copy of ``model`` pruned at FLOP target ``target`` (or the most its input length allows), sharing
    its weight tensors, and the counts its forward on ``inputs`` kept per layer."""
    pruned = copy.deepcopy(model, memo={id(t): t for t in (*model.parameters(), *model.buffers())})
    pruned.set_speedup(min(target, pruned.max_speedup(inputs["input_ids"].shape[1])))
    pruned(**inputs)
    return pruned, [max(map(len, layer)) for layer in pruned.last_kept]


RESIDUAL_AT = (0.2, 0.7)
"""``fit_residuals`` times whole forwards at the grid lengths nearest these shares of the longest, and
not at the longest: the bench's shapes (128 and 512 tokens for bert) stay a test, not a fit."""


@torch.no_grad()
def fit_residuals(
    model, latency: LatencyModel, device: str, target: float = 3.0, repeats: int = 5, progress: bool = False
) -> dict[int, list[float]]:
    """batch size -> per calibrated length, what a whole pruned forward takes beyond the tables' sum
    (``LatencyModel.pruned_ms`` without the residual), in the tables' time.

    Why: the layer calls are timed in loops of their own, and a forward runs them among other calls.
    On this 2-core CPU the pruned forward then took 4-9% longer than the tables' sum at batch 1 (bert
    1 × 128 at 3×: 36.1 ms against 33.2; its layer calls 2.7% slower in the forward than in their loops,
    the loop's own work 0.9 ms, embeddings and head 1.2 ms against 0.6 in their loop), about the same
    few milliseconds at every requested speedup, while the stock dense forward was within 1-3%: so the
    latency model delivered 0.91-0.95 of every request at batch 1.  What those calls cost in a forward
    is measured here rather than modelled call by call: the pruned forward at FLOP target ``target``
    (a decoder's as a prefill, ``logits_to_keep=1``) interleaved with the stock dense one, medians of
    ``repeats``, at two lengths per batch size (``RESIDUAL_AT``); between them linear in n, beyond them
    constant.  The dense forward is the yardstick of the machine's speed in this window: the pruned time
    is scaled by predicted ÷ measured dense before the tables' sum is taken off.  Without that, a host
    8% slower here than during the grid (as this VM can be a minute later) added its slowdown to every
    pruned forward, and the solver overshot 1 × 128 by 10%.  The held-out validation that follows
    checks the result on other shapes."""
    stock = stock_copy(model)
    last = last_token_kwargs(model)
    view = latency.head(bool(last))
    grid = latency.lengths
    fitted = sorted({min(grid, key=lambda n: abs(n - share * latency.max_length)) for share in RESIDUAL_AT})
    residuals = {}
    for batch in latency.batch_sizes:
        points = []
        for n in fitted:
            inputs = {**_inputs(model, batch, n, device), **last}
            pruned, counts = _pruned_at(model, target, inputs)
            timings = interleaved_latency(
                {"dense": lambda x=inputs: stock(**x), "pruned": lambda m=pruned, x=inputs: m(**x)},
                warmup=1,
                repeats=repeats,
                device=device,
            )
            pace = view.dense_ms(batch, n) / timings["dense"].median_ms
            points.append(timings["pruned"].median_ms * pace - view.pruned_ms(batch, n, counts))
            if progress:
                print(
                    f"  residual batch {batch} x {n} tokens: {points[-1]:+.1f} ms (dense ran at {pace:.3f} "
                    "of the tables' pace)",
                    file=sys.stderr,
                    flush=True,
                )
        residuals[batch] = np.interp(grid, fitted, points).tolist()
    return residuals


def summarise(errors: list[float], prefix: str) -> dict:
    values = np.abs(np.asarray(errors, dtype=float))
    if not len(values):
        return {f"{prefix}_predictions": 0}
    return {
        f"{prefix}_predictions": int(len(values)),
        f"{prefix}_mape_pct": float(values.mean() * 100),
        f"{prefix}_within_10pct": float((values <= 0.10).mean()),
        f"{prefix}_within_5pct": float((values <= 0.05).mean()),
        f"{prefix}_max_error_pct": float(values.max() * 100),
    }


def _off_grid(n: int, grid: set[int]) -> int:
    while n in grid:
        n += 1
    return n


def validation_line(validation: dict) -> str:
    if not validation.get("latency_predictions"):
        return "no held-out validation"
    v = validation
    return (
        f"held-out validation, {v['latency_predictions']} latencies on {len(v['shapes'])} shapes off the grid: "
        f"MAPE {v['latency_mape_pct']:.1f}%, {100 * v['latency_within_10pct']:.0f}% within ±10%, "
        f"{100 * v['latency_within_5pct']:.0f}% within ±5% (max {v['latency_max_error_pct']:.1f}%); "
        f"speedups: MAPE {v['speedup_mape_pct']:.1f}%, {100 * v['speedup_within_10pct']:.0f}% within ±10%, "
        f"{100 * v['speedup_within_5pct']:.0f}% within ±5%"
    )


def check_settings(batch_sizes, max_length: int | None, budget_s: float, validate_s: float) -> list[int]:
    """The calibration's knobs, checked before anything loads; returns the batch sizes, sorted.

    A negative budget or validation time, or ``--max-length 0`` (read as "the default"), made a
    calibration that was stored and that later runs trusted.  A budget of 0 is one timed call per grid
    point and round: a quick, coarse calibration, still a measurement of this machine."""
    sizes = sorted(set(batch_sizes))
    if not sizes or not all(type(size) is int and size >= 1 for size in sizes):
        raise HarnessError(f"--batch-sizes must be positive integers, got {','.join(map(str, batch_sizes))}")
    if max_length is not None and not (type(max_length) is int and max_length >= 1):
        raise HarnessError(f"--max-length must be a positive integer, got {max_length}")
    for flag, seconds in (("--budget", budget_s), ("--validate-seconds", validate_s)):
        if not (math.isfinite(seconds) and seconds >= 0):
            raise HarnessError(f"{flag} must be a finite number of seconds >= 0, got {seconds:g}")
    return sizes


def calibrate(
    name: str,
    batch_sizes=(1, 16),
    device: str = "cpu",
    dtype: str | None = None,
    threads: int | None = None,
    max_length: int | None = None,
    budget_s: float = 0.25,
    validate_s: float = 60.0,
    force: bool = False,
    progress: bool = True,
    log=print,
    rounds: int = ROUNDS,
    model=None,
) -> tuple[LatencyModel, bool]:
    """The stored calibration of model ``name`` on this machine, made if missing (or ``force``);
    returns it and whether it was reused.  ``model``: the pruned model to time (``load_for_timing``'s
    by default, in ``dtype``: float32 on a CPU, bfloat16 on CUDA where None); a bench passes the one it then
    times, so both read the same weight memory."""
    sizes = check_settings(batch_sizes, max_length, budget_s, validate_s)
    device = check_device(device)
    dtype = check_dtype(dtype, device)
    set_threads(threads)
    model = load_for_timing(name, device, dtype) if model is None else model
    longest = max_length or min(model.max_length, 512 if family_for(model).kind == "encoder" else 1024)
    if not 1 <= longest <= model.max_length:
        raise HarnessError(f"--max-length must be within 1..{model.max_length} for {name}, got {longest}")
    dtype = next(model.parameters()).dtype
    key = calibration_key(family_for(model).name, model.arch_spec, device, dtype)
    found = find_calibration(key)
    if (
        found is not None
        and not force
        and set(sizes) <= set(found.batch_sizes)
        and found.max_length >= longest
    ):
        return found, True
    lengths = length_grid(longest)
    log(
        f"calibrating {name} ({describe_key(key)}): batch sizes {', '.join(map(str, sizes))}, "
        f"{len(lengths)} lengths up to {longest} tokens"
    )
    start = time.perf_counter()
    SPREADS.clear()
    grids = {batch: grid_probes(model, batch, lengths, device) for batch in sizes}
    time_probes(
        [probe for probes, _ in grids.values() for probe in probes], device, budget_s, rounds, progress
    )
    tables = {batch: grid_tables(probes, meta, lengths) for batch, (probes, meta) in grids.items()}
    protected = grids[sizes[0]][1]["protected"]
    for batch, residual in fit_residuals(
        model,
        LatencyModel(key, model.arch_spec.num_layers, protected, lengths, tables),
        device,
        progress=progress,
    ).items():
        tables[batch][RESIDUAL] = residual
    hardware = hardware_fingerprint(device, str(key["dtype"]))
    latency = LatencyModel(
        key,
        model.arch_spec.num_layers,
        protected,
        lengths,
        tables,
        info={
            "model": name,
            "hardware_id": hardware["id"],
            "fit_seconds": 0.0,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "method": model.pruning.method,
        },
    )
    latency.info["fit_seconds"] = round(time.perf_counter() - start, 1)
    spread = float(np.median(SPREADS)) if SPREADS else 1.0
    latency.info["timing_spread"] = round(spread, 3)
    if spread > BUSY_SPREAD:
        log(
            f"warning: the calls of a grid point varied by {100 * (spread - 1):.0f}% (median upper/lower quartile): "
            f"this machine looks busy, and the calibration will be as noisy; rerun with --force when it is quiet"
        )
    if validate_s > 0:
        latency.validation = validate(model, latency, device, budget_s=validate_s, progress=progress)
    latency.info["seconds"] = round(time.perf_counter() - start, 1)
    save_calibration(latency)
    return latency, False
