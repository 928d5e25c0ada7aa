"""ACC elimination for decoder-only models: what GPT-2 and Llama share.

A family adapter (``gpt2.py``, ``llama.py``) supplies its embeddings, its stock layer call and its
"drop layer" (a layer that keeps ``keep[b]`` tokens of sample b after its causal self-attention);
``pruned_forward`` runs the layer loop, and ``install`` puts it in place of the base model's forward
(instance attribute: the class, the state-dict keys and ``save_pretrained`` stay stock).

Conventions, chosen for what lm-eval and generation need:

* Causal ACC: the mean runs over the valid queries that can see a token (``methods.acc_scores``).
* The last valid token of every sample is protected (``protect_last=1``): its logits predict the next
  token and pool the classification.  lm-eval continuations protect more (``Pruner.protect_tail``).
  The first token, the "attention sink", is protected by default too (``protect_first=1``; measured,
  see ``GPT2Family.default_options``).
* Only the context is pruned; kept tokens keep their order, so causality among them is the lower
  triangle of their packed order, and they keep their original positions (GPT-2 adds its position
  embeddings before layer 1; Llama's rotary angles are gathered for the kept tokens).
* Outputs keep the input's length: rows of dropped tokens are NaN, never computed.  The output head
  (LM head or score head) runs on the kept rows only, through hooks on that module, so the big LM head
  costs what the FLOP model says and gradients never meet a NaN row.
* Generation prunes the prefill only: each layer's KV cache holds the tokens that entered that layer
  (its kept context), and decoding steps attend them with a per-layer mask and drop nothing.
"""

from __future__ import annotations

import types

import torch
from torch import nn
from transformers import DynamicCache

from harness.models import compat
from harness.pruning.attention import allowed_keys, attend_and_score, for_implementation
from harness.pruning.pruner import Pruner


def layer_mask(valid: torch.Tensor, like: torch.Tensor, implementation: str) -> torch.Tensor:
    """The 4-D causal mask a stock decoder layer expects for packed kept tokens."""
    return for_implementation(allowed_keys(valid, causal=True), like, implementation)


def scatter_rows(compact: torch.Tensor, positions: torch.Tensor, valid: torch.Tensor, length: int) -> torch.Tensor:
    """(B, K, D) rows of kept tokens back to their positions in a NaN-filled (B, length, D)."""
    full = compact.new_full((compact.shape[0], length, *compact.shape[2:]), float("nan"))
    batch = torch.arange(compact.shape[0], device=compact.device).unsqueeze(1).expand_as(positions)
    full[batch[valid], positions[valid]] = compact[valid]
    return full


class Rows:
    """State between a forward and what follows it: where the output rows came from (for the head
    hooks; None when nothing was dropped), and which entries of each layer's KV cache are real tokens."""

    def __init__(self):
        self.kept: tuple[torch.Tensor, torch.Tensor, int] | None = None
        self.active = False
        self.cache_valid: list[torch.Tensor] = []


def pruned_forward(base, family, pruner: Pruner, rows: Rows, input_ids=None, attention_mask=None,
                   position_ids=None, inputs_embeds=None, use_cache=None, **kwargs):
    """The base model's forward with ACC elimination (see the module docstring).

    The KV cache arrives under whichever keyword the caller used (``compat.pop_cache``).
    """
    rows.kept = None
    cache = compat.pop_cache(kwargs)
    if use_cache and cache is None:
        cache = DynamicCache(config=base.config)
    if cache is not None and cache.get_seq_length() > 0:
        return decode(base, family, rows, cache, input_ids, inputs_embeds, position_ids, kwargs)
    hidden, position_ids = family.embed(base, input_ids, inputs_embeds, position_ids, kwargs)
    batch, length = hidden.shape[:2]
    valid = (attention_mask.bool() if attention_mask is not None
             else torch.ones(batch, length, dtype=torch.bool, device=hidden.device))
    mask = family.stock_mask(base, hidden, attention_mask, position_ids)
    rotary = original_rotary = family.rotary(base, hidden, position_ids)
    counts = pruner.plan(valid.sum(dim=1))
    positions = torch.arange(length, device=hidden.device).expand(batch, length)
    protected = pruner.protected_mask(valid)
    dropped, rows.cache_valid = False, []
    for index, layer in enumerate(family.layers(base)):
        keep = counts[:, index]
        rows.cache_valid.append(valid)  # the cache of layer `index` holds the tokens entering it
        if bool((keep == valid.sum(dim=1)).all()):
            hidden = family.run_layer(layer, hidden, mask, rotary, cache)
        else:
            hidden, (valid, positions, protected) = family.drop_layer(
                layer, hidden, valid, positions, protected, keep, rotary, pruner, cache)
            mask = layer_mask(valid, hidden, base.config._attn_implementation)
            rotary = family.gather_rotary(original_rotary, positions)
            dropped = True
        pruner.record(positions, valid)
    hidden = family.final_norm(base)(hidden)
    if dropped:
        rows.kept = (positions, valid, length)
        hidden = scatter_rows(hidden, positions, valid, length)
    return family.output_class(last_hidden_state=hidden, **compat.output_cache_kwargs(cache))


def decode(base, family, rows: Rows, cache, input_ids, inputs_embeds, position_ids, kwargs):
    """A step after a (pruned) prefill: new tokens attend each layer's cached kept tokens.

    Nothing is dropped while decoding.  The cache of each layer holds a different number of tokens, so
    every layer gets its own mask: the real tokens of its cache, then the new tokens causally.  A
    single new token over a cache without padding (batch 1, or equal lengths) needs no mask at all,
    and without one the stock attention takes its fast unmasked kernel, as it does in stock decoding.
    Positions continue from the original prompt length (the first layer keeps every token).
    """
    hidden, position_ids = family.embed(base, input_ids, inputs_embeds, position_ids, kwargs,
                                        past=cache.get_seq_length(0))
    batch, new = hidden.shape[:2]
    rotary = family.rotary(base, hidden, position_ids)
    fresh = torch.ones(batch, new, dtype=torch.bool, device=hidden.device)
    causal = torch.ones(new, new, dtype=torch.bool, device=hidden.device).tril()
    for index, layer in enumerate(family.layers(base)):
        cached = rows.cache_valid[index]
        if new == 1 and bool(cached.all()):
            mask = None
        else:
            keys = torch.cat([cached[:, None, None, :].expand(-1, 1, new, -1), causal.expand(batch, 1, -1, -1)], dim=-1)
            mask = for_implementation(keys, hidden, base.config._attn_implementation)
        hidden = family.run_layer(layer, hidden, mask, rotary, cache)
        rows.cache_valid[index] = torch.cat([cached, fresh], dim=1)
    return family.output_class(last_hidden_state=family.final_norm(base)(hidden), **compat.output_cache_kwargs(cache))


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


def install(model: nn.Module, family, pruner: Pruner) -> None:
    """Route the base model's forward through ``pruned_forward`` and its output head through the kept rows."""
    base, rows = model.base_model, Rows()

    def forward(self, *args, **kwargs):
        return pruned_forward(self, family, pruner, rows, *args, **kwargs)

    base.forward = types.MethodType(forward, base)
    head = family.output_head(model)
    if head is not None:
        head.register_forward_pre_hook(lambda module, args: _compact_head_input(rows, module, args))
        head.register_forward_hook(lambda module, args, output: _scatter_head_output(rows, module, args, output))


def default_positions(embeds: torch.Tensor, past: int = 0) -> torch.Tensor:
    """Positions past..past+n-1, as stock transformers uses when none are given."""
    return torch.arange(past, past + embeds.shape[1], device=embeds.device).unsqueeze(0)


def attend(module: nn.Module, query, key, value, valid, positions, pruner: Pruner, *, dropout: float):
    """Causal attention over the entering tokens, with each token's score for the pruning method."""
    return attend_and_score(query, key, value, valid, positions, pruner.method, scaling=module.scaling,
                            dropout=dropout if module.training else 0.0, generator=pruner.generator, causal=True)

