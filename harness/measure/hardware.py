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
        raise HarnessError(f"device {device} was asked for, but {_no_cuda()}")
    count = torch.cuda.device_count()
    if int(match.group(1) or 0) >= count:
        raise HarnessError(
            f"device {device} does not exist; this machine has {count} CUDA device(s): "
            + ", ".join(f"cuda:{i}" for i in range(count))
        )
    return device


def _no_cuda() -> str:
    """Why this torch sees no CUDA device, and what to do: a CPU-only build (the locked .venv's) needs a
    CUDA build of torch; a CUDA build sees no GPU or no driver."""
    if torch.version.cuda is None:
        return (
            f"this torch ({torch.__version__}) is a CPU-only build: use --device cpu, or install a CUDA build "
            "of torch (https://pytorch.org/get-started/locally/ gives the pip command for your CUDA version)"
        )
    return (
        f"this torch ({torch.__version__}, CUDA {torch.version.cuda}) sees no CUDA device (no GPU or driver is "
        "visible: check nvidia-smi and CUDA_VISIBLE_DEVICES); use --device cpu"
    )


def usable_cores() -> int:
    """The logical cores this process may run on: its CPU affinity where the OS has one (a container or
    ``taskset`` may allow fewer than the machine has), else ``os.cpu_count()``."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def set_threads(threads: int | None) -> None:
    """Use ``threads`` torch threads (None: torch's own choice).  Timings and calibrations record the
    thread count, so the CLI, the calibration and the benches set it through this one check.

    At most ``usable_cores()``: more threads than cores time the scheduler, not the model (no one can
    reproduce such a number), and ``--threads 100000`` ran out of memory in the model load, a traceback."""
    if threads is None:
        return
    cores = usable_cores()
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= cores:
        raise HarnessError(
            f"--threads must be a whole number within 1..{cores} (the logical cores this process "
            f"may use), got {threads}"
        )
    torch.set_num_threads(threads)
