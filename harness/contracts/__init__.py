"""The written contracts a plugin author implements, kept apart from the implementations.

* ``Family`` (``family.py``): how ``harness.prune`` makes one architecture latency-adjustable;
  ``DecoderFamily`` the hooks a decoder-only family adds (``harness.models.decoder`` implements the rest).
* ``Method`` (``method.py``): how a pruning method scores, counts, reduces and trains.
* ``Task`` (``task.py``): a task's data, metrics and the protocols it can be evaluated under.
* ``EvalProtocol`` (``protocol.py``): how the sweep obtains a model and measures its quality for a task.

Beside them, the vocabulary they are written in and their defaults are built on: ``flops.py``
(``ArchSpec``, ``Schedule``, the FLOP model and the speedup solver), ``profile.py`` (elimination profiles,
themselves an extension point) and ``select.py`` (top-k per sample).  This package imports nothing of
the harness but ``harness.registry``: every other layer sits above it.

Each is a small base class: subclass it, fill in what it marks abstract, override a default where
your family, method or task differs, and register the instance (in-process with the registries named
in each docstring, or from another package through the entry-point groups in ``harness.registry``).
"""

from harness.contracts.family import KINDS, DecoderFamily, Family, LayerCall, Tokens
from harness.contracts.method import NEEDS, Method, ScoreInputs
from harness.contracts.protocol import EvalProtocol, Prepared
from harness.contracts.task import LmEvalTask, Task

__all__ = [
    "KINDS",
    "NEEDS",
    "DecoderFamily",
    "Family",
    "LayerCall",
    "LmEvalTask",
    "Method",
    "Prepared",
    "EvalProtocol",
    "ScoreInputs",
    "Task",
    "Tokens",
]
