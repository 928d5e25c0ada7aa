"""What every family's pruned forward shares: the layer loop, and how a pruned forward is put in place.

``run_stack`` is the one layer loop (BERT's encoder, the decoders, and a T5 encoder next): it asks the
pruner for the plan, runs each layer stock where no sample drops a token, the family's drop layer
where some do (and in every layer once word-vectors carry weights, or where the method decides its
counts inside the layers), skips a layer whose plan keeps 0 (LayerDrop), keeps the attention mask
(and, through ``Family.after_drop``, rotary angles or a bias) right for the packed kept tokens, and
records what each layer kept.  Once word-vectors carry weights (ToMe's merged sizes, LTP's soft
masses), it hands every drop layer a bias with log(weight) on every key (``weighted``), so proportional
attention is the loop's work and no family's.  For a two-pass method (``Method.filter_layer``:
GemFilter) it first runs the selection pass (``select_input``) and then the layers on the selected
tokens.

``install`` is the one way a family puts its pruned forward in place: an instance attribute
``forward`` on one module of the model (BERT: its encoder; decoders: the base model), so the class,
the state-dict keys and ``save_pretrained`` stay stock; plus, where the family names an output head
that reads every row, hooks that run it on the kept rows only.  The module's pruner, family and row
state are attributes of the module, so a deep copy of the model stays consistent.
"""

from __future__ import annotations

import dataclasses
import functools
import types
from collections.abc import Callable

import torch
from torch import nn

from harness.contracts.family import Family, LayerCall, Tokens
from harness.contracts.select import gather_tokens
from harness.pruning.attention import layer_mask, with_weight


def first_tokens(valid: torch.Tensor, pruner) -> Tokens:
    """The tokens entering the first layer: every position, the protected ones marked."""
    positions = torch.arange(valid.shape[1], device=valid.device).expand_as(valid)
    pruner.mark_answers(valid)
    return Tokens(valid, positions, pruner.protected_mask(valid))


def weighted(call: LayerCall, tokens: Tokens) -> LayerCall:
    """``call`` as a drop layer sees it: with log(weight) added to its bias when word-vectors carry
    weights, so a word-vector standing for s tokens is attended as s copies would be, in every family.
    A copy: ``call.bias`` stays the family's own, which ``after_drop`` gathers for the kept tokens."""
    if tokens.weight is None:
        return call
    return dataclasses.replace(call, bias=with_weight(call.bias, tokens.weight))


def run_stack(family: Family, layers, hidden: torch.Tensor, tokens: Tokens, call: LayerCall):
    """Run ``layers`` with pruning; returns ``(hidden, tokens out of the last layer, dropped any)``."""
    pruner = call.pruner
    pruner.training = call.training
    counts = pruner.plan(tokens.valid.sum(dim=1))
    method = pruner.method
    scoring = method.dynamic and (call.training or pruner.settings.speedup > 1)  # the layers decide counts
    dropped = False
    layer = method.filter_layer(pruner.spec)
    if layer is not None and bool((counts[:, 0] < tokens.valid.sum(dim=1)).any()):
        hidden, tokens = select_input(family, layers, hidden, tokens, counts[:, 0], layer, call)
        dropped = True
    pruner.input_valid = tokens.valid
    for index, layer in enumerate(layers):
        keep = counts[:, index]
        single = (
            family.single_token_layer(layer, hidden)
            if (dropped and hidden.shape[1] == 1 and not call.training)
            else None
        )
        if bool(
            (keep == 0).all()
        ):  # the whole layer is skipped (LayerDrop): the word-vectors go on unchanged
            pruner.record(tokens.positions, torch.zeros_like(tokens.valid))  # it processed none
            continue
        elif single is not None:
            hidden = single
        elif bool((keep == tokens.valid.sum(dim=1)).all()) and tokens.weight is None and not scoring:
            hidden = family.run_layer(layer, hidden, call)
        else:
            hidden, tokens = family.drop_layer(layer, hidden, tokens, keep, weighted(call, tokens))
            call.mask = layer_mask(tokens.valid, call.causal, hidden, call.implementation)
            family.after_drop(call, tokens)
            dropped = True
        pruner.record(tokens.positions, tokens.valid)
    if scoring:
        pruner.count_kept()
    return hidden, tokens, dropped


def select_input(
    family: Family,
    layers,
    hidden: torch.Tensor,
    tokens: Tokens,
    keep: torch.Tensor,
    layer: int,
    call: LayerCall,
) -> tuple[torch.Tensor, Tokens]:
    """A two-pass method's selection pass: the input rows of the ``keep[b]`` tokens it selects.

    Layers before ``layer`` run stock on every token, then ``layer``'s drop layer scores and selects
    (the method's ``score``; protected tokens stay).  No KV cache is written: the second pass, on the
    selected embeddings, writes it.  The first layer's tokens are the input in order, so a selected
    token's position is its row in ``hidden``.  ``call``'s mask and per-token inputs (rotary angles)
    are brought to the selected tokens, which keep their original positions.
    """
    cache, call.cache = call.cache, None
    states = hidden
    for stock in layers[:layer]:
        states = family.run_layer(stock, states, call)
    _, selected = family.drop_layer(layers[layer], states, tokens, keep, weighted(call, tokens))
    call.cache = cache
    call.mask = layer_mask(selected.valid, call.causal, hidden, call.implementation)
    family.after_drop(call, selected)
    return gather_tokens(hidden, selected.positions), selected


class Rows:
    """State between a forward and what follows it: where the output rows came from (for the head
    hooks; None when nothing was dropped), and which entries of each layer's KV cache are real tokens."""

    def __init__(self):
        self.kept: tuple[torch.Tensor, torch.Tensor, int] | None = None
        self.active = False
        self.cache_valid: list[torch.Tensor] = []
        self.next_position = 0
        """The position the next decoded token takes: the prompt's length, plus the tokens decoded since."""


def scatter_rows(
    compact: torch.Tensor, positions: torch.Tensor, valid: torch.Tensor, length: int
) -> torch.Tensor:
    """(B, K, D) rows of kept tokens back to their positions in a NaN-filled (B, length, D)."""
    full = compact.new_full((compact.shape[0], length, *compact.shape[2:]), float("nan"))
    batch = torch.arange(compact.shape[0], device=compact.device).unsqueeze(1).expand_as(positions)
    full[batch[valid], positions[valid]] = compact[valid]
    return full


def _compact_head_input(rows: Rows, module, args):
    hidden = args[0]
    rows.active = rows.kept is not None and hidden.shape[1] == rows.kept[2]
    if rows.active:
        positions, _, _ = rows.kept
        return (hidden.gather(1, positions.unsqueeze(-1).expand(-1, -1, hidden.shape[-1])), *args[1:])
    return None


def _scatter_head_output(rows: Rows, module, args, output):
    if rows.active:
        rows.active = False
        positions, valid, length = rows.kept
        return scatter_rows(output, positions, valid, length)
    return None


def install(model: nn.Module, family: Family, pruner, target: nn.Module, forward: Callable) -> None:
    """Make ``forward(target, *args, **kwargs)`` the forward of ``target``, a module of ``model``.

    ``forward`` reads ``self.harness_pruner``, ``self.harness_family`` and ``self.harness_rows``.
    """
    target.harness_pruner, target.harness_family, target.harness_rows = pruner, family, Rows()
    target.forward = types.MethodType(forward, target)
    head = family.output_head(model)
    if head is not None:
        head.register_forward_pre_hook(functools.partial(_compact_head_input, target.harness_rows))
        head.register_forward_hook(functools.partial(_scatter_head_output, target.harness_rows))
