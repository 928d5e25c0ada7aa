"""Per-model pruning state: the settings, the per-sample plan, and what the last forward kept.

One ``Pruner`` belongs to one pruned model.  The model adapter asks it, once per forward, how many
word-vectors each sample keeps after each layer (``plan``), and tells it, layer by layer, which
original positions survived (``record``).  Changing the speedup is one assignment: no weights move,
which is what makes offline tuning ("fine-tune once, run at any speedup") cheap.
"""

from __future__ import annotations

import math
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
    seed: int = 0

    def __post_init__(self):
        METHODS.get(self.method)
        PROFILES.get(self.profile)
        check_speedup(self.speedup)
        if not 0.0 <= self.r_min <= 1.0:
            raise HarnessError(f"r_min must be within [0, 1], got {self.r_min:g}")
        if self.protect_first < 0:
            raise HarnessError(f"protect_first must be >= 0, got {self.protect_first}")

    @property
    def schedule(self) -> Schedule:
        return Schedule(self.profile, self.r_min, self.protect_first)

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

    def plan(self, n_valid: torch.Tensor) -> torch.Tensor:
        """(B, L) tokens kept per sample and layer; samples too short for the speedup run at their max."""
        schedule, speedup = self.settings.schedule, self.settings.speedup
        rows, dense, pruned, clamped = [], 0, 0, 0
        for n in n_valid.tolist():
            counts = counts_for_speedup(self.spec, n, speedup, schedule)
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
