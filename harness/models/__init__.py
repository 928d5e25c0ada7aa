"""Model families (how to prune an architecture) and model aliases (which checkpoint a name means).

``FAMILIES`` holds one adapter per architecture family, each in its own module, in the spirit of
transformers' one-file-per-model layout: ``bert.py`` now; decoders and T5 slot in beside it.
``MODELS`` maps the short names users type (``--models bert,minilm``) to a checkpoint and its family;
see ``harness.models.catalog``.
"""

from __future__ import annotations

from torch import nn

from harness.models.bert import BertFamily
from harness.models.gpt2 import GPT2Family
from harness.models.llama import LlamaFamily
from harness.registry import HarnessError, Registry

FAMILIES: Registry = Registry("model family")
for _family in (BertFamily, GPT2Family, LlamaFamily):
    FAMILIES.register(_family.name, _family)


def family_for(model: nn.Module):
    """The family adapter that can prune ``model``, or a clear error naming what is supported."""
    for _, family in FAMILIES.items():
        if family.supports(model):
            return family
    raise HarnessError(
        f"cannot prune a {type(model).__name__}: supported are BertModel, BertForSequenceClassification, "
        "GPT2Model, GPT2LMHeadModel, GPT2ForSequenceClassification, LlamaModel, LlamaForCausalLM and "
        "LlamaForSequenceClassification"
    )
