"""Where the kept tokens sit: per layer, the relative prompt positions a method keeps in a decoder.

A decoder predicts the next token from the end of its prompt, so a method that keeps mostly early
tokens (causal ACC's pull toward the start, measured on a random-weight Llama: positions 0–7 kept at
40 tokens and 2x) drops the recent context the answer depends on.  ``kept_positions`` runs prompts one
at a time (no padding) through a pruned model and collects, for every layer, the relative position
p/(n−1) of each kept token (0: the first prompt token, 1: the last); ``plot_positions`` draws one
histogram panel per layer, one step line per method, each normalised to the share of kept tokens per
bin, so methods that keep different counts compare.  ``harness positions`` runs both on a task's
prompts (``harness.runners.prompt_suites.build_prompts``) and writes the figure into ``plots/``.

Only the pruned model's public surface is used (``harness.prune``, ``last_kept``).
"""

from __future__ import annotations

import copy
from pathlib import Path

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure

from harness.api import prune
from harness.report.plots import PAPER_STYLE, _legend, _save, _slug

BINS = 10
PANEL_COLUMNS = 6


@torch.no_grad()
def kept_positions(model, prompts: list[list[int]]) -> list[list[float]]:
    """Per layer: the relative positions p/(n−1) of every token kept, over all ``prompts`` (token ids)."""
    device = next(model.parameters()).device
    layers: list[list[float]] = []
    for ids in prompts:
        model(input_ids=torch.tensor([ids], device=device))
        scale = max(len(ids) - 1, 1)
        for index, kept in enumerate(model.last_kept):
            if index == len(layers):
                layers.append([])
            layers[index] += [position / scale for position in kept[0]]
    return layers


def positions_by_method(
    stock, methods: list[str], speedup: float, prompts: list[list[int]]
) -> dict[str, list[list[float]]]:
    """``kept_positions`` of a fresh pruned copy of ``stock`` per method, all at ``speedup``."""
    return {
        method: kept_positions(prune(copy.deepcopy(stock), method=method, speedup=speedup), prompts)
        for method in methods
    }


def histogram(positions: list[float]) -> np.ndarray:
    """Share of the kept tokens in each of ``BINS`` equal bins of relative position (sums to 1)."""
    counts, _ = np.histogram(positions, bins=BINS, range=(0.0, 1.0))
    return counts / max(counts.sum(), 1)


def summary(by_method: dict[str, list[list[float]]]) -> dict[str, dict[str, float]]:
    """Per method, over every layer's kept tokens: their mean relative position, and the shares in the
    first and the last tenth of the prompt (the figure in three numbers)."""
    out = {}
    for method, layers in by_method.items():
        every = np.concatenate([np.asarray(layer) for layer in layers])
        out[method] = {
            "mean": float(every.mean()),
            "first tenth": float((every < 0.1).mean()),
            "last tenth": float((every >= 0.9).mean()),
        }
    return out


def plot_positions(
    by_method: dict[str, list[list[float]]], out_dir: str | Path, title: str, stem: str
) -> list[Path]:
    """One panel per layer: the share of kept tokens per relative-position bin, one step line per method."""
    layers = max(len(layers) for layers in by_method.values())
    rows = -(-layers // PANEL_COLUMNS)
    edges = np.linspace(0.0, 1.0, BINS + 1)
    with matplotlib.rc_context(PAPER_STYLE):
        fig = Figure(
            figsize=(1.5 * min(layers, PANEL_COLUMNS) + 0.4, 1.25 * rows + 0.8), layout="constrained"
        )
        axes = np.atleast_1d(
            fig.subplots(rows, min(layers, PANEL_COLUMNS), sharex=True, sharey=True, squeeze=False)
        ).ravel()
        top = 0.0
        for layer, ax in enumerate(axes):
            if layer >= layers:
                ax.set_visible(False)
                continue
            for method, per_layer in by_method.items():
                if layer < len(per_layer):
                    shares = 100 * histogram(per_layer[layer])
                    ax.stairs(shares, edges, label=method)
                    top = max(top, float(shares.max()))
            ax.set_title(f"layer {layer + 1}", pad=2)
        axes[0].set(
            xlim=(0, 1), ylim=(0, 1.05 * top or 1)
        )  # shared: set once, from every panel's highest bar
        for ax in axes[-PANEL_COLUMNS:]:
            ax.set_xlabel("relative position")
        for ax in axes[::PANEL_COLUMNS]:
            ax.set_ylabel("kept (%)")
        fig.suptitle(title, fontsize=8)
        _legend(fig, axes[0], max_cols=len(by_method))
        return _save(fig, Path(out_dir), _slug(stem))
