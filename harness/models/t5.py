"""ACC word-vector elimination for T5 encoder-decoders (T5ForConditionalGeneration: Flan-T5).

Word-vectors are eliminated in the **encoder** only, through the shared layer loop
(``stack.run_stack``) installed as the forward of ``model.encoder``.  The decoder is stock and runs
dense: it cross-attends to the final encoder state of every kept token (nothing is restored), so its
cross-attention keys, values and products shrink with the kept tokens.

* Relative position bias.  T5 adds a learned bias, a function of (key position − query position), to
  every attention logit.  It is computed once for the whole input (the first block's table, as stock
  T5 shares it across layers) and, after every drop, gathered on both axes at the kept tokens'
  *original* positions (``gather_bias``).  It is never recomputed from the packed, shorter positions:
  two kept tokens that were 40 apart stay 40 apart.
* The encoder's output carries its layout.  ``PrunedEncoderOutput`` holds the kept states packed per
  sample (B, K, D) and their mask and original positions; the model's forward hands the decoder that
  mask as its cross-attention mask.  Because the mask travels inside ``encoder_outputs``, ``generate``
  (which runs the encoder once, then passes ``encoder_outputs`` to every step and expands it for beams)
  never re-prunes during decoding, and decoding steps never see a stale layout.
* At speedup 1 no layer drops a token, every stock block is called as is, the output keeps every
  position and the mask is the input's: logits and greedy generations equal stock's.
* Nothing is protected by position except T5's final ``</s>`` (``protect_last=1``); there is no [CLS].

Only ``T5ForConditionalGeneration`` is served: T5's classification head reads the decoder's last
``</s>``, a different protocol from the fine-tune runner's, so a classification fine-tune is refused
(``harness.runners.protocols.FineTune.check``).
"""

from __future__ import annotations

import functools
import types
from dataclasses import dataclass, replace

import torch
from torch import nn
from transformers import T5ForConditionalGeneration
from transformers.modeling_outputs import BaseModelOutput

from harness.contracts.family import Family, LayerCall, Tokens
from harness.contracts.flops import ArchSpec
from harness.models import stack
from harness.pruning.attention import allowed_keys, attend_and_score, for_implementation
from harness.registry import HarnessError

DECODER_TOKENS = 1
"""Decoder tokens per sample the FLOP model counts unless ``config.harness_decoder_tokens`` says
otherwise: 1 scores a one-token answer or times the first generation step (the sweep's latency batch
feeds exactly that many).  For N generated or scored tokens use ``decoder_tokens_spec(spec, N)``."""


@dataclass
class PrunedEncoderOutput(BaseModelOutput):
    """The encoder's kept states, packed per sample, with their layout (so the decoder can mask them)."""

    kept_mask: torch.Tensor | None = None
    """(B, K) long: 1 for a kept token, 0 for a padding slot."""
    kept_positions: torch.Tensor | None = None
    """(B, K) long: each kept state's position in the original input."""


def gather_bias(full: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """(B, H, K, K) bias of the kept tokens: ``full[0, h, positions[b, i], positions[b, j]]``.

    ``full`` is the (1, H, n, n) bias of the whole input, indexed by original positions on both axes."""
    table = full[0]
    heads, kept = table.shape[0], positions.shape[1]
    rows = table[:, positions]  # (H, B, K, n): the kept queries' rows
    columns = positions[None, :, None, :].expand(heads, -1, kept, -1)
    return rows.gather(-1, columns).transpose(0, 1)


def decoder_tokens_spec(spec: ArchSpec, decoder_tokens: int, lm_head_per_token: int) -> ArchSpec:
    """``spec`` counting ``decoder_tokens`` decoder tokens (and their LM-head rows) per sample."""
    return replace(spec, decoder_tokens=decoder_tokens, head_flops=decoder_tokens * lm_head_per_token)


def pruned_encoder_forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, **kwargs):
    """``T5Stack.forward`` of the encoder with pruning (``self`` is the stock encoder stack).

    Keywords the stock encoder would only use for optional outputs (``output_attentions``,
    ``return_dict``, ...) are accepted and ignored: the output is always a ``PrunedEncoderOutput``."""
    pruner, family = self.harness_pruner, self.harness_family
    hidden = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
    batch, n = hidden.shape[:2]
    valid = (
        attention_mask.bool()
        if attention_mask is not None
        else torch.ones(batch, n, dtype=torch.bool, device=hidden.device)
    )
    implementation = self.config._attn_implementation
    bias = self.block[0].layer[0].SelfAttention.compute_bias(n, n, device=hidden.device)
    call = LayerCall(
        pruner,
        causal=False,
        implementation=implementation,
        training=self.training,
        mask=for_implementation(allowed_keys(valid, False), hidden, implementation),
        bias=bias,
        original_bias=bias,
    )
    hidden, tokens, _ = stack.run_stack(
        family, self.block, self.dropout(hidden), stack.first_tokens(valid, pruner), call
    )
    hidden = self.dropout(self.final_layer_norm(hidden))
    return PrunedEncoderOutput(
        last_hidden_state=hidden, kept_mask=tokens.valid.long(), kept_positions=tokens.positions
    )


def seq2seq_forward(
    self, input_ids=None, attention_mask=None, encoder_outputs=None, inputs_embeds=None, **kwargs
):
    """``T5ForConditionalGeneration.forward`` with the decoder cross-attending to the kept encoder states.

    Runs the (pruned) encoder unless ``encoder_outputs`` are given (``generate``'s decoding steps), and
    masks the decoder's cross-attention with the layout the encoder output carries, not the input's."""
    if encoder_outputs is None:
        encoder_outputs = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds
        )
    kept = getattr(encoder_outputs, "kept_mask", None)
    return type(self).forward(
        self,
        attention_mask=attention_mask if kept is None else kept,
        encoder_outputs=encoder_outputs,
        **kwargs,
    )


class T5Family(Family):
    name, kind, model_types = "t5", "encoder-decoder", ("t5",)
    description = "T5 encoder-decoders (Flan-T5): T5ForConditionalGeneration, encoder-side elimination"
    default_options = {"protect_first": 0, "protect_last": 1}

    def supports(self, model: nn.Module) -> bool:
        return isinstance(model, T5ForConditionalGeneration)

    def check(self, model: nn.Module, settings) -> None:
        if settings.protect_first + settings.protect_last + settings.min_keep < 1:
            raise HarnessError(
                "T5 needs at least one kept encoder state for the decoder to attend: set "
                "protect_last (default 1), protect_first or min_keep >= 1"
            )

    def arch_spec(self, model: nn.Module) -> ArchSpec:
        config = model.config
        spec = ArchSpec(
            num_layers=config.num_layers,
            hidden=config.d_model,
            num_heads=config.num_heads,
            head_dim=config.d_kv,
            ffn_dim=config.d_ff,
            ffn_matrices=3 if config.is_gated_act else 2,
            decoder_layers=config.num_decoder_layers,
        )
        tokens = getattr(config, "harness_decoder_tokens", None) or DECODER_TOKENS
        return decoder_tokens_spec(spec, tokens, 2 * config.d_model * model.lm_head.out_features)

    def max_length(self, model: nn.Module) -> int:
        return getattr(model.config, "n_positions", None) or 512

    def stacks(self, model: nn.Module):
        return {"encoder": model.encoder.block, "decoder": model.decoder.block}

    def install(self, model: nn.Module, pruner) -> None:
        stack.install(model, self, pruner, model.encoder, pruned_encoder_forward)
        # functools.wraps: generate reads the stock signature to validate its keywords
        model.forward = types.MethodType(
            functools.wraps(T5ForConditionalGeneration.forward)(seq2seq_forward), model
        )

    def latency_inputs(self, model: nn.Module, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """The encoder input, and the decoder start token repeated for the decoder tokens the FLOP model counts."""
        tokens = self.arch_spec(model).decoder_tokens
        start = model.config.decoder_start_token_id
        start = model.config.pad_token_id if start is None else start
        decoder = torch.full(
            (input_ids.shape[0], tokens), start, dtype=input_ids.dtype, device=input_ids.device
        )
        return {**super().latency_inputs(model, input_ids), "decoder_input_ids": decoder}

    def after_drop(self, call: LayerCall, tokens: Tokens) -> None:
        call.bias = gather_bias(call.original_bias, tokens.positions)

    def run_layer(self, block, hidden, call: LayerCall):
        return block(hidden, call.mask, call.bias)[0]

    def drop_layer(self, block, hidden, tokens: Tokens, keep, call: LayerCall):
        """One encoder T5Block that keeps ``keep[b]`` word-vectors of sample b after its self-attention."""
        layer = block.layer[0]
        attention = layer.SelfAttention
        batch, n, _ = hidden.shape
        normed = layer.layer_norm(hidden)
        query, key, value = (
            proj(normed).view(batch, n, -1, attention.key_value_proj_dim).transpose(1, 2)
            for proj in (attention.q, attention.k, attention.v)
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
            dropout=attention.dropout if call.training else 0.0,
            generator=pruner.generator,
            bias=call.bias,
        )
        context, residual, tokens = pruner.method.reduce(context, hidden, scores, tokens, keep)
        hidden = residual + layer.dropout(attention.o(context))
        return block.layer[-1](hidden), tokens


FAMILY = T5Family()
