"""Where this machine's latency calibrations are kept: their key, their files, and the lookup pruned
models use.

A calibration is reused exactly where it describes the machine, so its key names the hardware (CPU model
and core count, or GPU name), torch version, thread count (CPU), device type, dtype and the architecture
(family and layer shapes).  Calibrations are JSON files in ``$HARNESS_CACHE/latency/``, one per key.

Why here and not beside the latency model (``harness.pruning.latency_model``): the key needs this
machine's hardware fingerprint (``harness.measure.hardware``), the files sit in the harness cache and the
how-to line names a model alias (``harness.models.catalog``), all above pruning.  So the pruner asks for
its calibration through ``latency_model.install_calibrations``, which this module fills on import, and
``harness`` imports this module: every pruned model finds its calibrations.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path

import torch

from harness.assets.cache import cache_dir
from harness.contracts.flops import ArchSpec
from harness.io import write_json_atomic
from harness.measure.hardware import hardware_fingerprint
from harness.models.catalog import MODELS
from harness.pruning.latency_model import (
    FORMAT,
    LatencyModel,
    MissingCalibrationError,
    arch_name,
    describe_key,
    how_to_calibrate,
    install_calibrations,
)
from harness.registry import HarnessError


@lru_cache(maxsize=16)
def _hardware(device: str) -> tuple:
    info = hardware_fingerprint(device)
    if device.startswith("cuda"):
        return ("cuda", info.get("gpu"), info.get("cuda"))
    return ("cpu", info.get("cpu"), info.get("logical_cores"))


def calibration_key(
    family: str, spec: ArchSpec, device: str = "cpu", dtype=torch.float32, threads: int | None = None
) -> dict:
    """Everything a latency depends on besides the shapes: hardware, torch, threads, device, dtype, arch."""
    device = str(device)
    kind, hardware, extra = _hardware(device)
    return {
        "architecture": arch_name(family, spec),
        "dtype": str(dtype).removeprefix("torch."),
        "device": kind,
        "hardware": hardware,
        "hardware_detail": extra,
        "torch": torch.__version__,
        "threads": (threads or torch.get_num_threads()) if kind == "cpu" else None,
    }


def calibration_dir() -> Path:
    return cache_dir() / "latency"


def calibration_path(key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return calibration_dir() / f"{key['architecture']}-{key['device']}-{digest}.json"


_LOADED: dict[str, tuple[float, LatencyModel | None]] = {}


def find_calibration(key: dict) -> LatencyModel | None:
    """The stored calibration for ``key``, or None (also for one of another ``FORMAT``); each file version
    is read once."""
    path = calibration_path(key)
    try:
        stamp = path.stat().st_mtime_ns
    except OSError:
        return None
    cached = _LOADED.get(str(path))
    if cached is not None and cached[0] == stamp:
        return cached[1]
    try:
        data = json.loads(path.read_text())
        stale = (
            isinstance(data, dict) and data.get("format") != FORMAT
        )  # another format: made again, as if missing
        model = None if stale else LatencyModel.from_dict(data)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise HarnessError(
            f"the latency calibration {path} cannot be read ({exc}); delete it and run "
            f"harness calibrate again"
        ) from None
    _LOADED[str(path)] = (stamp, model)
    return model


def save_calibration(model: LatencyModel) -> Path:
    path = calibration_path(model.key)
    write_json_atomic(path, model.to_dict())
    _LOADED.pop(str(path), None)
    return path


def require_calibration(key: dict, model_name: str | None = None) -> LatencyModel:
    model = find_calibration(key)
    if model is None:
        raise MissingCalibrationError(
            f"speedup_model='latency' needs a latency calibration of {describe_key(key)}, and there is none "
            f"in {calibration_dir()}; make one with: {how_to_calibrate(key, model_name or _alias_for(key))}"
        )
    return model


def _alias_for(key: dict) -> str | None:
    """The model alias whose architecture the key names, for the how-to line (None if none does)."""
    try:
        for name, spec in MODELS.items():
            family = spec.family_contract
            with torch.device("meta"):
                model = family.auto_class.from_config(spec.architecture())
            if (
                key["architecture"].split("-head")[0]
                == arch_name(family.name, family.arch_spec(model)).split("-head")[0]
            ):
                return name
    except Exception:  # only a hint in an error message: never let it fail the error itself
        return None
    return None


def lookup(family: str, spec: ArchSpec, device: str, dtype, required: bool) -> LatencyModel | None:
    """The pruner's question (``latency_model.calibration_for``): this model's calibration on ``device``;
    when ``required``, an error saying how to make one if there is none, else None."""
    key = calibration_key(family, spec, device, dtype)
    return require_calibration(key) if required else find_calibration(key)


install_calibrations(lookup)
