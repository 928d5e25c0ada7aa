"""The written contracts a plugin author implements, kept apart from the implementations.

* ``Family`` (``family.py``): how ``harness.prune`` makes one architecture latency-adjustable.
* ``Method`` (``method.py``): how a pruning method scores, counts, reduces and trains.
* ``Task`` (``task.py``): a task's data, metrics and the protocols it can be evaluated under.
* ``Protocol`` (``protocol.py``): how the sweep obtains a model and measures its quality for a task.

Each is a small base class: subclass it, fill in what it marks abstract, override a default where
your family, method or task differs, and register the instance (in-process with the registries named
in each docstring, or from another package through the entry-point groups in ``harness.registry``).
"""

from harness.contracts.family import KINDS, Family, LayerCall, Tokens
from harness.contracts.method import NEEDS, Method, ScoreInputs
from harness.contracts.protocol import Prepared, Protocol
from harness.contracts.task import LmEvalTask, Task

__all__ = ["KINDS", "NEEDS", "Family", "LayerCall", "LmEvalTask", "Method", "Prepared", "Protocol", "ScoreInputs",
           "Task", "Tokens"]
