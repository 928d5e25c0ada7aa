"""ACC word-vector elimination for GPT-2 (GPT2LMHeadModel, GPT2ForSequenceClassification, GPT2Model).

The pruned forward, its KV cache and the output conventions are the shared decoder's
(``decoder.Decoder``); this module holds what is GPT-2's own: its embeddings (learned position
embeddings added before the first block, so kept tokens carry their original positions with no further
work), its final norm, and its block.  Configs with ``scale_attn_by_inverse_layer_idx`` or
``reorder_and_upcast_attn`` (neither is used by the released GPT-2 checkpoints) are refused rather
than computed differently from stock.
"""

from __future__ import annotations

from torch import nn
from transformers import GPT2ForSequenceClassification, GPT2LMHeadModel, GPT2Model
from transformers.modeling_outputs import BaseModelOutputWithPastAndCrossAttentions

from harness.contracts.family import LayerCall, Tokens
from harness.contracts.flops import ArchSpec
from harness.models import decoder
from harness.registry import HarnessError


class GPT2Family(decoder.Decoder):
    name, model_types = "gpt2", ("gpt2",)
    classes = (GPT2Model, GPT2LMHeadModel, GPT2ForSequenceClassification)
    description = "GPT-2 decoders: GPT2Model, GPT2LMHeadModel, GPT2ForSequenceClassification"
    output_class = BaseModelOutputWithPastAndCrossAttentions

    def check(self, model: nn.Module, settings) -> None:
        config = model.config
        if (
            config.scale_attn_by_inverse_layer_idx
            or config.reorder_and_upcast_attn
            or config.add_cross_attention
        ):
            raise HarnessError(
                "GPT-2 configs with scale_attn_by_inverse_layer_idx, reorder_and_upcast_attn "
                "or cross-attention are not supported"
            )
        super().check(model, settings)

    def arch_spec(self, model: nn.Module) -> ArchSpec:
        config = model.config
        return ArchSpec(
            num_layers=config.n_layer,
            hidden=config.n_embd,
            num_heads=config.n_head,
            head_dim=config.n_embd // config.n_head,
            ffn_dim=config.n_inner or 4 * config.n_embd,
            head_per_token=decoder.lm_head_flops(model, config.n_embd),
        )

    def max_length(self, model: nn.Module) -> int:
        return model.config.n_positions

    def stacks(self, model: nn.Module):
        return {"decoder": model.base_model.h}

    # -- the DecoderFamily hooks ---------------------------------------------------------------------

    def embed(self, base, input_ids, inputs_embeds, position_ids, kwargs, past: int = 0):
        embeds = base.wte(input_ids) if inputs_embeds is None else inputs_embeds
        if position_ids is None:
            position_ids = decoder.default_positions(embeds, past)
        hidden = embeds + base.wpe(position_ids)
        token_type_ids = kwargs.pop("token_type_ids", None)
        if token_type_ids is not None:
            hidden = hidden + base.wte(token_type_ids)
        return base.drop(hidden), position_ids

    def final_norm(self, base):
        return base.ln_f

    def run_layer(self, block, hidden, call: LayerCall):
        return block(hidden, call.cache, call.mask)

    def drop_layer(self, block, hidden, tokens: Tokens, keep, call: LayerCall):
        """One GPT2Block that keeps ``keep[b]`` tokens of sample b after its causal self-attention."""
        attention = block.attn
        batch, n, _ = hidden.shape
        query, key, value = (
            part.view(batch, n, -1, attention.head_dim).transpose(1, 2)
            for part in attention.c_attn(block.ln_1(hidden)).split(attention.split_size, dim=2)
        )
        self.write_cache(call, attention.layer_idx, key, value)
        context, scores = decoder.attend(
            attention, query, key, value, tokens, call, dropout=attention.attn_dropout.p
        )
        context, residual, tokens = call.pruner.method.reduce(context, hidden, scores, tokens, keep)
        hidden = residual + attention.resid_dropout(attention.c_proj(context))
        return hidden + block.mlp(block.ln_2(hidden)), tokens


FAMILY = GPT2Family()
