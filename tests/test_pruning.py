"""ACC pruning of BERT: equivalence, scores, selection, counts, batch invariance, save/load."""

import copy
import math

import pytest
import torch
from conftest import same_as_stock

import harness
from harness.contracts.flops import ArchSpec, Schedule, counts_for_speedup, max_speedup
from harness.contracts.profile import keep_counts, retention_ratios
from harness.pruning.methods import ScoreInputs, acc_scores
from harness.registry import HarnessError


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_speedup_one_equals_stock_classifier(tiny_classifier, padded_batch, implementation, dtype):
    stock = tiny_classifier(implementation).to(dtype)
    ids, mask = padded_batch
    expected = stock(ids, attention_mask=mask).logits
    pruned = harness.prune(copy.deepcopy(stock), speedup=1.0)
    same_as_stock(pruned(ids, attention_mask=mask).logits, expected)
    assert type(pruned).__name__ == "BertForSequenceClassification"


def test_speedup_one_equals_stock_encoder(tiny_encoder, padded_batch):
    stock = tiny_encoder()
    ids, mask = padded_batch
    expected = stock(ids, attention_mask=mask)
    got = harness.prune(copy.deepcopy(stock), speedup=1.0)(ids, attention_mask=mask)
    assert type(got) is type(expected)
    assert torch.allclose(got.last_hidden_state, expected.last_hidden_state, atol=1e-5)
    assert torch.allclose(got.pooler_output, expected.pooler_output, atol=1e-5)


def test_acc_scores_match_output_attentions(tiny_classifier, padded_batch):
    """ACC from the dense model's output_attentions equals mean over heads and valid queries."""
    model = tiny_classifier("eager")
    ids, mask = padded_batch
    probs = model(ids, attention_mask=mask, output_attentions=True).attentions[1]
    valid = mask.bool()
    scores = acc_scores(ScoreInputs(valid, torch.arange(24).expand(3, 24), probs))
    for b in range(3):
        n = int(valid[b].sum())
        expected = probs[b, :, :n, :n].mean(dim=(0, 1))
        assert torch.allclose(scores[b, :n], expected, atol=1e-6)
        assert torch.allclose(scores[b, :n].sum(), torch.tensor(1.0), atol=1e-5)


def reference_forward(model, ids, speedup):
    """An independent ACC implementation on one unpadded sample, from the stock modules.

    Each layer runs in full (stock BertLayer, eager attention); ACC comes from the layer's attention
    weights; the kept rows of the layer's output are selected afterwards — valid because everything
    after attention acts on each token on its own.
    """
    bert = model.base_model
    spec = harness.models.family_for(model).arch_spec(model)
    counts = counts_for_speedup(spec, ids.shape[1], speedup, Schedule())
    hidden = bert.embeddings(input_ids=ids)
    positions = torch.arange(ids.shape[1])
    kept_per_layer = []
    for layer, keep in zip(bert.encoder.layer, counts):
        _, weights = layer.attention.self(hidden)
        acc = weights[0].mean(dim=(0, 1))
        acc[0] = float("inf")
        kept = acc.topk(keep).indices.sort().values
        hidden = layer(hidden)[:, kept]
        positions = positions[kept]
        kept_per_layer.append(positions.tolist())
    logits = model.classifier(bert.pooler(hidden))
    return logits, kept_per_layer


@pytest.mark.parametrize("speedup", [1.5, 2.0, 2.4])
def test_kept_positions_and_logits_match_reference(tiny_classifier, padded_batch, speedup):
    stock = tiny_classifier("eager")
    pruned = harness.prune(copy.deepcopy(stock), speedup=speedup)
    ids, mask = padded_batch
    logits = pruned(ids, attention_mask=mask).logits
    for b in range(3):
        n = int(mask[b].sum())
        ref_logits, ref_kept = reference_forward(stock, ids[b : b + 1, :n], speedup)
        assert [layer[b] for layer in pruned.last_kept] == ref_kept
        assert torch.allclose(logits[b], ref_logits[0], atol=1e-5)


def test_layers_left_with_one_word_vector_match_reference(tiny_classifier, padded_batch):
    """At the largest speedup layer 2 keeps only [CLS] in every sample; layers 3 and 4 then skip the
    (trivial) attention over one key, and must still give the stock layers' output."""
    stock = tiny_classifier("eager", max_position_embeddings=24)  # the longest sample's length
    pruned = harness.prune(copy.deepcopy(stock))
    pruned.set_speedup(max_speedup(pruned.harness_pruner.spec, 24, pruned.pruning.schedule))
    ids, mask = padded_batch
    logits = pruned(ids, attention_mask=mask).logits
    assert all(layer == [[0]] * 3 for layer in pruned.last_kept[1:])
    for b in range(3):
        n = int(mask[b].sum())
        ref_logits, ref_kept = reference_forward(stock, ids[b : b + 1, :n], pruned.pruning.speedup)
        assert [layer[b] for layer in pruned.last_kept] == ref_kept
        assert torch.allclose(logits[b], ref_logits[0], atol=1e-5)


def test_batch_invariance(tiny_classifier, padded_batch):
    model = harness.prune(tiny_classifier(), speedup=2.0)
    ids, mask = padded_batch
    together = model(ids, attention_mask=mask).logits
    kept_together = model.last_kept
    for b in range(3):
        n = int(mask[b].sum())
        alone = model(ids[b : b + 1, :n]).logits
        assert torch.allclose(alone[0], together[b], atol=1e-5)
        assert [layer[0] for layer in model.last_kept] == [layer[b] for layer in kept_together]


@pytest.mark.parametrize("profile", ["tilt", "geometric", "decay"])
def test_kept_counts_follow_profile(tiny_classifier, padded_batch, profile):
    """k_l = min(k_{l-1}, max(1, ceil(r_l * n))) with r_l from the profile at the solved tau."""
    model = harness.prune(tiny_classifier(), speedup=1.8, profile=profile)
    ids, mask = padded_batch
    model(ids, attention_mask=mask)
    spec = model.harness_pruner.spec
    for b, n in enumerate(mask.sum(dim=1).tolist()):
        tau = harness.flops.tau_for_speedup(spec, n, 1.8, Schedule(profile))
        expected, previous = [], n
        for r in retention_ratios(profile, tau, 4):
            previous = min(previous, max(1, math.ceil(r * n - 1e-9)))
            expected.append(previous)
        assert [len(layer[b]) for layer in model.last_kept] == expected
        assert all(layer[b][0] == 0 for layer in model.last_kept)  # [CLS] protected
        assert all(layer[b] == sorted(layer[b]) for layer in model.last_kept)


def test_tilt_profile_formula():
    assert retention_ratios("tilt", 0.6, 4) == pytest.approx([1.0, 0.8, 0.6, 0.4])
    assert retention_ratios("tilt", 3.0, 4, r_min=0.1) == pytest.approx([1.0, 0.1, 0.1, 0.1])
    assert retention_ratios("geometric", 0.5, 3) == pytest.approx([1.0, 0.5, 0.25])
    assert retention_ratios("decay", 0.5, 3) == pytest.approx(
        [0.5, 0.25, 0.125]
    )  # the first layer prunes too
    assert retention_ratios("decay", 1.0, 3, r_min=0.2) == pytest.approx([0.2, 0.2, 0.2])
    assert keep_counts([1.0, 0.8, 0.6, 0.4], 10, protected=1) == [10, 8, 6, 4]
    assert keep_counts([1.0, 0.0, 0.0], 10, protected=2) == [10, 2, 2]
    assert keep_counts([1.0, 0.5, 0.0], 40, protected=2, min_keep=16) == [40, 20, 16]
    assert keep_counts([1.0, 0.0, 0.0], 12, protected=2, min_keep=16) == [12, 12, 12]  # shorter: dense


def test_min_keep_floor_runs_short_prompts_dense_and_counts_them_clamped(tiny_classifier):
    model = harness.prune(tiny_classifier(), speedup=2.0, min_keep=8)
    model(torch.tensor([[1, *range(5, 12)]]))  # 8 tokens: at the floor
    assert [len(layer[0]) for layer in model.last_kept] == [8] * 4 and model.harness_pruner.last_clamped == 1
    model(torch.tensor([[1, *range(5, 60)]]))  # 56 tokens: pruned, never below the floor
    kept = [len(layer[0]) for layer in model.last_kept]
    assert min(kept) == 8 and kept[-1] < 56 and model.harness_pruner.last_clamped == 0


BERT_BASE = ArchSpec(
    num_layers=12, hidden=768, num_heads=12, head_dim=64, ffn_dim=3072, head_flops=2 * 768 * 770
)


def test_solver_is_monotonic_and_hits_target():
    for n in (32, 128, 512):
        taus = [harness.flops.tau_for_speedup(BERT_BASE, n, s) for s in (1, 1.5, 2, 3, 4, 6)]
        assert taus == sorted(taus) and taus[0] == 0.0
        for s in (1.5, 2, 3, 4, 6):
            tau = harness.flops.tau_for_speedup(BERT_BASE, n, s)
            assert harness.flops.predicted_speedup(BERT_BASE, n, Schedule(), tau) >= s - 1e-9


def test_unreachable_speedup_names_largest_value():
    best = harness.flops.max_speedup(BERT_BASE, 16, Schedule())
    with pytest.raises(
        harness.flops.UnreachableSpeedupError, match=f"largest reachable speedup is {best:.3f}"
    ):
        harness.flops.tau_for_speedup(BERT_BASE, 16, 50.0)


def test_set_speedup_rejects_bad_values(tiny_classifier):
    model = harness.prune(tiny_classifier(), speedup=1.0)
    for bad in (0.5, "fast", float("nan")):
        with pytest.raises(HarnessError, match="speedup must be a number >= 1"):
            model.set_speedup(bad)
    with pytest.raises(HarnessError, match="largest reachable speedup"):
        model.set_speedup(100.0)


def test_short_samples_run_at_their_own_maximum(tiny_classifier):
    model = harness.prune(tiny_classifier(), speedup=2.4)
    model(torch.tensor([[1, 5, 6]]))
    assert model.harness_pruner.last_clamped == 1
    assert [len(layer[0]) for layer in model.last_kept][-1] == 1


def test_save_and_load_round_trip(tiny_classifier, padded_batch, tmp_path):
    model = harness.prune(tiny_classifier(), method="acc", speedup=2.5, profile="geometric")
    ids, mask = padded_batch
    expected = model(ids, attention_mask=mask).logits
    model.save_pretrained(tmp_path)
    loaded = harness.from_pretrained(str(tmp_path))
    assert loaded.pruning == model.pruning
    assert torch.allclose(loaded.eval()(ids, attention_mask=mask).logits, expected, atol=1e-6)
    assert loaded.last_kept == model.last_kept


def test_baseline_methods(tiny_classifier, padded_batch):
    ids, mask = padded_batch
    model = harness.prune(tiny_classifier(), method="truncation", speedup=2.0)
    model(ids, attention_mask=mask)
    for layer in model.last_kept:
        assert layer[0] == list(range(len(layer[0])))
    model = harness.prune(model, method="random", speedup=2.0)
    model(ids, attention_mask=mask)
    assert model.pruning.method == "random"


def test_unknown_method_and_unsupported_model(tiny_classifier):
    with pytest.raises(HarnessError, match="valid methods: acc, random, truncation"):
        harness.prune(tiny_classifier(), method="nope")
    with pytest.raises(HarnessError, match="cannot prune a Linear"):
        harness.prune(torch.nn.Linear(2, 2))


def test_causal_acc_averages_over_queries_that_see_each_key():
    torch.manual_seed(0)
    logits = torch.randn(1, 2, 5, 5).masked_fill(torch.ones(5, 5, dtype=torch.bool).triu(1), float("-inf"))
    probs = logits.softmax(-1)
    valid = torch.tensor([[True, True, True, True, False]])
    scores = acc_scores(ScoreInputs(valid, torch.arange(5).unsqueeze(0), probs, causal=True))
    for j in range(4):
        expected = probs[0, :, j:4, j].mean()  # valid queries i >= j, all heads
        assert torch.allclose(scores[0, j], expected, atol=1e-6)


def test_protected_tail_is_kept_in_every_layer(tiny_classifier, padded_batch):
    model = harness.prune(tiny_classifier(), speedup=2.4)
    ids, mask = padded_batch
    lengths = mask.sum(dim=1).tolist()
    with model.harness_pruner.protect_tail([3, 2, 1]):
        model(ids, attention_mask=mask)
    for b, (n, tail) in enumerate(zip(lengths, [3, 2, 1])):
        for layer in model.last_kept:
            assert set(range(n - tail, n)) | {0} <= set(layer[b])
    assert model.harness_pruner.tail is None
