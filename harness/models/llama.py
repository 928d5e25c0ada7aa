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

from harness.models import compat, decoder
from harness.models.gpt2 import GPT2Family
from harness.pruning.flops import ArchSpec
from harness.pruning.pruner import Pruner
from harness.pruning.select import gather_tokens, pack_kept


class LlamaFamily(GPT2Family):
    """Shares GPT-2's protection defaults and checks of protect_last; the rest is Llama's own."""

    name = "llama"
    output_class = BaseModelOutputWithPast

    @staticmethod
    def supports(model: nn.Module) -> bool:
        return isinstance(model, (LlamaModel, LlamaForCausalLM, LlamaForSequenceClassification))

    @staticmethod
    def check(model, settings) -> None:
        GPT2Family.check_protection(settings)

    @staticmethod
    def arch_spec(model: nn.Module) -> ArchSpec:
        config = model.config
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        head = getattr(LlamaFamily.output_head(model), "out_features", 0)
        return ArchSpec(num_layers=config.num_hidden_layers, hidden=config.hidden_size,
                        num_heads=config.num_attention_heads, head_dim=head_dim, ffn_dim=config.intermediate_size,
                        num_kv_heads=config.num_key_value_heads, ffn_matrices=3,
                        head_per_token=2 * config.hidden_size * head)

    @staticmethod
    def max_length(model: nn.Module) -> int:
        return model.config.max_position_embeddings

    @staticmethod
    def embed(base, input_ids, inputs_embeds, position_ids, kwargs, past: int = 0):
        embeds = base.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        return embeds, decoder.default_positions(embeds, past) if position_ids is None else position_ids

    @staticmethod
    def rotary(base, hidden, position_ids):
        cos, sin = base.rotary_emb(hidden, position_ids=position_ids)
        return cos.expand(hidden.shape[0], -1, -1), sin.expand(hidden.shape[0], -1, -1)

    @staticmethod
    def gather_rotary(rotary, positions):
        # rotary rows are indexed by the original position; kept tokens look theirs up
        return tuple(gather_tokens(part, positions) for part in rotary) if rotary is not None else None

    @staticmethod
    def layers(base):
        return base.layers[: base.config.num_hidden_layers]

    @staticmethod
    def final_norm(base):
        return base.norm

    @staticmethod
    def run_layer(layer, hidden, mask, rotary, cache=None):
        return layer(hidden, attention_mask=mask, position_embeddings=rotary, **compat.cache_kwargs(cache))

    @staticmethod
    def drop_layer(layer, hidden, valid, positions, protected, keep, rotary, pruner: Pruner, cache=None):
        """One LlamaDecoderLayer that keeps ``keep[b]`` tokens of sample b after its causal self-attention."""
        attention = layer.self_attn
        batch, n, _ = hidden.shape
        normed = layer.input_layernorm(hidden)
        query, key, value = (proj(normed).view(batch, n, -1, attention.head_dim).transpose(1, 2)
                             for proj in (attention.q_proj, attention.k_proj, attention.v_proj))
        query, key = apply_rotary_pos_emb(query, key, *rotary)
        if cache is not None:
            cache.update(key, value, attention.layer_idx)
        groups = attention.num_key_value_groups
        context, scores = decoder.attend(attention, query, repeat_kv(key, groups), repeat_kv(value, groups),
                                         valid, positions, pruner, dropout=attention.attention_dropout)
        context, residual, state = pack_kept(context, hidden, scores, valid, positions, protected, keep)
        hidden = residual + attention.o_proj(context)
        return hidden + layer.mlp(layer.post_attention_layernorm(hidden)), state

