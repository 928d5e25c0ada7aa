"""``ltp`` — Learned Token Pruning (after Kim et al., "Learned Token Pruning for Transformers", KDD 2022).

Score: a token's mean attention received (the ACC statistic: mean over heads and valid queries of
P[h, i, j]), times the sample's length n, so that 1 is the share of a token in uniform attention.
Layer l keeps the tokens whose score reaches its threshold θ_l ([CLS] always), so how many survive
depends on the input: lengths vary per sample, and the FLOPs are counted from what the layers really
kept.  The paper thresholds the raw mean, which is about 1/n: one threshold then prunes long inputs
much harder than short ones, and thresholds tuned on the (short) held-out rows would prune the
fixed-length latency batch far more than the evaluation rows, so the measured latency would describe
other pruning than the quality.  Scaled by n, the thresholds mean the same at every length.

Training (recipe ``ltp-soft-masks``): the thresholds are parameters learned with the weights.  Each
layer computes a soft mask m = sigmoid((score − θ_l) / T) (T = ``TEMPERATURE``) and nothing is dropped;
a token's mass is the product of its masks so far, and later layers add log(mass) to its attention
logits, so a token with mask 0 is one that no later token attends to (what dropping it does).  The
paper multiplies the hidden states by the mask instead; in a post-LayerNorm BERT the next LayerNorm
would largely undo that scaling, the attention mass does not.  The loss adds λ · (mean kept share
over layers and tokens) (λ = ``KEPT_PENALTY``), which pushes the thresholds up against the task loss.

Inference: hard masks.  A requested speedup is reached by scaling every threshold by one factor α,
chosen by bisection on the FLOPs of held-out rows (``fit``; the thresholds are floored at a small
depth-increasing value so that scaling can always prune).  α per speedup is stored with the model;
the rows report the speedup actually realised on the evaluation data, which differs from the request
as much as the evaluation rows differ from the held-out ones.
"""

from __future__ import annotations

import copy
import json

import torch

from harness.contracts.family import Tokens
from harness.contracts.flops import ArchSpec, Schedule
from harness.contracts.method import Method, ScoreInputs
from harness.contracts.select import pack_kept
from harness.pruning.methods.acc import acc_scores

TEMPERATURE = 0.2
KEPT_PENALTY = 0.05
THRESHOLD_LR = 2e-3
THRESHOLD_FLOOR = 0.05
"""θ_l is at least THRESHOLD_FLOOR · l / L at inference, so that scaling reaches any speedup."""
BISECTION_STEPS = 14


class Ltp(Method):
    name, needs, recipe, dynamic = "ltp", "attention", "ltp-soft-masks", True
    families, latency_model = ("bert",), False
    description = "LTP: learned per-layer thresholds on mean attention received (soft masks in training)"

    def __init__(self):
        self.pruner = None
        self.theta: torch.nn.Parameter | None = None
        """The thresholds while training."""
        self.trial_scale: float | None = None
        """α under test while ``fit`` bisects."""
        self.kept_shares: list[torch.Tensor] = []

    def bind(self, pruner) -> Ltp:
        bound = copy.copy(self)
        bound.pruner, bound.kept_shares = pruner, []
        return bound

    # --- state ---------------------------------------------------------------------------------------
    def state(self) -> dict:
        text = self.pruner.settings.method_state if self.pruner is not None else ""
        return json.loads(text) if text else {}

    def thresholds(self, layers: int) -> list[float]:
        return self.state().get("thresholds") or [0.0] * layers

    def scale(self) -> float:
        if self.trial_scale is not None:
            return self.trial_scale
        return float(self.state().get("scales", {}).get(f"{self.pruner.settings.speedup:g}", 1.0))

    # --- the layers ----------------------------------------------------------------------------------
    def score(self, inputs: ScoreInputs) -> torch.Tensor:
        return acc_scores(inputs) * inputs.valid.sum(dim=1, keepdim=True)

    def keep_counts(self, spec: ArchSpec, n: int, speedup: float, schedule: Schedule) -> tuple[int, ...]:
        return (n,) * spec.num_layers  # a bound: each layer decides from its thresholds

    def reduce(self, context, hidden, scores, tokens, keep):
        layer, layers = self.pruner.layer_index, self.pruner.spec.num_layers
        if self.pruner.training:
            return self._soft(context, hidden, scores, tokens, layer)
        floor = THRESHOLD_FLOOR * (layer + 1) / layers
        theta = self.scale() * max(self.thresholds(layers)[layer], floor)
        kept = (tokens.valid & (scores >= theta)) | tokens.protected  # BERT protects [CLS]: never empty
        context, residual, state = pack_kept(
            context,
            hidden,
            kept.to(scores.dtype),
            tokens.valid,
            tokens.positions,
            tokens.protected,
            kept.sum(dim=1),
            tokens.weight,
        )
        return context, residual, Tokens(*state)

    def _soft(self, context, hidden, scores, tokens, layer):
        theta = (
            self.theta[layer]
            if self.theta is not None
            else self.thresholds(self.pruner.spec.num_layers)[layer]
        )
        mask = torch.sigmoid((scores - theta) / TEMPERATURE)
        mask = torch.where(tokens.protected | ~tokens.valid, torch.ones_like(mask), mask)
        valid = tokens.valid.to(mask.dtype)
        self.kept_shares.append((mask * valid).sum() / valid.sum())
        weight = mask if tokens.weight is None else tokens.weight * mask
        batch, _, n, _ = context.shape
        return (
            context.transpose(1, 2).reshape(batch, n, -1),
            hidden,
            Tokens(tokens.valid, tokens.positions, tokens.protected, weight),
        )

    # --- training --------------------------------------------------------------------------------------
    def begin_training(self, model) -> list[dict]:
        device = next(model.parameters()).device
        self.theta = torch.nn.Parameter(
            torch.tensor(self.thresholds(model.arch_spec.num_layers), device=device)
        )
        return [{"params": [self.theta], "lr": THRESHOLD_LR, "weight_decay": 0.0}]

    def train_step(self, model, batch, labels, rng=None):
        self.kept_shares = []
        loss = model(**batch, labels=labels).loss
        if self.kept_shares:
            loss = loss + KEPT_PENALTY * torch.stack(self.kept_shares).mean()
        self.kept_shares = []
        return loss

    def end_training(self, model) -> None:
        state = {**self.state(), "thresholds": [float(value) for value in self.theta.detach()]}
        self.pruner.set_method_state(json.dumps(state))
        self.theta = None

    # --- reaching a speedup --------------------------------------------------------------------------
    def fit(self, model, speedups, tuning) -> None:
        """α per requested speedup: bisection (on a log scale) on the held-out rows' realised FLOPs."""
        scales = {}
        original = model.pruning.speedup
        try:
            for speedup in sorted(s for s in speedups if s > 1):
                model.set_speedup(speedup)
                scales[f"{speedup:g}"] = self._bisect(model, speedup, tuning)
        finally:
            self.trial_scale = None
            model.set_speedup(original)
        self.pruner.set_method_state(json.dumps({**self.state(), "scales": scales}))

    def _bisect(self, model, speedup: float, tuning) -> float:
        def realised(scale: float) -> float:
            self.trial_scale = scale
            return tuning.evaluate(model)[1].realised_speedup or 1.0

        lo, hi = 0.0, 1.0
        while realised(hi) < speedup and hi < 1e6:
            lo, hi = hi, hi * 4
        for _ in range(BISECTION_STEPS):
            mid = (lo + hi) / 2
            if realised(mid) >= speedup:
                hi = mid
            else:
                lo = mid
        return hi


METHOD = Ltp()
