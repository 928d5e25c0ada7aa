"""harness: benchmark and evaluation harness for latency-adjustable Transformers.

    import harness
    model = harness.prune(model, method="acc", speedup=2.0)
    model.set_speedup(3.0)          # offline tuning: no retraining
    harness.flops.tau_for_speedup(spec, n, 2.0)
"""

from harness.api import from_pretrained, prune
from harness.pruning import flops

__version__ = "0.1.0"
__all__ = ["prune", "from_pretrained", "flops", "__version__"]
