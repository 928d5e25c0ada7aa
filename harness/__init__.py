"""harness: benchmark and evaluation harness for latency-adjustable Transformers.

    import harness
    model = harness.prune(model, method="acc", speedup=2.0)
    model.set_speedup(3.0)          # offline tuning: no retraining
    harness.flops.tau_for_speedup(spec, n, 2.0)

This package's own module sits above every layer (README, Layout): no module of the harness imports it.
Importing it also installs where pruned models find this machine's latency calibrations
(``harness.measure.calibration_store``; the pruner, below it, cannot import it).
"""

from harness.api import from_pretrained, prune
from harness.contracts import flops
from harness.measure import calibration_store  # noqa: F401  (installs the pruner's calibration lookup)
from harness.version import __version__

__all__ = ["prune", "from_pretrained", "flops", "__version__"]
