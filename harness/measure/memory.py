"""Peak memory of one call: what a forward needs on top of what is already held (weights, caches).

Token pruning buys decoders memory as much as time (fewer hidden states, smaller attention maps, a
shorter KV cache), so every sweep cell records the peak of its pruned and its dense forward.  Both devices
count the same thing, the bytes of the tensors the call allocates, at their highest point:

* CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, minus what was allocated
  before the call (the caching allocator's own count).
* CPU: torch's profiler with ``profile_memory``, which records every allocation and free of the CPU
  allocator; the running sum of those records at its highest.  Exact and repeatable (the same forward gives
  the same MiB), where the growth of the process's resident set, tried first, moved by tens of MiB between
  calls (the allocator reuses pages it kept) and showed pruned forwards above dense ones.  The profiler costs
  a fraction of a second per call, once per cell and variant, outside the timed calls.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

MB = 2**20


def peak_memory_mb(fn: Callable[[], Any], device: str = "cpu") -> float:
    """The peak memory ``fn()`` allocates on ``device`` beyond what is held before it, in MiB."""
    gc.collect()
    if device.startswith("cuda"):
        return _cuda_peak_mb(fn, device)
    return _cpu_peak_mb(fn)


def _cuda_peak_mb(fn: Callable[[], Any], device: str) -> float:  # GPU only: needs a CUDA device
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - before) / MB


def _cpu_peak_mb(fn: Callable[[], Any]) -> float:
    recorder = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    # The profiler's C++ side prints as it starts and stops, and warns once that blocks allocated before it
    # started are freed inside (the weights' caches): C++ output of this pass is dropped.  The sweep calls
    # this after timing the same forward, so a real warning of the call was already shown there.
    with _quiet_stderr():
        recorder.start()
        try:
            fn()
        finally:
            recorder.stop()
    records = [event for event in recorder.profiler.kineto_results.events() if event.name() == "[memory]"]
    records.sort(key=lambda event: event.start_ns())
    held = peak = 0
    for event in records:  # allocations are positive, frees negative
        held += event.nbytes()
        peak = max(peak, held)
    return peak / MB


@contextmanager
def _quiet_stderr() -> Iterator[None]:
    """File descriptor 2 pointed at /dev/null for the block (C++ output bypasses ``sys.stderr``)."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
