"""Peak memory of one call: what a forward needs on top of what is already held (weights, caches).

Token pruning buys decoders memory as much as time (fewer hidden states, smaller attention maps, a
shorter KV cache), so every sweep cell records the peak of its pruned and its dense forward.

* CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, minus what was allocated
  before the call: the tensors the call created, exactly, as the caching allocator counts them.
* CPU: growth of the process's resident high-water mark (Linux ``VmHWM``, reset through
  ``/proc/self/clear_refs``) over the resident size before the call, after handing freed heap memory
  back to the OS (glibc ``malloc_trim``) so that pages kept from an earlier call do not hide this one's.
  The allocator may still reuse pages it kept, so this is a lower bound of what the call touched; it is
  None where the OS has no such counters (not Linux).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

MB = 2**20


def peak_memory_mb(fn: Callable[[], Any], device: str = "cpu") -> float | None:
    """The peak memory ``fn()`` adds on ``device``, in MiB (None where it cannot be measured here)."""
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


def _cpu_peak_mb(fn: Callable[[], Any]) -> float | None:
    _trim_heap()
    if not _reset_high_water_mark():
        return None
    before = _status_kb("VmRSS")
    fn()
    peak = _status_kb("VmHWM")
    if before is None or peak is None:
        return None
    return max(0, peak - before) * 1024 / MB


def _trim_heap() -> None:
    """Return freed heap pages to the OS (glibc only; elsewhere a no-op)."""
    name = ctypes.util.find_library("c")
    try:
        ctypes.CDLL(name).malloc_trim(0)
    except (OSError, AttributeError, TypeError):
        pass


def _reset_high_water_mark() -> bool:
    """Linux: writing 5 to clear_refs resets VmHWM to the current resident size."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None
