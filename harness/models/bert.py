"""ACC word-vector elimination for BERT-architecture encoders (BertModel, BertForSequenceClassification).

The pruned forward of ``BertModel.encoder`` (installed by ``harness.models.stack.install``) runs the
stock ``BertLayer`` modules through the shared layer loop (same parameters, same state-dict keys).  A layer in which no sample drops a token is called as is, with the
model's own attention implementation, so at speedup 1 the forward *is* the stock one.  A layer that
drops tokens computes its attention explicitly (ACC needs the probabilities), scores the entering
word-vectors, keeps each sample's top k_l in their original order, and runs the attention output
projection and the feed-forward network on the kept ones only.  Every later layer sees only those; once
every sample is down to one word-vector, the layers skip the attention that a single key makes trivial.

Because the output projection, LayerNorm and FFN act on each token on its own, "drop after attention"
gives exactly the rows the stock layer would give for the kept tokens: pruning changes which tokens
later layers see, never the arithmetic of the ones they keep.

The returned ``last_hidden_state`` holds the kept tokens of the last layer (padded per batch); [CLS]
is protected and stays first, so the pooler and the classification head read what they always read.
Heads that need every position (token classification, masked LM, QA) are refused.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import BertForSequenceClassification, BertModel
from transformers.modeling_outputs import BaseModelOutputWithPastAndCrossAttentions

from harness.contracts.family import Family, LayerCall, Tokens
from harness.contracts.flops import ArchSpec
from harness.models import stack
from harness.pruning.attention import attend_and_score
from harness.registry import HarnessError

SUPPORTED = (BertModel, BertForSequenceClassification)


def key_validity(attention_mask: torch.Tensor | None, hidden: torch.Tensor) -> torch.Tensor:
    """(B, n) bool of real tokens, from the 4-D mask transformers hands the encoder.

    transformers passes None (nothing masked), a boolean mask (sdpa: True = attend) or an additive
    float mask (eager: 0 or the dtype's minimum); bidirectional masks repeat one row per query.
    """
    batch, n = hidden.shape[:2]
    if attention_mask is None:
        return torch.ones(batch, n, dtype=torch.bool, device=hidden.device)
    row = attention_mask[:, 0, 0, :]
    return row if row.dtype == torch.bool else row > torch.finfo(row.dtype).min / 2


def pruned_encoder_forward(
    self,
    hidden_states,
    attention_mask=None,
    encoder_hidden_states=None,
    encoder_attention_mask=None,
    cache=None,
    past_key_values=None,
    use_cache=None,
    **kwargs,
):
    """``BertEncoder.forward`` with pruning (``self`` is the stock encoder module)."""
    pruner = self.harness_pruner
    call = LayerCall(
        pruner,
        causal=False,
        implementation=self.config._attn_implementation,
        training=self.training,
        mask=attention_mask,
        layer_kwargs=kwargs,
    )
    tokens = stack.first_tokens(key_validity(attention_mask, hidden_states), pruner)
    hidden, _, _ = stack.run_stack(self.harness_family, self.layer, hidden_states, tokens, call)
    return BaseModelOutputWithPastAndCrossAttentions(last_hidden_state=hidden)


class BertFamily(Family):
    """BERT-architecture encoders (BertModel, BertForSequenceClassification)."""

    name, kind, model_types = "bert", "encoder", ("bert",)
    description = "BERT-architecture encoders: BertModel, BertForSequenceClassification"

    def supports(self, model: nn.Module) -> bool:
        return isinstance(model, SUPPORTED)

    def check(self, model: nn.Module, settings) -> None:
        if model.config.is_decoder:
            raise HarnessError("BERT models configured as decoders (is_decoder=True) are not supported")
        if settings.protect_first < 1:
            raise HarnessError("protect_first must be >= 1 for BERT: the pooler and the head read [CLS]")

    def arch_spec(self, model: nn.Module) -> ArchSpec:
        config = model.config
        hidden = config.hidden_size
        bert = model.base_model
        head = 2 * hidden * hidden if bert.pooler is not None else 0
        if isinstance(model, BertForSequenceClassification):
            head += 2 * hidden * config.num_labels
        return ArchSpec(
            num_layers=config.num_hidden_layers,
            hidden=hidden,
            num_heads=config.num_attention_heads,
            head_dim=hidden // config.num_attention_heads,
            ffn_dim=config.intermediate_size,
            head_flops=head,
        )

    def max_length(self, model: nn.Module) -> int:
        return model.config.max_position_embeddings

    def stacks(self, model: nn.Module):
        return {"encoder": model.base_model.encoder.layer}

    def install(self, model: nn.Module, pruner) -> None:
        stack.install(model, self, pruner, model.base_model.encoder, pruned_encoder_forward)

    def run_layer(self, layer, hidden, call: LayerCall):
        return layer(hidden, call.mask, **call.layer_kwargs)

    def single_token_layer(self, layer, hidden):
        """A BertLayer on one word-vector per sample: attention over a single key is that key's value.

        The softmax of one logit is exactly 1, so the context is the value projection; the query and key
        projections are skipped.  That is a sixth of the layer's weights, and reading its weights is
        what such a layer's time is made of (at batch 1 and high speedups the late layers keep only
        [CLS]).  Training runs the stock layer, so attention dropout applies as it always does.
        """
        attention = layer.attention
        attended = attention.output(attention.self.value(hidden), hidden)
        return layer.feed_forward_chunk(attended)

    def drop_layer(self, layer, hidden, tokens: Tokens, keep, call: LayerCall):
        """One BertLayer that keeps ``keep[b]`` word-vectors of sample b after its self-attention."""
        attention = layer.attention.self
        batch, n, _ = hidden.shape
        shape = (batch, n, -1, attention.attention_head_size)
        query, key, value = (
            proj(hidden).view(shape).transpose(1, 2)
            for proj in (attention.query, attention.key, attention.value)
        )
        pruner = call.pruner
        context, scores = attend_and_score(
            query,
            key,
            value,
            tokens.valid,
            tokens.positions,
            pruner.method,
            scaling=attention.scaling,
            dropout=attention.dropout.p if call.training else 0.0,
            generator=pruner.generator,
            bias=call.bias,
        )
        context, residual, tokens = pruner.method.reduce(context, hidden, scores, tokens, keep)
        attended = layer.attention.output(context, residual)
        return layer.feed_forward_chunk(attended), tokens


FAMILY = BertFamily()
