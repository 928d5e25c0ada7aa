"""Wall-clock latency of a forward pass, as robust summary statistics.

Medians and p10/p90 rather than a single mean, because a shared machine produces heavy-tailed
timings.  ``interleaved_latency`` times several callables round-robin so that a dense and a pruned
forward see the same machine conditions (thermal state, noisy neighbours): their median ratio is
the measured speedup reported next to the predicted one.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np
import torch


@dataclass(frozen=True)
class LatencyStats:
    """Summary of ``repeats`` timed calls, in milliseconds."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    mean_ms: float
    std_ms: float
    repeats: int

    @classmethod
    def from_samples(cls, samples_ms: list[float]) -> "LatencyStats":
        if not samples_ms:
            raise ValueError("no latency samples")
        values = np.asarray(samples_ms, dtype=float)
        p10, median, p90 = np.percentile(values, [10, 50, 90])
        return cls(
            median_ms=float(median),
            p10_ms=float(p10),
            p90_ms=float(p90),
            mean_ms=float(values.mean()),
            std_ms=float(values.std(ddof=1)) if len(values) > 1 else 0.0,
            repeats=len(values),
        )

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def _synchronize(device: str) -> None:
    # CUDA kernels run asynchronously: without a barrier we would time the launch, not the work.
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def _timed_call(fn: Callable[[], Any], device: str) -> float:
    _synchronize(device)
    start = time.perf_counter()
    fn()
    _synchronize(device)
    return (time.perf_counter() - start) * 1000.0


def measure_latency(
    fn: Callable[[], Any],
    *,
    warmup: int = 3,
    repeats: int = 10,
    min_time_s: float = 0.0,
    device: str = "cpu",
) -> LatencyStats:
    """Time ``fn`` after ``warmup`` untimed calls: at least ``repeats`` calls, and more until the
    timed calls add up to ``min_time_s`` (so very fast forwards still get a stable median)."""
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    while len(samples) < repeats or sum(samples) < min_time_s * 1000.0:
        samples.append(_timed_call(fn, device))
    return LatencyStats.from_samples(samples)


def interleaved_latency(
    fns: dict[str, Callable[[], Any]],
    *,
    warmup: int = 3,
    repeats: int = 10,
    device: str = "cpu",
) -> dict[str, LatencyStats]:
    """Time each callable ``repeats`` times, alternating them round-robin.

    The starting callable rotates each round so that none is always first (first after a switch can
    pay for cold caches)."""
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(repeats):
        shift = round_index % len(names) if names else 0
        for name in names[shift:] + names[:shift]:
            samples[name].append(_timed_call(fns[name], device))
    return {name: LatencyStats.from_samples(samples[name]) for name in names}
