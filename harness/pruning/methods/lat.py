"""``lat`` — Length-Adaptive Transformer (after Kim & Cho, "Length-Adaptive Transformer: Train Once with
Length Drop, Use Anytime with Search", ACL 2021).

Score: the attention a token receives, summed over heads and queries, its own included:

    LAT(j) = sum over heads h and valid queries i of P[h, i, j]

(in an encoder it ranks tokens as ACC does: the two differ in training and in the lengths.)

Lengths: a *length configuration* is one share c_l per layer (non-increasing), and layer l keeps
k_l = max(protected, ceil(c_l · n)) of a sample's n tokens (never more than the layer before).

Training (recipe ``lat-sandwich``): LengthDrop with the sandwich rule.  Every step runs the full model
(every c_l = 1) on the labels, then the smallest sub-model (each layer keeps 80% of the previous one)
and two random sub-models (each layer's share drawn from [0.8, 1] of the previous layer's, as LAT
draws lengths from [ceil(0.8·n_{l-1}), n_{l-1}]); the sub-models learn from the full model's output
distribution (distillation: soft cross-entropy, or squared error for regression), and the four losses
are summed.  The paper also applies LayerDrop while training; we do not.

Inference: a configuration per requested speedup, chosen by an evolutionary search on held-out rows
(``fit``): a population seeded from the shared profile at a spread of speedups, grown by mutation and
crossover for ``search`` generations from the current Pareto front of (quality, speedup); for each
request, the best-quality configuration on the final front whose FLOP speedup reaches it.  The paper's
search is larger (more generations and candidates); ours is sized for minutes on a CPU.  With
``--search 0`` the shared profile gives the lengths, as for ACC.
"""

from __future__ import annotations

import copy
import json
import math
import random
from typing import Callable

import torch

from harness.contracts.method import Method, ScoreInputs
from harness.pruning.flops import (ArchSpec, Schedule, UnreachableSpeedupError, counts_for_speedup, forward_flops,
                                   reaches, tau_for_speedup)
from harness.pruning.methods import recipes  # noqa: F401  (registers the recipe)
from harness.pruning.profile import keep_counts, retention_ratios

LENGTH_DROP = 0.8
RANDOM_SUBMODELS = 2
POPULATION = 8
MUTATION_SIGMA = 0.25

Config = tuple[float, ...]


def lat_scores(inputs: ScoreInputs) -> torch.Tensor:
    """sum_h sum_{valid i} P[h, i, j]."""
    return inputs.heads_received().sum(dim=1)


def config_counts(config, n: int, schedule: Schedule) -> list[int]:
    """Tokens each layer keeps of a sample of ``n`` tokens under a length configuration."""
    return keep_counts(list(config), n, schedule.protected, schedule.min_keep)


def length_drop(layers: int, rng: random.Random) -> Config:
    """A LengthDrop sub-model: each layer keeps a share in [0.8, 1] of the previous layer's."""
    shares, share = [], 1.0
    for _ in range(layers):
        share *= rng.uniform(LENGTH_DROP, 1.0)
        shares.append(share)
    return tuple(shares)


def pareto_front(candidates: dict[Config, tuple[float, float]]) -> list[Config]:
    """The configurations no other candidate beats on both quality and speedup (ties kept)."""
    front = []
    for config, (quality, speedup) in candidates.items():
        dominated = any(q >= quality and s >= speedup and (q > quality or s > speedup)
                        for other, (q, s) in candidates.items() if other != config)
        if not dominated:
            front.append(config)
    return sorted(front, key=lambda config: candidates[config][1])


def _tidy(config) -> Config:
    """Shares within (0, 1], non-increasing, rounded (so that equal configurations are one candidate)."""
    out, previous = [], 1.0
    for share in config:
        previous = min(previous, max(0.01, min(1.0, share)))
        out.append(round(previous, 3))
    return tuple(out)


def mutate(config: Config, rng: random.Random) -> Config:
    return _tidy(share * math.exp(rng.gauss(0.0, MUTATION_SIGMA)) if rng.random() < 0.5 else share
                 for share in config)


def crossover(a: Config, b: Config, rng: random.Random) -> Config:
    return _tidy(x if rng.random() < 0.5 else y for x, y in zip(a, b))


def evolutionary_search(evaluate: Callable[[Config], float], speedup_of: Callable[[Config], float],
                        initial: list[Config], generations: int, rng: random.Random,
                        population: int = POPULATION):
    """LAT's search: returns ``(front, candidates)``, the Pareto front of (quality, speedup) over every
    evaluated configuration and all of them as ``{config: (quality, speedup)}``."""
    candidates: dict[Config, tuple[float, float]] = {}

    def add(config: Config) -> None:
        if config not in candidates:
            candidates[config] = (evaluate(config), speedup_of(config))

    for config in initial:
        add(_tidy(config))
    for _ in range(generations):
        parents = pareto_front(candidates)
        for _ in range(population):
            if len(parents) > 1 and rng.random() < 0.5:
                add(crossover(rng.choice(parents), rng.choice(parents), rng))
            else:
                add(mutate(rng.choice(parents), rng))
    return pareto_front(candidates), candidates


def pick(front: list[Config], candidates: dict, speedup: float) -> Config:
    """The best-quality front configuration reaching ``speedup``; the fastest one if none does."""
    reaching = [config for config in front if reaches(candidates[config][1], speedup)]
    if not reaching:
        return max(front, key=lambda config: candidates[config][1])
    return max(reaching, key=lambda config: (candidates[config][0], -candidates[config][1]))


class Lat(Method):
    name, needs, recipe, latency_model = "lat", "attention", "lat-sandwich", False
    description = "Length-Adaptive Transformer: summed attention received, LengthDrop + sandwich, searched lengths"

    def __init__(self):
        self.pruner = None
        self.override: Config | None = None
        """The configuration of the forward now running (a training sub-model, a search candidate)."""

    def bind(self, pruner) -> "Lat":
        bound = copy.copy(self)
        bound.pruner = pruner
        return bound

    def configs(self) -> dict[str, list[float]]:
        text = self.pruner.settings.method_state if self.pruner is not None else ""
        return json.loads(text).get("configs", {}) if text else {}

    def score(self, inputs: ScoreInputs) -> torch.Tensor:
        return lat_scores(inputs)

    def keep_counts(self, spec: ArchSpec, n: int, speedup: float, schedule: Schedule) -> tuple[int, ...]:
        if self.override is not None:
            return tuple(config_counts(self.override, n, schedule))
        if speedup > 1 and (config := self.configs().get(f"{speedup:g}")) is not None:
            return tuple(config_counts(config, n, schedule))
        return counts_for_speedup(spec, n, speedup, schedule)

    # --- training: LengthDrop with the sandwich rule ---------------------------------------------------
    def train_step(self, model, batch, labels, rng=None):
        rng = rng or random.Random(0)
        layers = model.arch_spec.num_layers
        try:
            self.override = (1.0,) * layers
            full = model(**batch, labels=labels)
            teacher = full.logits.detach()
            loss = full.loss
            smallest = tuple(LENGTH_DROP ** (layer + 1) for layer in range(layers))
            for config in (smallest, *(length_drop(layers, rng) for _ in range(RANDOM_SUBMODELS))):
                self.override = config
                loss = loss + distillation(model(**batch).logits, teacher)
        finally:
            self.override = None
        return loss

    # --- inference: the searched length configurations --------------------------------------------------
    def fit(self, model, speedups, tuning) -> None:
        targets = sorted(s for s in speedups if s > 1)
        if not targets or tuning.search <= 0:
            self.pruner.set_method_state("")
            return
        spec, schedule = self.pruner.spec, self.pruner.settings.schedule
        full = sum(forward_flops(spec, n) for n in tuning.lengths)

        def speedup_of(config: Config) -> float:
            return full / sum(forward_flops(spec, n, config_counts(config, n, schedule)) for n in tuning.lengths)

        def evaluate(config: Config) -> float:
            self.override = config
            try:
                return tuning.evaluate(model)[0]
            finally:
                self.override = None

        typical = sorted(tuning.lengths)[len(tuning.lengths) // 2]
        initial = [tuple(profile_shares(spec, typical, s, schedule))
                   for s in _spread(1.0, targets[-1] + 0.5, POPULATION)]
        front, candidates = evolutionary_search(evaluate, speedup_of, initial, tuning.search,
                                                random.Random(tuning.seed))
        chosen = {f"{s:g}": pick(front, candidates, s) for s in targets}
        state = {"configs": {key: list(config) for key, config in chosen.items()},
                 "tuning": {key: list(candidates[config]) for key, config in chosen.items()}}
        self.pruner.set_method_state(json.dumps(state))


def distillation(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """The sandwich rule's sub-model loss: soft cross-entropy to the full model (squared error for one output)."""
    if student.shape[-1] == 1:
        return torch.nn.functional.mse_loss(student, teacher)
    return -(teacher.softmax(dim=-1) * student.log_softmax(dim=-1)).sum(dim=-1).mean()


def profile_shares(spec: ArchSpec, n: int, speedup: float, schedule: Schedule) -> list[float]:
    """The shared profile's retention ratios at ``speedup`` for ``n`` tokens (the search's seeds)."""
    try:
        tau = tau_for_speedup(spec, n, speedup, schedule)
    except UnreachableSpeedupError:
        tau = schedule.tau_max(spec)
    return retention_ratios(schedule.profile, tau, spec.num_layers, schedule.r_min)


def _spread(lo: float, hi: float, count: int) -> list[float]:
    return [lo + (hi - lo) * i / (count - 1) for i in range(count)]
