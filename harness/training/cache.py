"""The cache of fine-tuned models: a second sweep at other speedups, or a resumed one, does not retrain.

Fine-tuned models are cached under ``<HARNESS_CACHE>/finetuned/<key>`` where the key hashes the
checkpoint, the task data's provenance, the method, its recipe and every training setting, so no two
methods share a model.  Training runs the method's recipe (``harness.contracts.method.RECIPES``; every
built-in one is ``harness.training.loop.fine_tune``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, replace
from pathlib import Path

from transformers import AutoTokenizer

from harness.api import from_pretrained, prune
from harness.assets.cache import build_once, cache_dir, usable
from harness.contracts.method import OFFLINE_TUNING, RECIPES
from harness.models.catalog import LoadedModel
from harness.pruning.methods import METHODS
from harness.training.loop import TrainSettings

CACHE_FORMAT = 3
"""Bumped when the meaning of a cached fine-tuned model changes (3: the head is initialised from the seed)."""


def finetune_key(
    checkpoint: str, task_name: str, provenance: dict, settings: TrainSettings, recipe: str
) -> str:
    """The cache key of a fine-tuned model: (checkpoint, task data, method and settings, recipe).

    ``settings.method`` is the method trained for; the default recipe is left out of the hash so that
    models cached before recipes existed (always offline tuning) stay valid."""
    key = {
        "format": CACHE_FORMAT,
        "checkpoint": checkpoint,
        "task": task_name,
        "data": provenance,
        "train": asdict(settings),
    }
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
    recipe = METHODS.get(settings.method).recipe
    train = RECIPES.get(recipe)
    key = finetune_key(loaded.checkpoint, task_data.spec.name, task_data.provenance, settings, recipe)
    folder = cache_dir() / "finetuned" / key
    device = next(loaded.model.parameters()).device
    if usable(folder, "fine-tuned model"):  # checked against its manifest; a damaged one is retrained
        model = from_pretrained(str(folder), use_safetensors=True).to(device)
        return replace(loaded, model=model, tokenizer=AutoTokenizer.from_pretrained(folder)), folder, True
    prune(loaded.model, method=settings.method)
    train(loaded, task_data.splits["train"], task_data.spec, settings, progress)

    def save(staging: Path) -> dict:
        loaded.model.save_pretrained(staging)
        loaded.tokenizer.save_pretrained(staging)
        return {
            "checkpoint": loaded.checkpoint,
            "task": task_data.spec.name,
            "recipe": recipe,
            "train": asdict(settings),
        }

    build_once(folder, save, "fine-tuned model")
    return loaded, folder, False
