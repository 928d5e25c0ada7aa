"""The offline-tuning loop: every training batch runs at a speedup drawn from ``speedup_range`` (default
1..4; uniformly, or weighted toward the top where the method asks: ``Method.speedup_draw``), so one
fine-tuned model serves every speedup at inference by ``set_speedup`` alone.

The loop is shared by every recipe: a method that trains its own way (LAT's sandwich rule, LTP's soft
masks, LayerDrop) supplies each step's loss (``Method.train_step``) and any extra parameters, so the
training budget (epochs, examples, batch size, schedule) is the same for every method.  It is the default
training recipe (``harness.contracts.method.RECIPES``), and this module registers it under the names of
the methods' own recipes too (``harness.pruning.methods.recipes.STEP_RECIPES``): the methods, below this
layer, name their recipe and never import the loop.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from harness.contracts.method import OFFLINE_TUNING, RECIPES
from harness.models.catalog import LoadedModel
from harness.pruning.methods.recipes import STEP_RECIPES
from harness.registry import HarnessError


@dataclass(frozen=True)
class TrainSettings:
    epochs: float = 2.0
    learning_rate: float = 1e-4
    batch_size: int = 32
    max_length: int = 128
    speedup_range: tuple[float, float] = (1.0, 4.0)
    method: str = "acc"
    warmup_ratio: float = 0.06
    weight_decay: float = 0.01
    seed: int = 0


def encode(tokenizer, frame, text_fields, max_length: int) -> list[dict]:
    """Token ids of every row (no padding: batches pad to their own longest row)."""
    columns = [frame[field].astype(str).tolist() for field in text_fields]
    encoded = tokenizer(*columns, truncation=True, max_length=max_length)
    keys = [key for key in ("input_ids", "token_type_ids", "attention_mask") if key in encoded]
    return [{key: encoded[key][i] for key in keys} for i in range(len(frame))]


def collate(tokenizer, rows: list[dict], device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    return {key: value.to(device) for key, value in tokenizer.pad(rows, return_tensors="pt").items()}


def _labels(frame, num_labels: int) -> torch.Tensor:
    dtype = torch.float32 if num_labels == 1 else torch.long
    return torch.tensor(frame["label"].to_numpy(), dtype=dtype)


def draw_speedup(kind: str, rng: random.Random, low: float, top: float) -> float:
    """One step's speedup (``Method.speedup_draw``).  Both kinds take one draw from ``rng``, so the
    data order is the same whichever the method asks; ``top``'s density grows linearly toward ``top``."""
    if kind == "uniform":
        return rng.uniform(low, top)
    if kind == "top":
        return low + (top - low) * math.sqrt(rng.random())
    raise HarnessError(f"speedup_draw {kind!r} is not one of: uniform, top")


def optimizer_and_schedule(
    groups: list[dict], learning_rate: float, weight_decay: float, warmup: float, total: int
):
    """AdamW over ``groups`` and its linear schedule with ``warmup`` (a share of ``total`` steps): what
    every offline-tuning loop (classifiers here, language models in ``lm.py``) steps."""
    optimizer = torch.optim.AdamW(groups, lr=learning_rate, weight_decay=weight_decay)
    return optimizer, get_linear_schedule_with_warmup(optimizer, int(warmup * total), total)


def run_steps(
    model,
    groups: list[dict],
    settings,
    rows: int,
    total: int,
    draw: Callable[[], float],
    step,
    desc: str,
    progress: bool,
) -> None:
    """The one offline-tuning loop, whatever the objective: ``total`` steps over ``rows`` training rows.

    Each step takes the next ``settings.batch_size`` row indices (reshuffled every pass with
    ``settings``' seeded order), sets the speedup ``draw()`` returns, runs ``step(indices)`` (the
    objective's forward and backward; it returns the loss's value), clips the gradients of
    ``groups[0]`` and steps AdamW and its linear schedule (``optimizer_and_schedule``).  The classifier
    recipes (``fine_tune``) and the generative models' (``lm.tune_lm``) differ only in ``step``."""
    optimizer, schedule = optimizer_and_schedule(
        groups, settings.learning_rate, settings.weight_decay, settings.warmup_ratio, total
    )
    rng, order = random.Random(settings.seed), []
    model.train()
    bar = tqdm(range(total), desc=desc, disable=not progress, unit="step")
    for _ in bar:
        if not order:
            order = list(range(rows))
            rng.shuffle(order)
        batch, order = order[: settings.batch_size], order[settings.batch_size :]
        model.set_speedup(draw(rng))
        loss = step(batch)
        torch.nn.utils.clip_grad_norm_(groups[0]["params"], 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        bar.set_postfix(loss=f"{loss:.3f}", speedup=f"{model.pruning.speedup:.2f}")


def fine_tune(loaded: LoadedModel, train_frame, task, settings: TrainSettings, progress: bool = True) -> None:
    """Train ``loaded.model`` (already pruned) in place with per-batch speedup sampling (offline tuning)."""
    model, tokenizer = loaded.model, loaded.tokenizer
    device = next(model.parameters()).device
    rows = encode(tokenizer, train_frame, task.text_fields, settings.max_length)
    labels = _labels(train_frame, task.num_labels).to(device)
    step_rng = random.Random(settings.seed + 1)  # the method's sub-network draws leave the data order alone
    torch.manual_seed(settings.seed)
    top = min(settings.speedup_range[1], model.max_speedup())
    total = max(1, int(-(-len(rows) // settings.batch_size) * settings.epochs))
    method = model.pruning_method

    def step(batch_ids: list[int]) -> float:
        batch = collate(tokenizer, [rows[i] for i in batch_ids], device)
        loss = method.train_step(model, batch, labels[batch_ids], step_rng)
        loss.backward()
        return loss.item()

    groups = [{"params": list(model.parameters())}, *method.begin_training(model)]
    draw = functools.partial(draw_speedup, method.speedup_draw, low=settings.speedup_range[0], top=top)
    run_steps(model, groups, settings, len(rows), total, draw, step, f"fine-tune {task.name}", progress)
    method.end_training(model)
    model.eval()
    model.set_speedup(1.0)


for _name in (OFFLINE_TUNING, *STEP_RECIPES):  # every recipe is this loop; the method supplies the step
    RECIPES.register(_name, fine_tune)
