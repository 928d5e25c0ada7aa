"""Fine-tuning with offline tuning, and evaluation, for sentence(-pair) classification tasks.

Offline tuning: every training batch runs at a speedup drawn from ``speedup_range`` (default 1..4;
uniformly, or weighted toward the top where the method asks: ``Method.speedup_draw``), so one
fine-tuned model serves every speedup at inference by ``set_speedup`` alone.
The loop is shared by every recipe: a method that trains its own way (LAT's sandwich rule, LTP's soft
masks, LayerDrop) supplies each step's loss (``Method.train_step``) and any extra parameters, so the
training budget (epochs, examples, batch size, schedule) is the same for every method.
It is the default training recipe (``harness.contracts.method.RECIPES``); a method names its own
recipe (``Method.recipe``) when it trains differently, and registers it there.
Fine-tuned models are cached under ``<HARNESS_CACHE>/finetuned/<key>`` where the key hashes the
checkpoint, the task data's provenance, the method, its recipe and every training setting: a second
sweep at other speedups, or a resumed one, does not retrain, and no two methods share a model.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoTokenizer, get_linear_schedule_with_warmup

from harness.assets.cache import build_once, cache_dir, usable
from harness.contracts.method import OFFLINE_TUNING, RECIPES
from harness.models.catalog import LoadedModel
from harness.pruning.methods import METHODS
from harness.pruning.pruner import ForwardStats
from harness.registry import HarnessError

CACHE_FORMAT = 3
"""Bumped when the meaning of a cached fine-tuned model changes (3: the head is initialised from the seed)."""


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


def fine_tune(loaded: LoadedModel, train_frame, task, settings: TrainSettings, progress: bool = True) -> None:
    """Train ``loaded.model`` (already pruned) in place with per-batch speedup sampling (offline tuning)."""
    model, tokenizer = loaded.model, loaded.tokenizer
    device = next(model.parameters()).device
    rows = encode(tokenizer, train_frame, task.text_fields, settings.max_length)
    labels = _labels(train_frame, task.num_labels).to(device)
    rng = random.Random(settings.seed)
    step_rng = random.Random(settings.seed + 1)  # the method's sub-network draws leave the data order alone
    torch.manual_seed(settings.seed)
    top = min(settings.speedup_range[1], model.max_speedup())
    steps_per_epoch = -(-len(rows) // settings.batch_size)
    total = max(1, int(steps_per_epoch * settings.epochs))
    method = model.pruning_method
    groups = [{"params": list(model.parameters())}, *method.begin_training(model)]
    optimizer = torch.optim.AdamW(groups, lr=settings.learning_rate, weight_decay=settings.weight_decay)
    schedule = get_linear_schedule_with_warmup(optimizer, int(settings.warmup_ratio * total), total)
    model.train()
    order: list[int] = []
    bar = tqdm(range(total), desc=f"fine-tune {task.name}", disable=not progress, unit="step")
    for _ in bar:
        if not order:
            order = list(range(len(rows)))
            rng.shuffle(order)
        batch_ids, order = order[: settings.batch_size], order[settings.batch_size:]
        model.set_speedup(draw_speedup(method.speedup_draw, rng, settings.speedup_range[0], top))
        batch = collate(tokenizer, [rows[i] for i in batch_ids], device)
        loss = method.train_step(model, batch, labels[batch_ids], step_rng)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(groups[0]["params"], 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        bar.set_postfix(loss=f"{loss.item():.3f}")
    method.end_training(model)
    model.eval()
    model.set_speedup(1.0)


RECIPES.register(OFFLINE_TUNING, fine_tune)


def finetune_key(checkpoint: str, task_name: str, provenance: dict, settings: TrainSettings, recipe: str) -> str:
    """The cache key of a fine-tuned model: (checkpoint, task data, method and settings, recipe).

    ``settings.method`` is the method trained for; the default recipe is left out of the hash so that
    models cached before recipes existed (always offline tuning) stay valid."""
    key = {"format": CACHE_FORMAT, "checkpoint": checkpoint, "task": task_name, "data": provenance,
           "train": asdict(settings)}
    if recipe != OFFLINE_TUNING:
        key["recipe"] = recipe
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]


def load_or_fine_tune(loaded: LoadedModel, task_data, settings: TrainSettings, progress: bool = True):
    """The fine-tuned model for (checkpoint, task data, settings), from the cache or trained now.

    Returns ``(LoadedModel, cache_folder, reused)``.  The folder is built once (``build_once``), so an
    interrupted fine-tune never leaves a cache entry that looks complete.  ``how_checked(cache_folder)``
    then says which check stands behind it on this use (sizes and mtimes, every sha256, or built now),
    for the row context.
    """
    import harness

    recipe = METHODS.get(settings.method).recipe
    train = RECIPES.get(recipe)
    key = finetune_key(loaded.checkpoint, task_data.spec.name, task_data.provenance, settings, recipe)
    folder = cache_dir() / "finetuned" / key
    device = next(loaded.model.parameters()).device
    if usable(folder, "fine-tuned model"):  # checked against its manifest; a damaged one is retrained
        model = harness.from_pretrained(str(folder), use_safetensors=True).to(device)
        return replace(loaded, model=model, tokenizer=AutoTokenizer.from_pretrained(folder)), folder, True
    harness.prune(loaded.model, method=settings.method)
    train(loaded, task_data.splits["train"], task_data.spec, settings, progress)

    def save(staging: Path) -> dict:
        loaded.model.save_pretrained(staging)
        loaded.tokenizer.save_pretrained(staging)
        return {"checkpoint": loaded.checkpoint, "task": task_data.spec.name, "recipe": recipe,
                "train": asdict(settings)}

    build_once(folder, save, "fine-tuned model")
    return loaded, folder, False


@torch.no_grad()
def predict(loaded: LoadedModel, frame, task, batch_size: int, max_length: int) -> tuple[np.ndarray, ForwardStats]:
    """Predictions for every row, and the ``ForwardStats`` of their forwards (analytic FLOPs, realised
    speedup, rows too short for the target speedup, which ran at their own maximum).

    Rows are batched by length (less padding, same predictions: selection is per sample).
    """
    model, tokenizer = loaded.model, loaded.tokenizer
    model.eval()
    device = next(model.parameters()).device
    rows = encode(tokenizer, frame, task.text_fields, max_length)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))
    predictions = np.zeros(len(rows), dtype=np.float64)
    stats = ForwardStats()
    for start in range(0, len(order), batch_size):
        ids = order[start : start + batch_size]
        logits = model(**collate(tokenizer, [rows[i] for i in ids], device)).logits
        values = logits[:, 0] if task.num_labels == 1 else logits.argmax(dim=-1)
        predictions[ids] = values.float().cpu().numpy()
        stats = stats + model.last_forward
    return predictions, stats
