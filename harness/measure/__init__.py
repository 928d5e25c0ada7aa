"""Measurement: executed FLOPs, wall-clock latency, and the machine they were measured on."""

from harness.measure.flop_count import count_flops
from harness.measure.hardware import check_device, hardware_fingerprint
from harness.measure.latency import LatencyStats, interleaved_latency, measure_latency

__all__ = [
    "LatencyStats",
    "check_device",
    "count_flops",
    "hardware_fingerprint",
    "interleaved_latency",
    "measure_latency",
]
