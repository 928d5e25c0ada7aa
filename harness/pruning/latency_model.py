"""The per-machine latency model beside the FLOP model, and the wall-clock speedup solver built on it.

Why: at batch 1 a layer left with a handful of word-vectors costs the time to read its weights (about
3 ms per bert-base layer on a 2-core CPU), while the FLOP model counts it as nearly free, so a FLOP
target of 4x delivers about 2.3x there.  ``speedup_model="latency"`` solves the profile knob τ so that
*predicted* dense latency ÷ *predicted* pruned latency equals the request for the batch shape being
run, with latencies from a calibration of this machine (``harness calibrate``,
``harness.measure.calibrate``).  The FLOP model stays the default and the reference for FLOP-equal
comparisons.

**The model: a lookup table with linear interpolation**, per calibrated batch size, of the time of
each kind of layer call the pruned forward really makes (``harness.models.stack.run_stack``), timed on
this machine's stock modules and kernels through the family's own methods:

* ``stock[n]``: the stock layer on n tokens (no token dropped yet: the fused attention kernel);
* ``stock_after[n]``: the stock layer on n tokens after a drop, with the mask the forward then passes
  (``harness.pruning.attention.layer_mask``: an explicit causal mask for the packed tokens of a padded
  decoder batch or under eager attention, none without padding under ``sdpa``, and none for an encoder
  without padding, whose ``stock_after`` is then ``stock``);
* ``drop_min[n]`` and ``drop_all[n]``: the drop layer (explicit attention for the scores, selection,
  then output projection and FFN on the kept tokens) from n tokens down to the protected minimum and
  keeping all n.  A drop layer from n to k is ``drop_min[n] + drop_all[k] - drop_min[k]``: its
  attention part depends on n, its output projection and FFN on k;
* ``single``: a layer on one word-vector per sample (BERT's shortcut once only [CLS] is left);
* ``outside_dense[n]``: everything but the layers (embeddings, masks, final norm, head) of a dense
  forward; ``outside_min[n]``/``outside_all[n]``: the same after drops, with the head (a decoder's LM
  head on the kept rows) reading the protected minimum or all n rows; linear in the rows in between;
* ``residual[n]``: what a whole pruned forward (FLOP target 3) took beyond the sum of the above, timed
  at two lengths against the stock dense forward (``harness.measure.calibrate.fit_residuals`` says
  why: calls timed in loops of their own run faster than among a forward's other calls), added to
  every prediction of a forward that drops tokens.

Tables are per layer (each point is the median of calls cycled over all layers, so weights stream
from memory as they do in a forward), made non-decreasing in n by isotonic regression (``_monotone``;
not the residual).  Between calibrated lengths time is linear in n; between calibrated batch sizes,
linear in the batch size at the same n; above the largest, proportional to it.  Lengths beyond the
calibrated range are an error that says how to calibrate further.  Predicted dense latency is
``outside_dense + L·stock``; the prediction is for a batch of equal-length samples
(the latency batches of ``harness run`` and ``bench/``), each sample's τ solved for the batch's shape.

Stored calibrations are JSON files in ``$HARNESS_CACHE/latency/``, keyed by hardware, torch, threads,
device, dtype and architecture, so a calibration is reused exactly where it describes the machine.  The
key and the files are ``harness.measure.calibration_store``'s: the hardware fingerprint and the cache sit
above pruning, so the pruner reaches its calibration through ``calibration_for``, whose lookup that
module installs (``install_calibrations``) when ``harness`` is imported.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch

from harness.contracts.flops import ArchSpec, Schedule, UnreachableSpeedupError, forward_flops, reaches
from harness.registry import HarnessError

SPEEDUP_MODELS = ("flops", "latency")
"""What a requested speedup means: FLOPs(dense)/FLOPs(pruned) (default), or predicted wall-clock
latency(dense)/latency(pruned) on this machine for the batch shape being run."""
FORMAT = 2
"""2 (2026-12-03): layer calls timed without autograd, and the pruned forward's ``residual``.  A stored
calibration of another format is treated as missing, so ``harness calibrate`` makes it again: format 1
tables read the long batch-16 drop layers up to 40% slow."""
SERIES = ("stock", "stock_after", "drop_min", "drop_all", "outside_dense", "outside_min", "outside_all")
RESIDUAL = "residual"
"""What a whole pruned forward took beyond the tables' sum, per length (``harness.measure.calibrate.
fit_residuals``): not made monotone (it may be negative), zero in a calibration made before it."""
FALLBACK = {"stock_after": "stock", "outside_dense_last": "outside_dense", "outside_last": "outside_min"}
"""Series a calibration may lack (an encoder's stock layer after a drop is its stock layer; a model
without a last-token head has no last-token series) and what stands in for them."""
LAST_TOKEN = {
    "outside_dense": "outside_dense_last",
    "outside_min": "outside_last",
    "outside_all": "outside_last",
}
"""With logits for the last token only (a decoder's prefill, ``logits_to_keep=1``), the head reads one
row whatever was kept."""
TAU_STEPS = 256
"""τ grid points scanned before bisection: predicted latency need not fall monotonically in τ (the
first drop layer replaces the fused attention kernel by the explicit one), so the solver scans for the
first τ that reaches the target and refines between it and the point before."""


def check_speedup_model(name) -> str:
    if name not in SPEEDUP_MODELS:
        raise HarnessError(
            f"unknown speedup model {name!r}; valid speedup models: {', '.join(SPEEDUP_MODELS)}"
        )
    return name


class MissingCalibrationError(HarnessError):
    """No latency calibration for this machine, torch, thread count, device and architecture."""


# --- how a calibration is named -----------------------------------------------------------------------------


def arch_name(family: str, spec: ArchSpec) -> str:
    """The architecture as the calibration key names it: family and layer shapes (not weights)."""
    kv = spec.num_kv_heads or spec.num_heads
    name = (
        f"{family}-L{spec.num_layers}-h{spec.hidden}-a{spec.num_heads}x{spec.head_dim}-kv{kv}"
        f"-ffn{spec.ffn_dim}x{spec.ffn_matrices}"
    )
    if spec.head_per_token:
        name += f"-head{spec.head_per_token}"
    if spec.decoder_layers:
        name += f"-dec{spec.decoder_layers}x{spec.decoder_tokens}"
    return name


def describe_key(key: dict) -> str:
    threads = f", {key['threads']} threads" if key.get("threads") else ""
    return (
        f"{key['architecture']} ({key['dtype']}) on {key['device']} {key['hardware']}{threads}, "
        f"torch {key['torch']}"
    )


def how_to_calibrate(key: dict, model_name: str | None = None) -> str:
    threads = f" --threads {key['threads']}" if key.get("threads") else ""
    device = "" if key["device"] == "cpu" else " --device cuda"
    return f"harness calibrate --models {model_name or '<alias or checkpoint folder>'}{device}{threads}"


# --- the model ---------------------------------------------------------------------------------------------


def _monotone(values) -> np.ndarray:
    """A series made non-decreasing in n by isotonic regression (pool adjacent violators: the
    least-squares non-decreasing fit), since fewer tokens never cost more.

    Why not the minimum over every longer length, as before: at batch 1 a layer's time is nearly flat
    in n up to ~64 tokens (reading the weights sets it), and the minimum over a flat, noisy stretch is
    its lowest sample, so every short length came out low by about the timing noise.  The pruned
    forward, whose late layers run on short lengths, was then predicted 5-7% fast at batch 1 × 128
    while the dense one (n = 128, above the flat stretch) was predicted within 2%, and the measured
    speedup was 0.91-0.96 of every request there in every bench run.  Pooling averages a flat stretch
    instead.  The first bench with it (2026-11-25, a busy host: held-out latency MAPE 21%) landed at
    1.03-1.09 of the request at batch 1 × 128: the sign of the old bias is gone, and a quiet host must
    tell whether what is left is noise (bench/README.md)."""
    blocks: list[list[float]] = []  # [sum, count] of each pooled run
    for value in np.asarray(values, dtype=float):
        blocks.append([value, 1])
        while len(blocks) > 1 and blocks[-2][0] * blocks[-1][1] > blocks[-1][0] * blocks[-2][1]:
            total, count = blocks.pop()
            blocks[-1][0] += total
            blocks[-1][1] += count
    return np.concatenate([np.full(count, total / count) for total, count in blocks])


@dataclass(eq=False)  # hashed by identity (the solver's caches): one object per calibration file version
class LatencyModel:
    """A calibration: per-layer latency tables (milliseconds) per batch size, over ``lengths``."""

    key: dict
    num_layers: int
    protected: int
    """The protected tokens the ``*_min`` series were timed with."""
    lengths: list[int]
    tables: dict[int, dict[str, list[float] | float | None]]
    """batch size -> series name -> per-length values (``single``: one value or None)."""
    validation: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    last_token: bool = False
    """This view predicts forwards whose head computes logits for the last token only (``head``)."""

    def __post_init__(self):
        self._arrays: dict[int, dict] = {}
        self._x = np.asarray(self.lengths, dtype=float)
        self._last_view: LatencyModel | None = None

    def head(self, last_token: bool) -> LatencyModel:
        """This calibration for forwards whose head reads every kept row (False) or only the last
        token's (True: ``logits_to_keep=1``, a decoder's prefill)."""
        if not last_token or self.last_token:
            return self
        if self._last_view is None:
            self._last_view = LatencyModel(
                self.key,
                self.num_layers,
                self.protected,
                self.lengths,
                self.tables,
                self.validation,
                self.info,
                last_token=True,
            )
        return self._last_view

    # -- storage --
    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "key": self.key,
            "num_layers": self.num_layers,
            "protected": self.protected,
            "lengths": self.lengths,
            "tables": {str(b): t for b, t in self.tables.items()},
            "validation": self.validation,
            "info": self.info,
        }

    @classmethod
    def from_dict(cls, data: dict) -> LatencyModel:
        if data.get("format") != FORMAT:
            raise ValueError(f"format {data.get('format')} is not {FORMAT}")
        return cls(
            data["key"],
            data["num_layers"],
            data["protected"],
            data["lengths"],
            {int(b): t for b, t in data["tables"].items()},
            data.get("validation", {}),
            data.get("info", {}),
        )

    @property
    def batch_sizes(self) -> list[int]:
        return sorted(self.tables)

    @property
    def max_length(self) -> int:
        return self.lengths[-1]

    # -- tables at any batch size --
    def _table(self, batch: int) -> dict:
        if batch in self._arrays:
            return self._arrays[batch]
        sizes = self.batch_sizes

        def series(table, name):
            if self.last_token and name in LAST_TOKEN:
                name = LAST_TOKEN[name]
            while table.get(name) is None and name in FALLBACK:
                name = FALLBACK[name]
            return _monotone(table[name])

        def at(size):
            table = self.tables[size]
            out = {name: series(table, name) for name in SERIES}
            out[RESIDUAL] = np.asarray(table.get(RESIDUAL) or np.zeros(len(self.lengths)), dtype=float)
            out["single"] = table.get("single")
            return out

        if batch in self.tables:
            arrays = at(batch)
        elif batch > sizes[-1] or len(sizes) == 1:
            base = min(sizes, key=lambda s: abs(s - batch)) if batch < sizes[0] else sizes[-1]
            scale = batch / base
            arrays = {name: value * scale if value is not None else None for name, value in at(base).items()}
        else:
            hi = next(s for s in sizes if s > batch)
            lo = max(s for s in sizes if s < batch)
            w = (batch - lo) / (hi - lo)
            a, b = at(lo), at(hi)
            arrays = {
                name: (None if a[name] is None or b[name] is None else (1 - w) * a[name] + w * b[name])
                for name in a
            }
        self._arrays[batch] = arrays
        return arrays

    def _check_length(self, n: int) -> None:
        if n > self.max_length:
            raise HarnessError(
                f"the latency calibration of {describe_key(self.key)} covers up to "
                f"{self.max_length} tokens, not {n}; calibrate longer inputs with: "
                f"{how_to_calibrate(self.key)} --max-length {n}"
            )

    def _at(self, table: dict, name: str, n: float) -> float:
        return float(np.interp(n, self._x, table[name]))

    def dense_ms(self, batch: int, n: int) -> float:
        """Predicted latency of the stock dense forward of ``batch`` samples of ``n`` tokens."""
        self._check_length(n)
        table = self._table(batch)
        return self._at(table, "outside_dense", n) + self.num_layers * self._at(table, "stock", n)

    def pruned_ms(self, batch: int, n: int, counts) -> float:
        """Predicted latency of the pruned forward whose layers keep ``counts`` of ``n`` tokens per sample."""
        self._check_length(n)
        table = self._table(batch)
        total, n_in, dropped = 0.0, n, False
        for k in counts:
            if dropped and n_in == 1 and table["single"] is not None:
                total += table["single"]
            elif k >= n_in:
                total += self._at(table, "stock_after" if dropped else "stock", n_in)
            else:
                low = min(self.protected, k)
                total += (
                    self._at(table, "drop_min", n_in)
                    + self._at(table, "drop_all", k)
                    - (self._at(table, "drop_min", k) if k > low else self._at(table, "drop_all", k))
                )
                dropped = True
            n_in = k
        if not dropped:
            return total + self._at(table, "outside_dense", n)
        low, high = self._at(table, "outside_min", n), self._at(table, "outside_all", n)
        share = 0.0 if n <= self.protected else (n_in - min(self.protected, n)) / (n - min(self.protected, n))
        return total + low + share * (high - low) + self._at(table, RESIDUAL, n)

    def speedup(self, batch: int, n: int, counts) -> float:
        return self.dense_ms(batch, n) / self.pruned_ms(batch, n, counts)

    # -- the solver --
    def solve(self, spec: ArchSpec, batch: int, n: int, speedup: float, schedule: Schedule):
        """``(counts, predicted wall-clock speedup, reached)`` for one sample of a ``batch`` × ``n`` batch.

        The smallest τ whose predicted speedup reaches ``speedup``; where none does, the τ of the
        largest predicted speedup (``reached`` False)."""
        return _solve(self, spec, batch, n, float(speedup), schedule)

    def max_speedup(self, spec: ArchSpec, batch: int, n: int, schedule: Schedule) -> float:
        return _scan(self, spec, batch, n, schedule)[1]


@lru_cache(maxsize=8192)
def _scan(model: LatencyModel, spec: ArchSpec, batch: int, n: int, schedule: Schedule):
    """τ grid, predicted speedups on it, and the best."""
    top = schedule.tau_max(spec)
    taus = [top * i / TAU_STEPS for i in range(TAU_STEPS + 1)]
    dense = model.dense_ms(batch, n)
    seen: dict[tuple, float] = {}
    values = []
    for tau in taus:
        counts = tuple(schedule.counts(spec, n, tau))
        if counts not in seen:
            seen[counts] = dense / model.pruned_ms(batch, n, counts)
        values.append(seen[counts])
    return taus, max(values), values


@lru_cache(maxsize=8192)
def _solve(model: LatencyModel, spec: ArchSpec, batch: int, n: int, speedup: float, schedule: Schedule):
    if speedup == 1:
        return tuple([n] * spec.num_layers), 1.0, True
    taus, best, values = _scan(model, spec, batch, n, schedule)
    if not reaches(best, speedup):
        index = max(range(len(values)), key=values.__getitem__)
        counts = tuple(schedule.counts(spec, n, taus[index]))
        return counts, values[index], False
    first = next(i for i, value in enumerate(values) if reaches(value, speedup))
    lo, hi = (taus[first - 1] if first else 0.0), taus[first]

    def value(tau):
        return model.speedup(batch, n, schedule.counts(spec, n, tau))

    for _ in range(40):
        mid = (lo + hi) / 2
        if reaches(value(mid), speedup):
            hi = mid
        else:
            lo = mid
    counts = tuple(schedule.counts(spec, n, hi))
    return counts, model.speedup(batch, n, counts), True


# --- what the pruner and the sweep call ----------------------------------------------------------------------


def flop_target(
    model: LatencyModel, spec: ArchSpec, batch: int, n: int, speedup: float, schedule: Schedule
) -> tuple[float, bool]:
    """The FLOP speedup whose solution keeps the counts the latency solver chose, and whether the
    wall-clock target was reached.  Methods keep their contract (a FLOP target to ``keep_counts``)."""
    if speedup == 1:
        return 1.0, True
    counts, _, reached = model.solve(spec, batch, n, speedup, schedule)
    return max(1.0, forward_flops(spec, n) / forward_flops(spec, n, list(counts))), reached


def require_reachable_latency(
    model: LatencyModel, spec: ArchSpec, batch: int, n: int, schedule: Schedule, speedup: float, where: str
) -> None:
    """Raise UnreachableSpeedupError naming the largest predicted wall-clock speedup at this shape."""
    best = model.max_speedup(spec, batch, n, schedule)
    if not reaches(best, speedup):
        raise UnreachableSpeedupError(
            f"wall-clock speedup {speedup:g} is unreachable {where} on this machine ({describe_key(model.key)}); "
            f"the largest reachable there is {math.floor(best * 1000) / 1000:.3f} (speedup_model='latency')"
        )


_lookup: Callable[..., LatencyModel | None] | None = None


def install_calibrations(lookup: Callable[..., LatencyModel | None]) -> None:
    """Where ``calibration_for`` finds calibrations: ``lookup(family, spec, device, dtype, required)``.
    ``harness.measure.calibration_store`` installs its own on import (``harness`` imports it), since the
    calibration key and files need the hardware fingerprint and the cache, which sit above pruning."""
    global _lookup
    _lookup = lookup


def calibration_for(pruner, device, required: bool = True) -> LatencyModel | None:
    """The calibration for a pruner's model on ``device``: an error saying how to make one if missing, or
    None when not ``required``."""
    if _lookup is None:
        raise HarnessError(
            "no latency calibration store is installed: import harness (it installs "
            "harness.measure.calibration_store)"
        )
    return _lookup(
        getattr(pruner, "family_name", "unknown"),
        pruner.spec,
        str(device),
        getattr(pruner, "dtype", torch.float32),
        required,
    )
