"""ACC word-vector elimination for Llama-family decoders (LlamaForCausalLM, LlamaForSequenceClassification,
LlamaModel), SmolLM2 among them.

The layer loop and the output conventions are shared with GPT-2 in ``decoder.py``.  Rotary position
embeddings are computed once for the input and gathered for the kept tokens, so every kept token keeps
the angle of its original position; grouped-query attention repeats the key/value heads as stock does.
"""

from __future__ import annotations

from torch import nn
from transformers import LlamaForCausalLM, LlamaForSequenceClassification, LlamaModel
from transformers.modeling_outputs import BaseModelOutputWithPast
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, repeat_kv

from harness.contracts.family import Family, LayerCall, Tokens
from harness.models import compat, decoder
from harness.pruning.flops import ArchSpec
from harness.pruning.select import gather_tokens


class LlamaFamily(Family):
    name, kind, model_types = "llama", "decoder", ("llama",)
    description = "Llama-family decoders (SmolLM2): LlamaModel, LlamaForCausalLM, LlamaForSequenceClassification"
    default_options = decoder.DECODER_OPTIONS
    output_class = BaseModelOutputWithPast

    def supports(self, model: nn.Module) -> bool:
        return isinstance(model, (LlamaModel, LlamaForCausalLM, LlamaForSequenceClassification))

    def arch_spec(self, model: nn.Module) -> ArchSpec:
        config = model.config
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        return ArchSpec(num_layers=config.num_hidden_layers, hidden=config.hidden_size,
                        num_heads=config.num_attention_heads, head_dim=head_dim, ffn_dim=config.intermediate_size,
                        num_kv_heads=config.num_key_value_heads, ffn_matrices=3,
                        head_per_token=decoder.lm_head_flops(model, config.hidden_size))

    def max_length(self, model: nn.Module) -> int:
        return model.config.max_position_embeddings

    def output_head(self, model: nn.Module) -> nn.Module | None:
        return decoder.output_head(model)

    def install(self, model: nn.Module, pruner) -> None:
        decoder.install(model, self, pruner)

    def stacks(self, model: nn.Module):
        base = model.base_model
        return {"decoder": base.layers[: base.config.num_hidden_layers]}

    # -- the pieces decoder.pruned_forward calls --------------------------------------------------

    @staticmethod
    def embed(base, input_ids, inputs_embeds, position_ids, kwargs, past: int = 0):
        embeds = base.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        return embeds, decoder.default_positions(embeds, past) if position_ids is None else position_ids

    @staticmethod
    def rotary(base, hidden, position_ids):
        cos, sin = base.rotary_emb(hidden, position_ids=position_ids)
        return cos.expand(hidden.shape[0], -1, -1), sin.expand(hidden.shape[0], -1, -1)

    def after_drop(self, call: LayerCall, tokens: Tokens) -> None:
        # rotary rows are indexed by the original position; kept tokens look theirs up
        call.rotary = tuple(gather_tokens(part, tokens.positions) for part in call.original_rotary)

    @staticmethod
    def final_norm(base):
        return base.norm

    def run_layer(self, layer, hidden, call: LayerCall):
        return layer(hidden, attention_mask=call.mask, position_embeddings=call.rotary, **compat.cache_kwargs(call.cache))

    def drop_layer(self, layer, hidden, tokens: Tokens, keep, call: LayerCall):
        """One LlamaDecoderLayer that keeps ``keep[b]`` tokens of sample b after its causal self-attention."""
        attention = layer.self_attn
        batch, n, _ = hidden.shape
        normed = layer.input_layernorm(hidden)
        query, key, value = (proj(normed).view(batch, n, -1, attention.head_dim).transpose(1, 2)
                             for proj in (attention.q_proj, attention.k_proj, attention.v_proj))
        query, key = apply_rotary_pos_emb(query, key, *call.rotary)
        if call.cache is not None:
            call.cache.update(key, value, attention.layer_idx)
        groups = attention.num_key_value_groups
        context, scores = decoder.attend(attention, query, repeat_kv(key, groups), repeat_kv(value, groups),
                                         tokens, call, dropout=attention.attention_dropout)
        context, residual, tokens = call.pruner.method.reduce(context, hidden, scores, tokens, keep)
        hidden = residual + attention.o_proj(context)
        return hidden + layer.mlp(layer.post_attention_layernorm(hidden)), tokens
