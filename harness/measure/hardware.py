"""A fingerprint of the machine a latency was measured on.

Measured speedups depend on the CPU/GPU and on the thread count, so every result row carries this
fingerprint and leaderboards show its short ``id``: results from different machines then sit in
visibly different rows instead of being silently compared.
"""

from __future__ import annotations

import os
import platform
import re
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from harness.registry import HarnessError


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Hardware", "cpu model") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown cpu"


def _short_name(name: str) -> str:
    """``Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz`` -> ``Intel Xeon Platinum 8375C``."""
    name = re.sub(r"\((R|TM|tm|r)\)|@.*$|\bCPU\b|\bProcessor\b", " ", name)
    return " ".join(name.split()) or "unknown"


def _memory_gb() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3, 1)
    except (ValueError, OSError, AttributeError):
        return None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def hardware_fingerprint(device: str = "cpu") -> dict[str, Any]:
    """Describe this machine for ``device``; ``id`` is short, stable and safe as a table cell."""
    cpu = _cpu_model()
    threads = torch.get_num_threads()
    info: dict[str, Any] = {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "torch_threads": threads,
        "memory_gb": _memory_gb(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": _version("transformers"),
        "device": device,
    }
    if device.startswith("cuda"):
        gpu = torch.cuda.get_device_name(device)
        info["gpu"] = gpu
        info["cuda"] = torch.version.cuda
        info["id"] = f"cuda:{_short_name(gpu)}"
    else:
        info["id"] = f"cpu:{_short_name(cpu)}:{threads}t"
    return info


def check_device(device: str) -> str:
    """``cpu``, ``cuda`` or ``cuda:N`` where that device exists here, or one HarnessError saying why not."""
    if device == "cpu":
        return device
    match = re.fullmatch(r"cuda(?::(\d+))?", device)
    if match is None:
        raise HarnessError(f"unknown device {device!r}; valid devices: cpu, cuda, cuda:N")
    if not torch.cuda.is_available():
        raise HarnessError(f"device {device} was asked for, but this torch ({torch.__version__}) sees no CUDA "
                           "device; use --device cpu")
    count = torch.cuda.device_count()
    if int(match.group(1) or 0) >= count:
        raise HarnessError(f"device {device} does not exist; this machine has {count} CUDA device(s): "
                           + ", ".join(f"cuda:{i}" for i in range(count)))
    return device


def set_threads(threads: int | None) -> None:
    """Use ``threads`` torch threads (None: torch's own choice).  Timings and calibrations record the
    thread count, so the CLI, the calibration and the benches set it through this one check."""
    if threads is None:
        return
    if threads < 1:
        raise HarnessError(f"--threads must be a positive integer, got {threads}")
    torch.set_num_threads(threads)
