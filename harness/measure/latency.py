"""Wall-clock latency of a forward pass, as robust summary statistics.

Medians and p10/p90 rather than a single mean, because a shared machine produces heavy-tailed
timings.  ``interleaved_latency`` times several callables round-robin so that a dense and a pruned
forward see the same machine conditions (thermal state, noisy neighbours): their median ratio is
the measured speedup reported next to the predicted one.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

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
    def from_samples(cls, samples_ms: list[float]) -> LatencyStats:
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
    if device.startswith("cuda"):
        return _cuda_timed_call(fn, device)
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000.0


def _cuda_timed_call(fn: Callable[[], Any], device: str) -> float:  # GPU only: needs a CUDA device
    """CUDA events around the call on the device's stream, after a synchronisation: the GPU's own clock
    times the kernels, without the host's wake-up jitter that a perf_counter after ``synchronize`` adds."""
    with torch.cuda.device(device):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        _synchronize(device)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end)


def measure_latency(
    fn: Callable[[], Any], *, warmup: int = 3, repeats: int = 10, min_time_s: float = 0.0, device: str = "cpu"
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
    fns: dict[str, Callable[[], Any]], *, warmup: int = 3, repeats: int = 10, device: str = "cpu"
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


BUSY_CORES = 0.25
"""Other processes using more than this many cores while a timing ran: the figure is marked busy.
On a 2-core VM a single other process at nice 19 slowed a 2-thread forward up to five-fold (threads
wait at every barrier for the one sharing a core), so even a quarter of a core is worth saying."""


class HostLoad:
    """CPU time other processes used while a block ran, in cores (``with HostLoad() as load: ...;
    load.cores``): total busy time from ``/proc/stat`` minus this process's own.  None where there
    is no ``/proc/stat`` (not Linux): the figure is then unknown, not quiet."""

    def __enter__(self) -> HostLoad:
        self.cores: float | None = None
        self._start = (_host_busy_s(), _own_cpu_s(), time.perf_counter())
        return self

    def __exit__(self, *exc) -> None:
        host0, own0, wall0 = self._start
        host1, own1, wall1 = _host_busy_s(), _own_cpu_s(), time.perf_counter()
        if host0 is not None and host1 is not None and wall1 > wall0:
            self.cores = max(0.0, ((host1 - host0) - (own1 - own0)) / (wall1 - wall0))


def _host_busy_s() -> float | None:
    """Seconds all CPUs spent busy since boot (everything but idle and iowait)."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(value) for value in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


ATTEMPTS = 3
"""Tries of a busy timing (``quietest_latency``); the test suite sets 1, so that its speed does not
depend on what else the machine runs."""


def quietest_latency(
    fns: dict[str, Callable[[], Any]], *, attempts: int | None = None, wait_s: float = 20.0, **kwargs
) -> tuple[dict[str, LatencyStats], float | None]:
    """``interleaved_latency`` retried while other processes were busy: up to ``attempts`` tries
    (default ``ATTEMPTS``), ``wait_s`` apart, keeping the one with the least foreign load.  Returns the
    timings and that load in cores (None: unknown), so a report can say when a figure was taken on a
    busy machine."""
    best: tuple[dict[str, LatencyStats], float | None] | None = None
    for attempt in range(ATTEMPTS if attempts is None else attempts):
        if attempt:
            time.sleep(wait_s)
        with HostLoad() as load:
            timings = interleaved_latency(fns, **kwargs)
        if best is None or (load.cores is not None and (best[1] is None or load.cores < best[1])):
            best = (timings, load.cores)
        if load.cores is None or load.cores <= BUSY_CORES:
            break
    return best
