"""ACC elimination for decoder-only models: what every decoder family shares.

A decoder family subclasses ``Decoder`` (GPT-2) or ``RotaryDecoder`` (the Llama layout: Llama, Qwen2)
and supplies the hooks of ``harness.contracts.family.DecoderFamily`` (``embed``, ``rotary``,
``final_norm``, ``output_class``, the KV cache's ``new_cache`` and ``write_cache``) with its layers'
``run_layer`` and ``drop_layer``; ``RotaryDecoder`` supplies them all for its layout, so such a family
names only its classes and what it refuses.  ``pruned_forward`` runs the shared layer loop
(``stack.run_stack``), and ``install`` puts it in place of the base model's forward (``stack.install``:
the class, the state-dict keys and ``save_pretrained`` stay stock).

Conventions, chosen for what lm-eval and generation need:

* Causal ACC: the mean runs over the valid queries that can see a token (``methods.acc_scores``).
* The last valid token of every sample is protected (``protect_last=1``): its logits predict the next
  token and pool the classification.  lm-eval continuations protect more (``Pruner.protect_tail``).
  The first token, the "attention sink", is protected by default too (``protect_first=1``; measured,
  see ``DECODER_OPTIONS``).
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

import torch
from torch import nn
from transformers.masking_utils import create_causal_mask
from transformers.modeling_outputs import BaseModelOutputWithPast
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, repeat_kv

from harness.contracts.family import DecoderFamily, LayerCall, Tokens
from harness.contracts.flops import ArchSpec
from harness.contracts.select import gather_tokens
from harness.models import compat, stack
from harness.pruning.attention import attend_and_score, for_implementation

DECODER_OPTIONS = {"protect_first": 1, "protect_last": 1, "min_keep": 16}
"""The last token's logits are the output; the first token is the "attention sink" most heads park
their attention on.  Measured on smollm2 (bench/README.md): protecting it changes nothing at speedup 1
and cuts held-out perplexity at 4x from 2355 to 151 (at 2x from 93 to 74), with zero-shot accuracy
within its standard error, so it is on by default (``protect_first=0`` turns it off).

``min_keep=16``: no layer keeps fewer than 16 tokens, so a prompt of at most 16 tokens runs dense.
Without the floor, a 12-token question at speedup 2 reached the last layers as its first and last
token alone, and smollm2 answered "Question: What is the capital of France?\nAnswer:" with a newline
(an empty lm-eval answer) and "...France is" with " New York City"; with it, both match stock.  A
prefill that short is weight-bound, so pruning it saved FLOPs and no time.  Long prompts lose
little: 16 of 1,024 tokens is the last layers' floor instead of 2."""


def lm_head_flops(model: nn.Module, hidden: int) -> int:
    """FLOPs per token of a decoder's output head (LM or score head; 0 for a bare base model)."""
    return 2 * hidden * getattr(output_head(model), "out_features", 0)


def output_head(model: nn.Module) -> nn.Module | None:
    """The head that reads every output row: the LM head or a classifier's score head."""
    return getattr(model, "lm_head", None) or getattr(model, "score", None)


def stock_mask(base, hidden, attention_mask, position_ids):
    """The causal mask the stock layers take for the whole input."""
    return create_causal_mask(
        config=base.config,
        inputs_embeds=hidden,
        attention_mask=attention_mask,
        position_ids=position_ids,
        **compat.cache_kwargs(None),
    )


def pruned_forward(
    base, input_ids=None, attention_mask=None, position_ids=None, inputs_embeds=None, use_cache=None, **kwargs
):
    """The base model's forward with ACC elimination (see the module docstring).

    The KV cache arrives under whichever keyword the caller used (``compat.pop_cache``).
    """
    family, pruner, rows = base.harness_family, base.harness_pruner, base.harness_rows
    rows.kept = None
    cache = compat.pop_cache(kwargs)
    if use_cache and cache is None:
        cache = family.new_cache(base)
    if cache is not None and cache.get_seq_length() > 0:
        return decode(base, family, rows, cache, input_ids, inputs_embeds, position_ids, kwargs)
    hidden, position_ids = family.embed(base, input_ids, inputs_embeds, position_ids, kwargs)
    batch, length = hidden.shape[:2]
    valid = (
        attention_mask.bool()
        if attention_mask is not None
        else torch.ones(batch, length, dtype=torch.bool, device=hidden.device)
    )
    rotary = family.rotary(base, hidden, position_ids)
    call = LayerCall(
        pruner,
        causal=True,
        implementation=base.config._attn_implementation,
        training=base.training,
        mask=stock_mask(base, hidden, attention_mask, position_ids),
        rotary=rotary,
        original_rotary=rotary,
        cache=cache,
    )
    hidden, tokens, dropped = stack.run_stack(
        family, family.stacks(base)["decoder"], hidden, stack.first_tokens(valid, pruner), call
    )
    # the cache of layer i holds the tokens that entered it: the input, then what layer i-1 kept
    rows.cache_valid = [pruner.input_valid, *(kept for _, kept in pruner.last_positions[:-1])]
    rows.next_position = length
    hidden = family.final_norm(base)(hidden)
    if dropped:
        rows.kept = (tokens.positions, tokens.valid, length)
        hidden = stack.scatter_rows(hidden, tokens.positions, tokens.valid, length)
    return family.output_class(last_hidden_state=hidden, **compat.output_cache_kwargs(cache))


def decode(base, family, rows: stack.Rows, cache, input_ids, inputs_embeds, position_ids, kwargs):
    """A step after a (pruned) prefill: new tokens attend each layer's cached kept tokens.

    Nothing is dropped while decoding.  The cache of each layer holds a different number of tokens, so
    every layer gets its own mask: the real tokens of its cache, then the new tokens causally.  A
    single new token over a cache without padding (batch 1, or equal lengths) needs no mask at all,
    and without one the stock attention takes its fast unmasked kernel, as it does in stock decoding.
    Positions continue from the original prompt length (``rows.next_position``: a two-pass method's
    first layer caches only its selection, so the cache's length is not the prompt's).
    """
    hidden, position_ids = family.embed(
        base, input_ids, inputs_embeds, position_ids, kwargs, past=rows.next_position
    )
    batch, new = hidden.shape[:2]
    rows.next_position += new
    rotary = family.rotary(base, hidden, position_ids)
    fresh = torch.ones(batch, new, dtype=torch.bool, device=hidden.device)
    causal = torch.ones(new, new, dtype=torch.bool, device=hidden.device).tril()
    call = LayerCall(
        None, causal=True, implementation=base.config._attn_implementation, rotary=rotary, cache=cache
    )
    for index, layer in enumerate(family.stacks(base)["decoder"]):
        cached = rows.cache_valid[index]
        if new == 1 and bool(cached.all()):
            call.mask = None
        else:
            keys = torch.cat(
                [cached[:, None, None, :].expand(-1, 1, new, -1), causal.expand(batch, 1, -1, -1)], dim=-1
            )
            call.mask = for_implementation(keys, hidden, base.config._attn_implementation)
        hidden = family.run_layer(layer, hidden, call)
        rows.cache_valid[index] = torch.cat([cached, fresh], dim=1)
    return family.output_class(
        last_hidden_state=family.final_norm(base)(hidden), **compat.output_cache_kwargs(cache)
    )


def install(model: nn.Module, family, pruner) -> None:
    """Route the base model's forward through ``pruned_forward`` and its output head through the kept rows."""
    stack.install(model, family, pruner, model.base_model, pruned_forward)


def default_positions(embeds: torch.Tensor, past: int = 0) -> torch.Tensor:
    """Positions past..past+n-1, as stock transformers uses when none are given."""
    return torch.arange(past, past + embeds.shape[1], device=embeds.device).unsqueeze(0)


def attend(module: nn.Module, query, key, value, tokens, call: LayerCall, *, dropout: float):
    """Causal attention over the entering tokens, with each token's score for the pruning method."""
    pruner = call.pruner
    return attend_and_score(
        query,
        key,
        value,
        tokens.valid,
        tokens.positions,
        pruner.method,
        scaling=module.scaling,
        dropout=dropout if module.training else 0.0,
        generator=pruner.generator,
        causal=True,
        bias=call.bias,
        queries=pruner.scoring_queries(tokens.valid, tokens.positions),
    )


class Decoder(DecoderFamily):
    """What every decoder family shares besides the forward above: its defaults, its output head on the
    kept rows, and how the forward is put in place.  A subclass writes the ``DecoderFamily`` hooks and
    its layers' ``run_layer``/``drop_layer`` (``write_cache`` and ``attend`` in the drop layer)."""

    default_options = DECODER_OPTIONS

    def output_head(self, model: nn.Module) -> nn.Module | None:
        return output_head(model)

    def install(self, model: nn.Module, pruner) -> None:
        install(model, self, pruner)


class RotaryDecoder(Decoder):
    """The Llama layout, which Llama, Qwen2 and Mistral share: pre-norm blocks (``input_layernorm``,
    ``self_attn`` with ``q/k/v/o_proj``, ``post_attention_layernorm``, ``mlp``), rotary positions from
    ``base.rotary_emb``, grouped-query attention, a gated MLP, ``base.norm`` last.

    Rotary angles are computed once for the input and gathered for the kept tokens, so every kept token
    keeps the angle of its original position; grouped key/value heads are repeated as stock does.
    Projection biases (Qwen2's q/k/v) live in the projection modules, so they need nothing here."""

    output_class = BaseModelOutputWithPast

    def arch_spec(self, model: nn.Module) -> ArchSpec:
        config = model.config
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        return ArchSpec(
            num_layers=config.num_hidden_layers,
            hidden=config.hidden_size,
            num_heads=config.num_attention_heads,
            head_dim=head_dim,
            ffn_dim=config.intermediate_size,
            num_kv_heads=config.num_key_value_heads,
            ffn_matrices=3,
            head_per_token=lm_head_flops(model, config.hidden_size),
        )

    def max_length(self, model: nn.Module) -> int:
        return model.config.max_position_embeddings

    def stacks(self, model: nn.Module):
        base = model.base_model
        return {"decoder": base.layers[: base.config.num_hidden_layers]}

    def embed(self, base, input_ids, inputs_embeds, position_ids, kwargs, past: int = 0):
        embeds = base.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        return embeds, default_positions(embeds, past) if position_ids is None else position_ids

    def rotary(self, base, hidden, position_ids):
        cos, sin = base.rotary_emb(hidden, position_ids=position_ids)
        return cos.expand(hidden.shape[0], -1, -1), sin.expand(hidden.shape[0], -1, -1)

    def after_drop(self, call: LayerCall, tokens: Tokens) -> None:
        # rotary rows are indexed by the original position; kept tokens look theirs up
        call.rotary = tuple(gather_tokens(part, tokens.positions) for part in call.original_rotary)

    def final_norm(self, base):
        return base.norm

    def run_layer(self, layer, hidden, call: LayerCall):
        return layer(
            hidden,
            attention_mask=call.mask,
            position_embeddings=call.rotary,
            **compat.cache_kwargs(call.cache),
        )

    def drop_layer(self, layer, hidden, tokens: Tokens, keep, call: LayerCall):
        """One decoder layer that keeps ``keep[b]`` tokens of sample b after its causal self-attention."""
        attention = layer.self_attn
        batch, n, _ = hidden.shape
        normed = layer.input_layernorm(hidden)
        query, key, value = (
            proj(normed).view(batch, n, -1, attention.head_dim).transpose(1, 2)
            for proj in (attention.q_proj, attention.k_proj, attention.v_proj)
        )
        query, key = apply_rotary_pos_emb(query, key, *call.rotary)
        self.write_cache(call, attention.layer_idx, key, value)
        groups = attention.num_key_value_groups
        context, scores = attend(
            attention,
            query,
            repeat_kv(key, groups),
            repeat_kv(value, groups),
            tokens,
            call,
            dropout=attention.attention_dropout,
        )
        context, residual, tokens = call.pruner.method.reduce(context, hidden, scores, tokens, keep)
        hidden = residual + attention.o_proj(context)
        return hidden + layer.mlp(layer.post_attention_layernorm(hidden)), tokens
