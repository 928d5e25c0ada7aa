"""Per-model pruning state: the settings, the per-sample plan, and what the last forward kept.

One ``Pruner`` belongs to one pruned model.  The model adapter asks it, once per forward, how many
word-vectors each sample keeps after each layer (``plan``), and tells it, layer by layer, which
original positions survived (``record``).  Changing the speedup is one assignment: no weights move,
which is what makes offline tuning ("fine-tune once, run at any speedup") cheap.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace

import torch

from harness.pruning.flops import ArchSpec, Schedule, counts_for_speedup, forward_flops, max_speedup
from harness.pruning.methods import METHODS, Method
from harness.pruning.profile import PROFILES
from harness.registry import HarnessError


@dataclass(frozen=True)
class PruningSettings:
    """Everything needed to rebuild a pruned model; stored in ``config.harness_pruning``."""

    method: str = "acc"
    speedup: float = 1.0
    profile: str = "tilt"
    r_min: float = 0.0
    protect_first: int = 1
    protect_last: int = 0
    min_keep: int = 0
    """Every layer keeps at least this many tokens (a sample no longer than that runs dense)."""
    seed: int = 0

    def __post_init__(self):
        METHODS.get(self.method)
        PROFILES.get(self.profile)
        check_speedup(self.speedup)
        if not 0.0 <= self.r_min <= 1.0:
            raise HarnessError(f"r_min must be within [0, 1], got {self.r_min:g}")
        for name in ("protect_first", "protect_last", "min_keep"):
            if getattr(self, name) < 0:
                raise HarnessError(f"{name} must be >= 0, got {getattr(self, name)}")

    @property
    def schedule(self) -> Schedule:
        return Schedule(self.profile, self.r_min, self.protect_first + self.protect_last, self.min_keep)

    def to_dict(self) -> dict:
        return asdict(self)


def check_speedup(value) -> float:
    """A speedup as a float ≥ 1, or a HarnessError saying what was wrong."""
    try:
        speedup = float(value)
    except (TypeError, ValueError):
        raise HarnessError(f"speedup must be a number >= 1, got {value!r}") from None
    if not math.isfinite(speedup) or speedup < 1:
        raise HarnessError(f"speedup must be a number >= 1, got {value!r}")
    return speedup


class Pruner:
    def __init__(self, spec: ArchSpec, settings: PruningSettings, max_length: int):
        self.spec = spec
        self.settings = settings
        self.max_length = max_length
        self.generator = torch.Generator().manual_seed(settings.seed)
        self.last_positions: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.last_flops: tuple[int, int] = (0, 0)
        self.last_clamped = 0
        self.tail: list[int] | None = None

    @property
    def method(self) -> Method:
        return METHODS.get(self.settings.method)

    def set_speedup(self, speedup) -> None:
        """Change the target speedup; an error if even the longest input could not reach it."""
        speedup = check_speedup(speedup)
        reachable = max_speedup(self.spec, self.max_length, self.settings.schedule)
        if speedup > reachable + 1e-9:
            raise HarnessError(
                f"speedup {speedup:g} is unreachable for this model even at its maximum length "
                f"{self.max_length}; the largest reachable speedup is {reachable:.3f}"
            )
        self.settings = replace(self.settings, speedup=speedup)

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
        rank = valid.long().cumsum(dim=1) - 1
        tails = torch.tensor(self._tails(valid.shape[0]), device=valid.device).unsqueeze(1)
        from_end = valid.sum(dim=1, keepdim=True) - 1 - rank
        return valid & ((rank < self.settings.protect_first) | (from_end < tails))

    def plan(self, n_valid: torch.Tensor) -> torch.Tensor:
        """(B, L) tokens kept per sample and layer; samples too short for the speedup run at their max."""
        schedule, speedup = self.settings.schedule, self.settings.speedup
        first = self.settings.protect_first
        rows, dense, pruned, clamped = [], 0, 0, 0
        for n, tail in zip(n_valid.tolist(), self._tails(len(n_valid))):
            counts = counts_for_speedup(self.spec, n, speedup, replace(schedule, protected=first + tail))
            rows.append(counts)
            full, cost = forward_flops(self.spec, n), forward_flops(self.spec, n, list(counts))
            dense, pruned = dense + full, pruned + cost
            clamped += full / cost < speedup - 1e-6
        self.last_flops, self.last_clamped = (dense, pruned), clamped
        self.last_positions = []
        return torch.tensor(rows, dtype=torch.long, device=n_valid.device)

    def record(self, positions: torch.Tensor, valid: torch.Tensor) -> None:
        self.last_positions.append((positions, valid))

    @property
    def last_kept(self) -> list[list[list[int]]]:
        """For the last forward: per layer, per sample, the original positions kept (sorted)."""
        return [
            [row[mask].tolist() for row, mask in zip(positions, valid)]
            for positions, valid in self.last_positions
        ]
