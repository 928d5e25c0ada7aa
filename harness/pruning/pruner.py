"""Per-model pruning state: the settings, the per-sample plan, and what the last forward kept.

One ``Pruner`` belongs to one pruned model.  The shared layer loop asks it, once per forward, how many
word-vectors each sample keeps after each layer (``plan``), and tells it, layer by layer, which
original positions survived (``record``).  Changing the speedup is one assignment: no weights move,
which is what makes offline tuning ("fine-tune once, run at any speedup") cheap.

Only ``harness.models`` and ``harness.pruning`` touch a Pruner; everyone else uses the pruned model's
public surface (``harness.pruning.pruned_model.PrunedModelMixin``).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, astuple, dataclass, fields, replace

import torch

from harness.contracts.flops import (
    ArchSpec,
    Schedule,
    check_speedup,
    forward_flops,
    max_speedup,
    reaches,
    require_reachable,
)
from harness.contracts.method import Method
from harness.contracts.profile import PROFILES
from harness.pruning.latency_model import (
    calibration_for,
    check_speedup_model,
    flop_target,
    require_reachable_latency,
)
from harness.pruning.methods import METHODS
from harness.registry import HarnessError

__all__ = ["ForwardStats", "Pruner", "PruningSettings", "check_speedup", "pruning_options"]


@dataclass(frozen=True)
class PruningSettings:
    """Everything needed to rebuild a pruned model; stored in ``config.harness_pruning``.

    The one list of pruning options: ``harness.prune`` keywords, lm-eval ``model_args`` and the
    stored config are all read from these fields (``pruning_options``)."""

    method: str = "acc"
    """A registered method (``harness list``)."""
    speedup: float = 1.0
    """Target FLOPs(dense)/FLOPs(pruned), a number >= 1."""
    profile: str = "tilt"
    """Elimination profile: tilt | geometric | decay (``harness.contracts.profile``); a method that names its
    own (``Method.profile``) uses that one instead."""
    r_min: float = 0.0
    """Retention floor within [0, 1]."""
    protect_first: int = 1
    """Leading valid tokens always kept (BERT's pooler reads [CLS]; decoders' attention sink)."""
    protect_last: int = 0
    """Trailing valid tokens always kept (decoders: the last token's logits are the output)."""
    min_keep: int = 0
    """Every layer keeps at least this many tokens (a sample no longer than that runs dense)."""
    seed: int = 0
    """Seed of the random baseline."""
    speedup_model: str = "flops"
    """What ``speedup`` means: "flops", FLOPs(dense)/FLOPs(pruned) (the default, and the reference for
    FLOP-equal comparisons), or "latency", predicted wall-clock latency(dense)/latency(pruned) on this
    machine for the batch shape being run (``harness.pruning.latency_model``; needs ``harness calibrate``)."""
    method_state: str = ""
    """The method's per-model state as JSON text ("" for none): LTP's learned thresholds and their
    scale per speedup, LAT's searched length configuration per speedup.  Stored with the model."""

    def __post_init__(self):
        METHODS.get(self.method)
        PROFILES.get(self.profile)
        check_speedup(self.speedup)
        check_speedup_model(self.speedup_model)
        if self.speedup_model == "latency" and not METHODS.get(self.method).latency_model:
            raise HarnessError(
                f"method {self.method!r} plans its own counts; it works with --speedup-model flops only"
            )
        if not 0.0 <= self.r_min <= 1.0:
            raise HarnessError(f"r_min must be within [0, 1], got {self.r_min:g}")
        for name in ("protect_first", "protect_last", "min_keep"):
            if getattr(self, name) < 0:
                raise HarnessError(f"{name} must be >= 0, got {getattr(self, name)}")

    @property
    def schedule(self) -> Schedule:
        """The profile is the method's own where it names one (``Method.profile``), else the settings'."""
        profile = METHODS.get(self.method).profile or self.profile
        return Schedule(profile, self.r_min, self.protect_first + self.protect_last, self.min_keep)

    def to_dict(self) -> dict:
        return asdict(self)


def pruning_options() -> dict[str, type]:
    """Option name -> its type, from ``PruningSettings`` (the one place the options are listed)."""
    types = {"str": str, "float": float, "int": int}
    return {f.name: types[f.type] for f in fields(PruningSettings)}


@dataclass(frozen=True)
class ForwardStats:
    """The analytic cost of forwards: summed FLOPs of their samples, and how many were clamped."""

    dense_flops: int = 0
    pruned_flops: int = 0
    clamped: int = 0
    """Samples too short for the target speedup: they ran at their own maximum."""
    samples: int = 0

    @property
    def realised_speedup(self) -> float | None:
        """FLOPs(dense)/FLOPs(pruned) of these forwards (None before any)."""
        return self.dense_flops / self.pruned_flops if self.pruned_flops else None

    def __add__(self, other: ForwardStats) -> ForwardStats:
        return ForwardStats(*(a + b for a, b in zip(astuple(self), astuple(other))))


def ranks(valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, n) each valid token's rank among its sample's valid tokens, from the start and from the end."""
    rank = valid.long().cumsum(dim=1) - 1
    return rank, valid.sum(dim=1, keepdim=True) - 1 - rank


class Pruner:
    def __init__(self, spec: ArchSpec, settings: PruningSettings, max_length: int):
        self.spec = spec
        self.settings = settings
        self.max_length = max_length
        self.generator = torch.Generator().manual_seed(settings.seed)
        self.last_positions: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.input_valid: torch.Tensor | None = None
        """(B, n) the tokens that entered the first layer in the last forward: the input, or a two-pass
        method's selection (the first layer's KV cache holds these)."""
        self.last_forward = ForwardStats()
        self._plan_lengths: list[int] = []
        self.last_shape: tuple[int, int] = (0, 0)
        """(samples, longest sample) of the last forward."""
        self.tail: list[int] | None = None
        self.answer_from: torch.Tensor | None = None
        """(B,) per sample of the running forward, the input position where its answer tokens begin
        (``mark_answers``); None when no sample has any."""
        self.family_name, self.dtype, self.device = "unknown", torch.float32, "cpu"
        """What the latency model's calibration key needs besides ``spec`` (set by ``surface.attach``
        and ``set_speedup``; a forward uses its inputs' device)."""
        self.training = False
        """The running forward trains (set by the layer loop): methods that train differently read it."""
        self._bound: tuple[str, Method] | None = None
        self.last_token_logits = False
        """The running forward computes logits for the last token only (``logits_to_keep=1``; noted by
        a hook ``surface.attach`` puts on models whose forward takes it): the latency model's head."""

    @property
    def method(self) -> Method:
        """This model's instance of its method (``Method.bind``: per-model state where it has some)."""
        name = self.settings.method
        if self._bound is None or self._bound[0] != name:
            self._bound = (name, METHODS.get(name).bind(self))
        return self._bound[1]

    @property
    def layer_index(self) -> int:
        """The layer now running in the layer loop (0-based): the layers recorded so far."""
        return len(self.last_positions)

    def set_method_state(self, state: str) -> None:
        self.settings = replace(self.settings, method_state=state)

    @property
    def last_flops(self) -> tuple[int, int]:
        return self.last_forward.dense_flops, self.last_forward.pruned_flops

    @property
    def last_clamped(self) -> int:
        return self.last_forward.clamped

    def max_speedup(self, length: int | None = None) -> float:
        """The largest speedup reachable at ``length`` tokens (default: the model's maximum length)."""
        return max_speedup(self.spec, min(length or self.max_length, self.max_length), self.settings.schedule)

    def set_speedup(self, speedup) -> None:
        """Change the target speedup; an error if even the longest input could not reach it."""
        settings = replace(self.settings, speedup=speedup)  # validated by PruningSettings
        if settings.speedup_model == "latency":
            self._require_reachable_latency(settings)
        else:
            require_reachable(
                self.spec,
                self.max_length,
                settings.schedule,
                settings.speedup,
                f"for this model even at its maximum length {self.max_length}",
            )
        self.settings = settings

    def _require_reachable_latency(self, settings: PruningSettings) -> None:
        """A calibration exists, and some calibrated batch size reaches the wall-clock target at the
        longest input it covers (each forward then solves for its own shape)."""
        if settings.speedup == 1:
            return
        latency = calibration_for(self, self.device)
        length = min(self.max_length, latency.max_length)
        best = max(
            latency.batch_sizes, key=lambda b: latency.max_speedup(self.spec, b, length, settings.schedule)
        )
        require_reachable_latency(
            latency,
            self.spec,
            best,
            length,
            settings.schedule,
            settings.speedup,
            f"for this model even at batch {best} x {length} tokens",
        )

    @contextmanager
    def protect_tail(self, lengths: list[int]):
        """Within the block, also keep the last ``lengths[b]`` valid tokens of sample b in every layer.

        For requests whose logits are needed at several positions (an lm-eval continuation); they
        count as protected tokens in the speedup solver too.
        """
        self.tail = [int(length) for length in lengths]
        try:
            yield
        finally:
            self.tail = None

    def _tails(self, batch: int) -> list[int]:
        last = self.settings.protect_last
        if self.tail is None:
            return [last] * batch
        if len(self.tail) != batch:
            raise HarnessError(f"protect_tail got {len(self.tail)} lengths for a batch of {batch}")
        return [max(last, tail) for tail in self.tail]

    def protected_mask(self, valid: torch.Tensor) -> torch.Tensor:
        """(B, n) bool: the first ``protect_first`` and the protected last valid tokens of each sample."""
        rank, from_end = ranks(valid)
        tails = torch.tensor(self._tails(valid.shape[0]), device=valid.device).unsqueeze(1)
        return valid & ((rank < self.settings.protect_first) | (from_end < tails))

    def mark_answers(self, valid: torch.Tensor) -> None:
        """Note where each sample's answer tokens begin in the input (``valid``: the first layer's).

        Under ``protect_tail(lengths)`` (an lm-eval continuation of ``lengths[b]`` tokens) the input
        ends with the context's last token, whose logits predict the answer's first token, then the
        answer's first ``lengths[b] − 1`` tokens: those are the answer tokens.  Their queries never
        score (``scoring_queries``), so the context is pruned as its prefill alone would be."""
        self._tails(len(valid))  # checks the lengths against the batch
        answers = [max(tail - 1, 0) for tail in self.tail or []]
        if not any(answers):
            self.answer_from = None
            return
        _, from_end = ranks(valid)
        answer = valid & (from_end < torch.tensor(answers, device=valid.device).unsqueeze(1))
        width = torch.full((len(valid),), valid.shape[1], device=valid.device)
        self.answer_from = torch.where(answer.any(dim=1), answer.long().argmax(dim=1), width)

    def scoring_queries(self, valid: torch.Tensor, positions: torch.Tensor) -> torch.Tensor | None:
        """(B, n) bool: the entering tokens whose queries may score (not answer tokens); None: all valid."""
        if self.answer_from is None:
            return None
        return valid & (positions < self.answer_from.unsqueeze(1))

    def plan(self, n_valid: torch.Tensor) -> torch.Tensor:
        """(B, L) tokens kept per sample and layer; samples too short for the speedup run at their max."""
        schedule, speedup, method = self.settings.schedule, self.settings.speedup, self.method
        first = self.settings.protect_first
        latency = (
            calibration_for(self, n_valid.device).head(self.last_token_logits)
            if self.settings.speedup_model == "latency" and speedup > 1
            else None
        )
        rows, stats = [], ForwardStats()
        for n, tail in zip(n_valid.tolist(), self._tails(len(n_valid))):
            sample_schedule, target, reached = replace(schedule, protected=first + tail), speedup, True
            if latency is not None:  # the FLOP target whose counts meet the wall-clock one at this shape
                target, reached = flop_target(latency, self.spec, len(n_valid), n, speedup, sample_schedule)
            counts = method.keep_counts(self.spec, n, target, sample_schedule)
            rows.append(counts)
            full, cost = forward_flops(self.spec, n), method.flops(self.spec, n, counts)
            clamped = not reached or not reaches(full / cost, target)
            stats = stats + ForwardStats(full, cost + method.predictor_flops(self.spec, n), int(clamped), 1)
        self.last_forward = stats
        self._plan_lengths = n_valid.tolist()
        self.last_shape = (len(n_valid), int(n_valid.max()) if len(n_valid) else 0)
        self.last_positions = []
        return torch.tensor(rows, dtype=torch.long, device=n_valid.device)

    def count_kept(self) -> None:
        """For a method that decides its counts in the layers: the last forward's FLOPs from what each
        layer really kept (the plan only bounded them)."""
        method, stats = self.method, ForwardStats()
        kept = torch.stack([valid.sum(dim=1) for _, valid in self.last_positions], dim=1).tolist()
        for n, counts in zip(self._plan_lengths, kept):
            full, cost = forward_flops(self.spec, n), method.flops(self.spec, n, counts)
            clamped = not reaches(full / cost, self.settings.speedup)
            stats = stats + ForwardStats(full, cost + method.predictor_flops(self.spec, n), int(clamped), 1)
        self.last_forward = stats

    def record(self, positions: torch.Tensor, valid: torch.Tensor) -> None:
        self.last_positions.append((positions, valid))

    @property
    def last_kept(self) -> list[list[list[int]]]:
        """For the last forward: per layer, per sample, the original positions kept (sorted)."""
        return [
            [row[mask].tolist() for row, mask in zip(positions, valid)]
            for positions, valid in self.last_positions
        ]
