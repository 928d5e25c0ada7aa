"""The analytic FLOP model of a pruned forward pass, and the speedup solver built on it.

FLOPs count multiply-adds twice (2·m·n·k for an m×k by k×n product), the convention of
``torch.utils.flop_counter``, so that the measured and the analytic numbers can be compared directly.
For one sample whose layer l sees ``n_in`` word-vectors and keeps ``k`` of them:

* on the tokens entering the layer: the Q, K and V projections, the n_in² attention scores and the
  n_in² context products (context is computed for every entering query: ACC needs the whole
  attention map, and the selection happens after attention);
* on the kept tokens: the attention output projection and the feed-forward network;
* the head: once per sample where it reads one token (BERT's pooler and classifier on [CLS]), or on
  every token out of the last layer (a decoder's LM head: the pruned model computes logits only for
  the tokens it kept).  Embedding lookups do no multiply-adds.

Element-wise work (softmax, LayerNorm, activations) is left out, as the flop counter leaves it out: it
is a few percent of the time and none of the matrix FLOPs.  So is the ACC statistic itself (the
attention each token receives: a 1 × n by n × n product per head, 1/head_dim of the score product);
measured counts include it, about 0.1% above the model.

predicted speedup = FLOPs(dense) / FLOPs(pruned).  ``tau_for_speedup`` inverts it by bisection on
the profile's τ for a given sequence length, since the same speedup needs a different τ for a short
and a long input.

Why in ``harness.contracts``: families describe themselves to it (``Family.arch_spec``) and the method
contract's defaults are built on it (``Method.flops``, ``Method.keep_counts``), so the contracts need it
and it needs nothing above them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from harness.contracts.profile import PROFILES, keep_counts, retention_ratios
from harness.registry import HarnessError


@dataclass(frozen=True)
class ArchSpec:
    """What the FLOP model needs to know of an architecture (hashable, so solutions can be cached)."""

    num_layers: int
    hidden: int
    num_heads: int
    head_dim: int
    ffn_dim: int
    num_kv_heads: int | None = None
    ffn_matrices: int = 2
    """2 for a plain MLP (up, down), 3 for a gated one (gate, up, down)."""
    head_flops: int = 0
    """FLOPs of the head once per sample (BERT's pooler and classifier act on [CLS] alone)."""
    head_per_token: int = 0
    """FLOPs of a head applied to every token out of the last layer (a decoder's LM or score head)."""
    decoder_layers: int = 0
    """An encoder-decoder's decoder layers (0: none).  They run dense on ``decoder_tokens`` tokens and
    cross-attend to the encoder's output, the tokens its last layer kept: pruning the encoder makes
    their cross-attention keys, values and products cheaper."""
    decoder_tokens: int = 0
    """Decoder tokens per sample that the FLOP model counts (1 for a one-step classification)."""

    @property
    def attn_dim(self) -> int:
        return self.num_heads * self.head_dim

    def layer_flops(self, n_in: int, kept: int) -> int:
        kv_dim = (self.num_kv_heads or self.num_heads) * self.head_dim
        qkv = 2 * n_in * self.hidden * (self.attn_dim + 2 * kv_dim)
        attention = 2 * 2 * n_in * n_in * self.attn_dim
        output = 2 * kept * self.attn_dim * self.hidden
        ffn = 2 * kept * self.hidden * self.ffn_dim * self.ffn_matrices
        return qkv + attention + output + ffn

    def decoder_flops(self, encoder_out: int) -> int:
        """The decoder stack's FLOPs for one sample whose encoder output has ``encoder_out`` tokens."""
        m = self.decoder_tokens
        if not self.decoder_layers or not m:
            return 0
        kv_dim = (self.num_kv_heads or self.num_heads) * self.head_dim
        cross = (
            2 * m * self.hidden * self.attn_dim
            + 2 * encoder_out * self.hidden * 2 * kv_dim
            + 2 * 2 * m * encoder_out * self.attn_dim
            + 2 * m * self.attn_dim * self.hidden
        )
        return self.decoder_layers * (self.layer_flops(m, m) + cross)


class UnreachableSpeedupError(HarnessError):
    """A requested speedup beyond what the protected tokens and r_min allow."""


SPEEDUP_TOLERANCE = 1e-9
"""How far below a target a predicted speedup may fall and still count as reaching it: the solver's
bisection and the FLOP ratio are float arithmetic, so an exact target lands a rounding error short."""


def check_speedup(value) -> float:
    """A speedup as a float >= 1, or a HarnessError saying what was wrong.  The one validation of a
    speedup value; everything else receives the float it returns."""
    try:
        speedup = float(value)
    except (TypeError, ValueError):
        raise HarnessError(f"speedup must be a number >= 1, got {value!r}") from None
    if not math.isfinite(speedup) or speedup < 1:
        raise HarnessError(f"speedup must be a number >= 1, got {value!r}")
    return speedup


def reaches(achieved: float, target: float) -> bool:
    """The one rule for whether a speedup reaches a target (within ``SPEEDUP_TOLERANCE``)."""
    return achieved >= target - SPEEDUP_TOLERANCE


def forward_flops(spec: ArchSpec, n: int, counts: list[int] | None = None) -> int:
    """FLOPs of one sample's forward pass; ``counts`` are the tokens kept per layer (None: dense)."""
    counts = counts if counts is not None else [n] * spec.num_layers
    out = counts[-1] if counts else n
    total, n_in = spec.head_flops + spec.head_per_token * out + spec.decoder_flops(out), n
    for kept in counts:
        total += spec.layer_flops(n_in, kept)
        n_in = kept
    return total


@dataclass(frozen=True)
class Schedule:
    """How hard to prune: a profile family, its floors (r_min as a share, min_keep in tokens) and the
    protected-token count."""

    profile: str = "tilt"
    r_min: float = 0.0
    protected: int = 1
    min_keep: int = 0

    def counts(self, spec: ArchSpec, n: int, tau: float) -> list[int]:
        ratios = retention_ratios(self.profile, tau, spec.num_layers, self.r_min)
        return keep_counts(ratios, n, self.protected, self.min_keep)

    def tau_max(self, spec: ArchSpec) -> float:
        return PROFILES.get(self.profile).tau_max(spec.num_layers, self.r_min)


def predicted_speedup(spec: ArchSpec, n: int, schedule: Schedule, tau: float) -> float:
    """FLOPs(dense) / FLOPs(pruned) for one sample of n tokens at profile knob τ."""
    return forward_flops(spec, n) / forward_flops(spec, n, schedule.counts(spec, n, tau))


def max_speedup(spec: ArchSpec, n: int, schedule: Schedule) -> float:
    """The largest speedup the schedule can reach at sequence length n."""
    return predicted_speedup(spec, n, schedule, schedule.tau_max(spec))


def require_reachable(spec: ArchSpec, n: int, schedule: Schedule, speedup: float, where: str) -> None:
    """Raise UnreachableSpeedupError, naming the largest reachable value, unless a sample of ``n``
    tokens can reach ``speedup``; ``where`` says which model and length, for the message."""
    best = max_speedup(spec, n, schedule)
    if not reaches(best, speedup):
        raise UnreachableSpeedupError(
            f"speedup {speedup:g} is unreachable {where}; the largest reachable speedup is {best:.3f}"
        )


@lru_cache(maxsize=4096)
def tau_for_speedup(spec: ArchSpec, n: int, speedup: float, schedule: Schedule = Schedule()) -> float:
    """The smallest τ whose predicted speedup at length n is at least ``speedup``.

    Predicted speedup grows with τ in steps (token counts are integers), so bisection converges on the
    left edge of the step that first reaches the target.  Raises UnreachableSpeedupError naming the
    largest reachable value.
    """
    speedup = check_speedup(speedup)
    if speedup == 1:
        return 0.0
    require_reachable(
        spec,
        n,
        schedule,
        speedup,
        f"at {n} tokens with {spec.num_layers} layers (profile {schedule.profile}, r_min "
        f"{schedule.r_min:g}, min_keep {schedule.min_keep}, {schedule.protected} protected token(s))",
    )
    lo, hi = 0.0, schedule.tau_max(spec)
    for _ in range(60):
        mid = (lo + hi) / 2
        if reaches(predicted_speedup(spec, n, schedule, mid), speedup):
            hi = mid
        else:
            lo = mid
    return hi


@lru_cache(maxsize=4096)
def counts_for_speedup(
    spec: ArchSpec, n: int, speedup: float, schedule: Schedule = Schedule()
) -> tuple[int, ...]:
    """Tokens kept per layer for one sample of n tokens at ``speedup``, clamped to the reachable maximum.

    The model calls this per sample: a short input may not reach a speedup a long one does, and then
    it runs at its own maximum rather than failing the batch (the realised speedup is reported).
    """
    try:
        tau = tau_for_speedup(spec, n, speedup, schedule)
    except UnreachableSpeedupError:
        tau = schedule.tau_max(spec)
    return tuple(schedule.counts(spec, n, tau))
