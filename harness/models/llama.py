"""ACC word-vector elimination for Llama-family decoders (LlamaForCausalLM, LlamaForSequenceClassification,
LlamaModel), SmolLM2 among them.

Everything is the shared Llama layout (``decoder.RotaryDecoder``): rotary angles gathered for the kept
tokens, grouped-query attention, the pruned forward and its KV cache.  This module names the classes.
"""

from __future__ import annotations

from transformers import LlamaForCausalLM, LlamaForSequenceClassification, LlamaModel

from harness.models.decoder import RotaryDecoder


class LlamaFamily(RotaryDecoder):
    name, model_types = "llama", ("llama",)
    classes = (LlamaModel, LlamaForCausalLM, LlamaForSequenceClassification)
    description = (
        "Llama-family decoders (SmolLM2): LlamaModel, LlamaForCausalLM, LlamaForSequenceClassification"
    )


FAMILY = LlamaFamily()
