"""Measurement: executed FLOPs, wall-clock latency, peak memory, and the machine they were measured on."""

from harness.measure.flop_count import count_flops
from harness.measure.hardware import check_device, check_dtype, hardware_fingerprint
from harness.measure.latency import LatencyStats, interleaved_latency, measure_latency
from harness.measure.memory import peak_memory_mb

__all__ = [
    "LatencyStats",
    "check_device",
    "check_dtype",
    "count_flops",
    "hardware_fingerprint",
    "interleaved_latency",
    "measure_latency",
    "peak_memory_mb",
]
