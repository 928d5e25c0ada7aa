"""The public surface of a pruned model: what runners, benches and users read and change.

``harness.prune`` turns a model's class into a subclass of itself with this mixin; the state lives in
``model.harness_pruner``, which only ``harness.models`` and ``harness.pruning`` touch.  Everything
else goes through these names:

* ``pruning`` (the settings), ``set_speedup`` (offline tuning: no retraining);
* ``last_kept`` (per layer, per sample, the original positions the last forward kept) and
  ``last_forward`` (its analytic FLOPs, realised speedup and clamped samples, a ``ForwardStats``
  that adds up over forwards);
* ``predicted_speedup(length)`` and ``max_speedup(length)``: what the FLOP model predicts for a
  sample of that many tokens at the current target, and the largest speedup reachable at that length;
  ``max_wallclock_speedup(batch, length)`` and ``predicted_latency()``: the same from this machine's
  latency calibration (``speedup_model="latency"``), for a batch shape and for the last forward;
* ``arch_spec`` (the architecture as the FLOP model sees it), ``max_length``;
* ``protect_tail(lengths)``: keep each sample's last tokens in every layer (lm-eval continuations).
"""

from __future__ import annotations

import copy
import inspect
from functools import cache

import torch

from harness.contracts.flops import ArchSpec, forward_flops
from harness.pruning.latency_model import calibration_for
from harness.pruning.pruner import ForwardStats, Pruner, PruningSettings


class PrunedModelMixin:
    """Methods every pruned model gains."""

    harness_pruner: Pruner

    def set_speedup(self, speedup: float) -> None:
        """Run the next forwards at ``speedup`` (FLOPs(dense)/FLOPs(pruned), or predicted wall-clock
        latency(dense)/latency(pruned) with ``speedup_model="latency"``); no retraining."""
        parameter = next(self.parameters(), None)
        if parameter is not None:  # the latency model's calibration key
            self.harness_pruner.device, self.harness_pruner.dtype = str(parameter.device), parameter.dtype
        self.harness_pruner.set_speedup(speedup)
        self.config.harness_pruning = self.harness_pruner.settings.to_dict()

    @property
    def pruning_method(self):
        """This model's method instance (``harness.contracts.method.Method``; the training loop calls its
        ``begin_training``, ``train_step`` and ``end_training``)."""
        return self.harness_pruner.method

    @property
    def pruning(self) -> PruningSettings:
        return self.harness_pruner.settings

    @property
    def last_kept(self) -> list[list[list[int]]]:
        """Per layer, per sample: the original token positions the last forward kept (sorted)."""
        return self.harness_pruner.last_kept

    @property
    def last_forward(self) -> ForwardStats:
        """The last forward's analytic FLOPs (dense and pruned), realised speedup and clamped samples."""
        return self.harness_pruner.last_forward

    @property
    def arch_spec(self) -> ArchSpec:
        return self.harness_pruner.spec

    @property
    def max_length(self) -> int:
        return self.harness_pruner.max_length

    def max_speedup(self, length: int | None = None) -> float:
        """The largest speedup reachable for a sample of ``length`` tokens (default: the longest input)."""
        return self.harness_pruner.max_speedup(length)

    def predicted_speedup(self, length: int) -> float:
        """The FLOP model's speedup for one sample of ``length`` tokens at the current target (a sample
        too short for the target runs at its own maximum, which this then is)."""
        pruner = self.harness_pruner
        settings = pruner.settings
        counts = pruner.method.keep_counts(pruner.spec, length, settings.speedup, settings.schedule)
        pruned = pruner.method.flops(pruner.spec, length, counts) + pruner.method.predictor_flops(
            pruner.spec, length
        )
        return forward_flops(pruner.spec, length) / pruned

    def max_wallclock_speedup(self, batch: int, length: int, last_token_logits: bool = False) -> float:
        """The largest wall-clock speedup this machine's latency calibration predicts for ``batch``
        samples of ``length`` tokens (with logits for the last token only: ``last_token_logits``); an
        error saying how to calibrate if there is no calibration."""
        pruner = self.harness_pruner
        latency = calibration_for(pruner, pruner.device).head(last_token_logits)
        return latency.max_speedup(pruner.spec, batch, length, pruner.settings.schedule)

    def predicted_latency(self) -> tuple[float, float] | None:
        """``(dense ms, pruned ms)`` the latency model predicts for the last forward's shape (batch ×
        its longest sample) and the counts it kept, on this machine; None without a calibration."""
        pruner = self.harness_pruner
        batch, length = pruner.last_shape
        if not batch or not pruner.last_positions:
            return None
        latency = calibration_for(pruner, pruner.last_positions[0][0].device, required=False)
        if latency is None or length > latency.max_length:
            return None
        latency = latency.head(pruner.last_token_logits)
        counts = [int(valid.sum(dim=1).max()) for _, valid in pruner.last_positions]
        return latency.dense_ms(batch, length), latency.pruned_ms(batch, length, counts)

    def fit_method(self, speedups: list[float], tuning) -> None:
        """Let the method tune its inference state for ``speedups`` on held-out rows (``Method.fit``:
        LTP's threshold scales, LAT's length configurations); a no-op for most methods."""
        self.harness_pruner.method.fit(self, list(speedups), tuning)
        self.config.harness_pruning = self.harness_pruner.settings.to_dict()

    def protect_tail(self, lengths: list[int]):
        """Context manager: within it, every layer also keeps the last ``lengths[b]`` tokens of sample b."""
        return self.harness_pruner.protect_tail(lengths)


def attach(model: torch.nn.Module, family, settings: PruningSettings) -> None:
    """Give ``model`` its pruner (or new settings, if it has one), its pruned forward and the public surface."""
    if isinstance(model, PrunedModelMixin):
        model.harness_pruner.settings = settings
        # the random stream restarts: a re-pruned model (a sweep's next cell) draws what a fresh one
        # would, whatever ran before it (timing forwards, retried when the machine was busy)
        model.harness_pruner.generator.manual_seed(settings.seed)
        return
    model.harness_pruner = Pruner(family.arch_spec(model), settings, family.max_length(model))
    model.harness_pruner.family_name = family.name
    family.install(model, model.harness_pruner)
    if last_token_kwargs(model):
        model.register_forward_pre_hook(_note_logits_to_keep, with_kwargs=True)
    model.__class__ = pruned_class(type(model))


def last_token_kwargs(model) -> dict:
    """``{"logits_to_keep": 1}`` where the forward takes it (a decoder's prefill: logits for the last token
    only), else ``{}``: what a prefill timing passes, and whether the latency model's last-token head applies."""
    return {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}


def _note_logits_to_keep(model, args, kwargs):
    """Tell the pruner whether this forward wants logits for the last token only (a prefill): the
    latency model then counts the head on one row, as the forward runs it."""
    keep = kwargs.get("logits_to_keep", 0)
    model.harness_pruner.last_token_logits = isinstance(keep, int) and keep == 1


@cache
def pruned_class(cls: type) -> type:
    """``cls`` with the public surface.  Same name as the stock class, so save_pretrained's
    "architectures" stays loadable by plain transformers."""
    return type(cls.__name__, (PrunedModelMixin, cls), {"__module__": __name__, "__qualname__": cls.__name__})


def stock_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A stock transformers model with the same weights, on the same device, with its class's default
    attention.

    The dense reference for measured speedups: pruned or not, ``model``'s weights go into its original
    class built afresh from its config, so nothing of the wrapper is timed.  The two share their weight
    tensors (``assign=True``): on a CPU the same layer ran up to 25% faster or slower depending on where
    its weights were allocated (a deep copy of bert-base ran 172 vs 200 ms in the same process), so
    separate copies would put that placement luck into every measured speedup.  Shared, dense and
    pruned read the very same memory; nothing trains the reference, and training the pruned model
    afterwards moves both.
    """
    cls = type(model).__bases__[1] if isinstance(model, PrunedModelMixin) else type(model)
    config = copy.deepcopy(model.config)
    config.__dict__.pop("harness_pruning", None)
    config._attn_implementation = None
    stock = cls(config)
    stock.load_state_dict(model.state_dict(), assign=True)
    return stock.to(next(model.parameters()).device).eval()
