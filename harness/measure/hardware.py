"""A fingerprint of the machine a latency was measured on.

Measured speedups depend on the CPU/GPU and on the thread count, so every result row carries this
fingerprint and leaderboards show its short ``id``: results from different machines then sit in
visibly different rows instead of being silently compared.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
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


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
"""``--dtype``: the weights and compute of every evaluation and timing (training keeps float32 weights)."""
SHORT_DTYPES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def default_dtype(device: str) -> str:
    """float32 on a CPU (its bf16 kernels are slower than fp32 on most CPUs, and the numbers stay those of
    the published checkpoints); bfloat16 on CUDA, what GPU users deploy and what tensor cores are for."""
    return "bfloat16" if device.startswith("cuda") else "float32"


def check_dtype(dtype: str | None, device: str) -> str:
    """The dtype's name (``default_dtype`` where None), or one HarnessError saying what works where."""
    if dtype is None:
        return default_dtype(device)
    if dtype not in DTYPES:
        raise HarnessError(f"unknown --dtype {dtype!r}; valid dtypes: {', '.join(DTYPES)}")
    if dtype == "float16" and not device.startswith("cuda"):
        raise HarnessError(
            "--dtype float16 needs a CUDA device: CPUs lack fast float16 kernels (and some ops); on cpu use "
            "float32 or bfloat16"
        )
    return dtype


def _gpu_driver() -> str | None:
    """The NVIDIA driver's version (``nvidia-smi``), None where the tool is missing or silent."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.splitlines()[0].strip() if out.strip() else None


def hardware_fingerprint(device: str = "cpu", dtype: str = "float32") -> dict[str, Any]:
    """Describe this machine for ``device`` and ``dtype``; ``id`` is short, stable and safe as a table cell.

    The id names the dtype where it is not float32 (``cuda:NVIDIA H100 80GB HBM3:bf16``): a bf16 timing is
    another machine's figure for every comparison, and float32 ids stay those of rows made before --dtype."""
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
        "dtype": dtype,
    }
    if device.startswith("cuda"):
        gpu = torch.cuda.get_device_name(device)
        info.update(gpu=gpu, cuda=torch.version.cuda, driver=_gpu_driver())
        info["gpu_memory_gb"] = round(torch.cuda.get_device_properties(device).total_memory / 1024**3, 1)
        info["id"] = f"cuda:{_short_name(gpu)}"
    else:
        info["id"] = f"cpu:{_short_name(cpu)}:{threads}t"
    if dtype != "float32":
        info["id"] += f":{SHORT_DTYPES[dtype]}"
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
            f"this torch ({torch.__version__}) is a CPU-only build: use --device cpu, or install the GPU build "
            "(in a checkout: make test TORCH=cuda, which installs requirements-cuda.lock; elsewhere: "
            "pip install torch from PyPI, whose Linux wheels are CUDA builds)"
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
