"""The FLOP model and the speedup solver, under the name pruning code has always imported them by.

They live in ``harness.contracts.flops``: the family and method contracts are built on them, and the
contracts sit below pruning (``harness.contracts.flops`` says why).
"""

from harness.contracts.flops import (
    SPEEDUP_TOLERANCE,
    ArchSpec,
    Schedule,
    UnreachableSpeedupError,
    check_speedup,
    counts_for_speedup,
    forward_flops,
    max_speedup,
    predicted_speedup,
    reaches,
    require_reachable,
    tau_for_speedup,
)

__all__ = [
    "SPEEDUP_TOLERANCE",
    "ArchSpec",
    "Schedule",
    "UnreachableSpeedupError",
    "check_speedup",
    "counts_for_speedup",
    "forward_flops",
    "max_speedup",
    "predicted_speedup",
    "reaches",
    "require_reachable",
    "tau_for_speedup",
]
