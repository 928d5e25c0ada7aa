"""ACC word-vector elimination for GPT-2 (GPT2LMHeadModel, GPT2ForSequenceClassification, GPT2Model).

The layer loop and the output conventions are shared with Llama in ``decoder.py``.  GPT-2 adds its
learned position embeddings before the first block, so kept tokens carry their original positions
with no further work.  Configs with ``scale_attn_by_inverse_layer_idx`` or
``reorder_and_upcast_attn`` (neither is used by the released GPT-2 checkpoints) are refused rather
than computed differently from stock.
"""

from __future__ import annotations

from torch import nn
from transformers import GPT2ForSequenceClassification, GPT2LMHeadModel, GPT2Model
from transformers.masking_utils import create_causal_mask
from transformers.modeling_outputs import BaseModelOutputWithPastAndCrossAttentions

from harness.models import compat, decoder
from harness.pruning.flops import ArchSpec
from harness.pruning.pruner import Pruner, PruningSettings
from harness.pruning.select import pack_kept
from harness.registry import HarnessError


class GPT2Family:
    name = "gpt2"
    default_options = {"protect_first": 1, "protect_last": 1, "min_keep": 16}
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
    output_class = BaseModelOutputWithPastAndCrossAttentions

    @staticmethod
    def supports(model: nn.Module) -> bool:
        return isinstance(model, (GPT2Model, GPT2LMHeadModel, GPT2ForSequenceClassification))

    @staticmethod
    def check(model: nn.Module, settings: PruningSettings) -> None:
        config = model.config
        if config.scale_attn_by_inverse_layer_idx or config.reorder_and_upcast_attn or config.add_cross_attention:
            raise HarnessError("GPT-2 configs with scale_attn_by_inverse_layer_idx, reorder_and_upcast_attn "
                               "or cross-attention are not supported")
        GPT2Family.check_protection(settings)

    @staticmethod
    def check_protection(settings: PruningSettings) -> None:
        if settings.protect_last < 1:
            raise HarnessError("protect_last must be >= 1 for decoders: the last token's logits are the output")

    @staticmethod
    def arch_spec(model: nn.Module) -> ArchSpec:
        config = model.config
        head = getattr(GPT2Family.output_head(model), "out_features", 0)
        return ArchSpec(num_layers=config.n_layer, hidden=config.n_embd, num_heads=config.n_head,
                        head_dim=config.n_embd // config.n_head, ffn_dim=config.n_inner or 4 * config.n_embd,
                        head_per_token=2 * config.n_embd * head)

    @staticmethod
    def max_length(model: nn.Module) -> int:
        return model.config.n_positions

    @staticmethod
    def output_head(model: nn.Module) -> nn.Module | None:
        return getattr(model, "lm_head", None) or getattr(model, "score", None)

    @classmethod
    def install(cls, model: nn.Module, pruner: Pruner) -> None:
        decoder.install(model, cls, pruner)

    # -- the pieces decoder.pruned_forward calls --------------------------------------------------

    @staticmethod
    def embed(base, input_ids, inputs_embeds, position_ids, kwargs, past: int = 0):
        embeds = base.wte(input_ids) if inputs_embeds is None else inputs_embeds
        if position_ids is None:
            position_ids = decoder.default_positions(embeds, past)
        hidden = embeds + base.wpe(position_ids)
        token_type_ids = kwargs.pop("token_type_ids", None)
        if token_type_ids is not None:
            hidden = hidden + base.wte(token_type_ids)
        return base.drop(hidden), position_ids

    @staticmethod
    def stock_mask(base, hidden, attention_mask, position_ids):
        return create_causal_mask(config=base.config, inputs_embeds=hidden, attention_mask=attention_mask,
                                  position_ids=position_ids, **compat.cache_kwargs(None))

    @staticmethod
    def rotary(base, hidden, position_ids):
        return None

    @staticmethod
    def gather_rotary(rotary, positions):
        return None

    @staticmethod
    def layers(base):
        return base.h

    @staticmethod
    def final_norm(base):
        return base.ln_f

    @staticmethod
    def run_layer(block, hidden, mask, rotary, cache=None):
        return block(hidden, cache, mask)

    @staticmethod
    def drop_layer(block, hidden, valid, positions, protected, keep, rotary, pruner: Pruner, cache=None):
        """One GPT2Block that keeps ``keep[b]`` tokens of sample b after its causal self-attention."""
        attention = block.attn
        batch, n, _ = hidden.shape
        query, key, value = (part.view(batch, n, -1, attention.head_dim).transpose(1, 2)
                             for part in attention.c_attn(block.ln_1(hidden)).split(attention.split_size, dim=2))
        if cache is not None:
            cache.update(key, value, attention.layer_idx)
        context, scores = decoder.attend(attention, query, key, value, valid, positions, pruner,
                                         dropout=attention.attn_dropout.p)
        context, residual, state = pack_kept(context, hidden, scores, valid, positions, protected, keep)
        hidden = residual + attention.resid_dropout(attention.c_proj(context))
        return hidden + block.mlp(block.ln_2(hidden)), state
