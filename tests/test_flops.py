"""Measured FLOPs (torch.utils.flop_counter) against the analytic model, dense and pruned."""

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

import harness
from harness.measure.flop_count import count_flops
from harness.pruning.pruned_model import stock_copy


@pytest.fixture(scope="module")
def twelve_layer_classifier():
    torch.manual_seed(0)
    config = BertConfig(
        hidden_size=64,
        num_hidden_layers=12,
        num_attention_heads=4,
        intermediate_size=256,
        vocab_size=100,
        max_position_embeddings=256,
        num_labels=2,
    )
    return BertForSequenceClassification(config).eval()


@pytest.mark.parametrize("speedup", [1.0, 2.0, 4.0])
@pytest.mark.parametrize("seq_len", [64, 200])
def test_measured_flops_match_analytic(twelve_layer_classifier, speedup, seq_len):
    model = harness.prune(stock_copy(twelve_layer_classifier), speedup=speedup)
    ids = torch.randint(1, 100, (2, seq_len))
    measured = count_flops(lambda: model(ids))
    dense, analytic = model.harness_pruner.last_flops
    assert measured == pytest.approx(analytic, rel=0.02)
    assert dense / analytic == pytest.approx(speedup, rel=0.05)
    if speedup == 1.0:
        assert count_flops(lambda: twelve_layer_classifier(ids)) == pytest.approx(dense, rel=0.02)
