"""ACC word-vector elimination for Qwen2 decoders (Qwen2ForCausalLM, Qwen2ForSequenceClassification,
Qwen2Model): Qwen2 and Qwen2.5 checkpoints.

Qwen2 is the Llama layout (``decoder.RotaryDecoder``) with biases on the query, key and value
projections, which its projection modules apply.  Its one difference the shared forward cannot match
is the optional sliding window (``use_sliding_window``; off in the released checkpoints): the pruned
forward attends every kept token and keeps every cached one, so such configs are refused.
"""

from __future__ import annotations

from torch import nn
from transformers import Qwen2ForCausalLM, Qwen2ForSequenceClassification, Qwen2Model

from harness.models.decoder import RotaryDecoder
from harness.registry import HarnessError


class Qwen2Family(RotaryDecoder):
    name, model_types = "qwen2", ("qwen2",)
    classes = (Qwen2Model, Qwen2ForCausalLM, Qwen2ForSequenceClassification)
    description = "Qwen2 decoders (Qwen2.5): Qwen2Model, Qwen2ForCausalLM, Qwen2ForSequenceClassification"

    def check(self, model: nn.Module, settings) -> None:
        if "sliding_attention" in (getattr(model.config, "layer_types", None) or ()):
            raise HarnessError(
                "Qwen2 configs with sliding-window layers (use_sliding_window) are not supported"
            )
        super().check(model, settings)


FAMILY = Qwen2Family()
