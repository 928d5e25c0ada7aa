"""Evaluation of sentence(-pair) classification tasks: ``predict`` runs a (pruned) classifier over a task's
rows.  Training such a classifier is ``harness.training``'s."""

from __future__ import annotations

import numpy as np
import torch

from harness.models.catalog import LoadedModel
from harness.pruning.pruner import ForwardStats
from harness.training.loop import collate, encode


@torch.no_grad()
def predict(
    loaded: LoadedModel, frame, task, batch_size: int, max_length: int
) -> tuple[np.ndarray, ForwardStats]:
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
