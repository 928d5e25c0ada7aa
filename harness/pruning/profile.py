"""Elimination profiles (τ → retention per layer), under the name pruning code has always imported them by.

They live in ``harness.contracts.profile``: a profile family is an extension point and the schedule the
method contract solves is built on it (``harness.contracts.profile`` says more).
"""

from harness.contracts.profile import (
    CEIL_TOLERANCE,
    PROFILES,
    ProfileFamily,
    RatioFn,
    keep_counts,
    retention_ratios,
)

__all__ = ["CEIL_TOLERANCE", "PROFILES", "ProfileFamily", "RatioFn", "keep_counts", "retention_ratios"]
