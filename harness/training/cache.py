"""The cache of fine-tuned and tuned models: a second sweep at other speedups, or a resumed one, does not
retrain.

Fine-tuned models are cached under ``<HARNESS_CACHE>/finetuned/<key>`` where the key hashes the
checkpoint, the task data's provenance, the method, its recipe and every training setting, so no two
methods share a model.  Training runs the method's recipe (``harness.contracts.method.RECIPES``; every
built-in one is ``harness.training.loop.fine_tune``).  Language models tuned by ``--protocol finetune-lm``
are cached under ``<HARNESS_CACHE>/tuned-lm/<key>``, keyed by the checkpoint, the training examples'
content and every tuning setting.
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
from harness.training.lm import LMTrainSettings, tune_lm
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

    def tune():
        prune(loaded.model, method=settings.method)
        train(loaded, task_data.splits["train"], task_data.spec, settings, progress)
        return loaded.model

    manifest = {"checkpoint": loaded.checkpoint, "task": task_data.spec.name, "recipe": recipe}
    return _cached(
        loaded,
        cache_dir() / "finetuned" / key,
        "fine-tuned model",
        tune,
        {**manifest, "train": asdict(settings)},
    )


LM_CACHE_FORMAT = 2
"""Bumped when the meaning of a cached tuned language model changes (2: batches drawn by the shared loop,
``loop.run_steps``)."""


def load_or_tune_lm(
    loaded: LoadedModel, training, settings: LMTrainSettings, kind: str, progress: bool = True
):
    """The language model tuned under elimination (``lm.tune_lm``) on ``training`` (its examples and
    provenance, ``harness.runners.lm_training.TrainingSet``), from the cache or tuned now; returns
    ``(LoadedModel, cache_folder, reused)`` as ``load_or_fine_tune`` does."""
    key = {
        "format": LM_CACHE_FORMAT,
        "checkpoint": loaded.checkpoint,
        "data": training.provenance,
        "train": asdict(settings),
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]

    def tune():
        prune(loaded.model, method=settings.method)
        return tune_lm(loaded, training.examples, settings, kind, progress)

    return _cached(loaded, cache_dir() / "tuned-lm" / digest, "tuned language model", tune, key)


def _cached(loaded: LoadedModel, folder: Path, what: str, tune, manifest: dict):
    """``loaded`` with the model in ``folder`` (checked against its manifest; a damaged one is rebuilt), or
    with the model ``tune()`` returns, saved there once."""
    device = next(loaded.model.parameters()).device
    if usable(folder, what):
        model = from_pretrained(str(folder), use_safetensors=True).to(device)
        return replace(loaded, model=model, tokenizer=AutoTokenizer.from_pretrained(folder)), folder, True
    model = tune()

    def save(staging: Path) -> dict:
        model.save_pretrained(staging)
        loaded.tokenizer.save_pretrained(staging)
        return manifest

    build_once(folder, save, what)
    return replace(loaded, model=model), folder, False
