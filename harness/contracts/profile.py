"""Elimination profiles: one knob τ sets how many word-vectors every layer keeps.

ACC elimination keeps a falling share of the tokens as depth grows: early layers still mix
information between tokens, late layers mostly refine the few that carry the context.  A profile maps
τ ≥ 0 to a retention ratio r_l per layer l = 1..L (τ = 0 keeps everything, larger τ prunes harder),
and the number of word-vectors layer l keeps for a sample with n valid tokens is

    k_l = min(k_{l-1}, max(protected, ceil(r_l · n)))        (k_0 = n)

Profiles (registered by name so that new ones slot in):

* ``tilt`` (default): r_l = max(r_min, 1 − τ·(l−1)/(L−1)), a straight line from 1 at the first layer
  down to 1 − τ at the last; τ above 1 pushes more layers to the floor r_min.
* ``geometric``: r_l = max(r_min, (1 − τ)^(l−1)) for τ in [0, 1]: each layer keeps the same share of
  the previous layer's tokens.
* ``decay``: r_l = max(r_min, (1 − τ)^l) for τ in [0, 1]: the geometric profile with the first layer
  pruning too, so every layer keeps the same share of the tokens entering it.

``tilt`` and ``geometric`` keep every token after layer 1 (r_1 = 1).  Every layer's attention, the
first one's included, runs on the tokens entering it whatever the profile, so ACC always scores the
whole input first; what r_1 decides is whether layer 1's FFN and layer 2 already run on fewer tokens.
On a 6-layer model that is most of a 4x budget: with layer 1 whole (its FFN and layer 2's projections
and attention on every token), the tilt profile reaches 4x only by keeping [CLS] alone from layer 3
on.  ``decay`` was added by the ACC-recipe study (issue 8): on the same offline-tuned minilm
(rt-polarity, validation split, training seed 0) it kept 74.3% at 4x where tilt kept 57.8%, the
majority class; the README gives the test-split figures.

Why in ``harness.contracts``: a profile is an extension point (register one in ``PROFILES``), and
the schedule the method contract solves (``harness.contracts.flops.Schedule``) is built on it.
A *profile* is the shape of retention over depth; a ``Schedule`` is a profile with its floors, the
plan a method solves τ for.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from harness.registry import Registry

RatioFn = Callable[[float, int, int, float], float]
"""(tau, layer index 1..L, L, r_min) -> retention ratio."""


@dataclass(frozen=True)
class Profile:
    name: str
    ratio: RatioFn
    tau_max: Callable[[int, float], float]
    """The τ beyond which no layer prunes further (every layer but the first at r_min)."""


PROFILES: Registry[Profile] = Registry("profile")


def _tilt(tau: float, layer: int, num_layers: int, r_min: float) -> float:
    if num_layers == 1:
        return 1.0
    return max(r_min, 1.0 - tau * (layer - 1) / (num_layers - 1))


def _geometric(tau: float, layer: int, num_layers: int, r_min: float) -> float:
    return max(r_min, (1.0 - min(tau, 1.0)) ** (layer - 1))


def _decay(tau: float, layer: int, num_layers: int, r_min: float) -> float:
    return _geometric(tau, layer + 1, num_layers, r_min)  # the geometric profile, one layer earlier


PROFILES.register("tilt", Profile("tilt", _tilt, lambda L, r_min: max(L - 1, 0) * (1.0 - r_min)))
PROFILES.register("geometric", Profile("geometric", _geometric, lambda L, r_min: 1.0))
PROFILES.register("decay", Profile("decay", _decay, lambda L, r_min: 1.0))


def retention_ratios(family: str, tau: float, num_layers: int, r_min: float = 0.0) -> list[float]:
    """r_1..r_L of a profile family at τ."""
    ratio = PROFILES.get(family).ratio
    return [ratio(tau, layer, num_layers, r_min) for layer in range(1, num_layers + 1)]


CEIL_TOLERANCE = 1e-9
"""r·n within this of an integer counts as that integer (0.7 · 10 is 7.000000000000001 in floats)."""


def keep_counts(ratios: list[float], n_valid: int, protected: int, min_keep: int = 0) -> list[int]:
    """Word-vectors kept after each layer for one sample of ``n_valid`` tokens.

    Never more than the previous layer kept, never fewer than the protected tokens or ``min_keep``
    (nor than n_valid when the sample is shorter than that floor: it then runs dense).
    ``CEIL_TOLERANCE`` guards ceil against r·n landing a rounding error above an integer.
    """
    counts, previous = [], n_valid
    floor = min(max(protected, min_keep), n_valid)
    for r in ratios:
        k = min(previous, max(floor, math.ceil(r * n_valid - CEIL_TOLERANCE)))
        counts.append(k)
        previous = k
    return counts
