import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, BertModel


def tiny_bert_config(**overrides) -> BertConfig:
    values = dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=128,
                  vocab_size=120, max_position_embeddings=128, num_labels=3)
    values.update(overrides)
    return BertConfig(**values)


@pytest.fixture
def tiny_classifier():
    """A random tiny BertForSequenceClassification (eval mode) built with the given attention kernel."""

    def build(attn_implementation="sdpa", **overrides):
        torch.manual_seed(0)
        config = tiny_bert_config(**overrides)
        return BertForSequenceClassification._from_config(config, attn_implementation=attn_implementation).eval()

    return build


@pytest.fixture
def tiny_encoder():
    def build(attn_implementation="sdpa", **overrides):
        torch.manual_seed(0)
        return BertModel._from_config(tiny_bert_config(**overrides), attn_implementation=attn_implementation).eval()

    return build


@pytest.fixture
def padded_batch():
    """Three samples of 24, 15 and 6 real tokens (ids start with a [CLS]-like 1), right-padded."""
    torch.manual_seed(1)
    ids = torch.randint(3, 120, (3, 24))
    ids[:, 0] = 1
    mask = torch.ones_like(ids)
    mask[1, 15:] = 0
    mask[2, 6:] = 0
    return ids.masked_fill(mask == 0, 0), mask
