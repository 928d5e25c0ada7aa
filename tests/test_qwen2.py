"""Qwen2, the decoder family written as its differences only (``harness/models/qwen2.py`` on
``decoder.RotaryDecoder``): equality with stock transformers at speedup 1, generation through the KV
cache, pruning at speedup 2, prefill methods that serve it by kind without naming it; and the shared
log(size) bias of merging, which every decoder family's drop layer now gets from the layer loop."""

import copy

import pytest
import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen2ForSequenceClassification,
)

import harness
from harness.contracts.family import LayerCall, Tokens
from harness.contracts.flops import Schedule, counts_for_speedup
from harness.models import family_for, stack
from harness.models.compat import output_cache
from harness.pruning.methods import METHODS
from harness.registry import HarnessError

VOCAB = 97
SCHEDULE = Schedule(protected=2, min_keep=16)  # decoder defaults: sink and last token, floor of 16
PREFILL_METHODS = ["last-token", "last-token-pool", "gemfilter", "acc-recent"]


def qwen2_config(layers=4, **overrides):
    sizes = {
        "hidden_size": 64,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 128,
        "vocab_size": VOCAB,
        "max_position_embeddings": 256,
    }
    return Qwen2Config(**sizes, bos_token_id=1, eos_token_id=2, pad_token_id=0, **overrides)


def qwen2(implementation="sdpa", cls=Qwen2ForCausalLM, layers=4):
    torch.manual_seed(0)
    model = cls._from_config(qwen2_config(layers), attn_implementation=implementation).eval()
    for layer in model.model.layers:  # the q/k/v biases start at zero: give them weight, so they are tested
        for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
            torch.nn.init.normal_(proj.bias, std=0.5)
    return model


def left_padded(lengths=(40, 29, 17)):
    torch.manual_seed(1)
    width = max(lengths)
    ids, mask = (
        torch.zeros(len(lengths), width, dtype=torch.long),
        torch.zeros(len(lengths), width, dtype=torch.long),
    )
    for row, n in enumerate(lengths):
        ids[row, width - n :], mask[row, width - n :] = torch.randint(3, VOCAB, (n,)), 1
    return ids, mask


def test_qwen2_is_served_by_its_own_family():
    assert family_for(qwen2()).name == "qwen2"
    assert harness.models.family_of_model_type("qwen2", "a checkpoint").name == "qwen2"


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_speedup_one_equals_stock(implementation, padding_side):
    stock = qwen2(implementation)
    ids, mask = left_padded()
    if padding_side == "right":
        ids, mask = ids.flip(1), mask.flip(1)
    expected = stock(ids, attention_mask=mask).logits
    got = harness.prune(copy.deepcopy(stock), speedup=1.0)(ids, attention_mask=mask).logits
    assert torch.allclose(got[mask.bool()], expected[mask.bool()], atol=1e-5)


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_generation_at_speedup_one_equals_stock_greedy(implementation):
    stock = qwen2(implementation)
    model = harness.prune(copy.deepcopy(stock), speedup=1.0)
    ids, mask = left_padded()
    settings = {"attention_mask": mask, "max_new_tokens": 8, "do_sample": False, "pad_token_id": 0}
    assert torch.equal(model.generate(ids, **settings), stock.generate(ids, **settings))


def test_speedup_two_keeps_fewer_tokens_and_decodes_from_the_pruned_cache():
    model = harness.prune(qwen2(), speedup=2.0)
    torch.manual_seed(2)
    ids, n = torch.randint(3, VOCAB, (1, 64)), 64
    first = model(ids).logits[0, -1].argmax()
    kept = [len(layer[0]) for layer in model.last_kept]
    assert kept == list(counts_for_speedup(model.arch_spec, n, 2.0, SCHEDULE)) and kept[-1] < n
    assert model.last_forward.realised_speedup >= 2.0 - 1e-6
    out = model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=0, return_dict_in_generate=True)
    assert out.sequences[0, n] == first
    cache = output_cache(
        out
    )  # each layer cached the tokens that entered it, then the 3 decoded before the last
    assert [cache.layers[i].keys.shape[-2] for i in range(4)] == [k + 3 for k in [n, *kept[:-1]]]


@pytest.mark.parametrize("method", PREFILL_METHODS)
def test_prefill_methods_serve_qwen2_by_kind(method):
    """No method names qwen2 (nor any decoder family): they declare the kind and serve every decoder."""
    assert METHODS.get(method).families is None and METHODS.get(method).kinds == ("decoder",)
    model = harness.prune(qwen2(), method=method, speedup=2.0, min_keep=0)
    ids, mask = left_padded()
    out = model.generate(ids, attention_mask=mask, max_new_tokens=3, do_sample=False, pad_token_id=0)
    assert out.shape == (3, ids.shape[1] + 3)
    for row, n in enumerate(mask.sum(dim=1).tolist()):
        first, last = ids.shape[1] - n, ids.shape[1] - 1
        assert all(first in layer[row] and last in layer[row] for layer in model.last_kept)
        assert len(model.last_kept[-1][row]) < n


def test_classifier_equals_stock_at_speedup_one_and_trains_at_two():
    stock = qwen2(cls=Qwen2ForSequenceClassification)
    ids, mask = left_padded()
    model = harness.prune(copy.deepcopy(stock), speedup=1.0)
    assert torch.allclose(
        model(ids, attention_mask=mask).logits, stock(ids, attention_mask=mask).logits, atol=1e-5
    )
    model.set_speedup(2.0)
    out = model.train()(ids, attention_mask=mask, labels=torch.tensor([0, 1, 0]))
    out.loss.backward()
    assert torch.isfinite(out.logits).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_refusals_are_one_line():
    sliding = Qwen2ForCausalLM(
        qwen2_config(layers=2, use_sliding_window=True, sliding_window=8, max_window_layers=1)
    )
    with pytest.raises(HarnessError, match="sliding-window"):
        harness.prune(sliding)
    with pytest.raises(HarnessError, match="method 'tome' prunes encoder models, not 'qwen2' ones"):
        harness.prune(qwen2(), method="tome")


def test_a_sweep_refuses_a_method_of_another_kind_up_front():
    from harness.runners.sweep import SweepConfig

    with pytest.raises(
        HarnessError, match="minilm: method 'last-token' prunes decoder models, not 'bert' ones"
    ):
        SweepConfig(models=["minilm"], methods=["last-token"]).validate()


# --- merging's log(size) bias: the shared layer loop's, for every family --------------------------


def one_layer(family):
    torch.manual_seed(0)
    if family == "gpt2":
        return GPT2LMHeadModel(
            GPT2Config(n_embd=64, n_layer=1, n_head=4, vocab_size=VOCAB, n_positions=64)
        ).eval()
    if family == "llama":
        return LlamaForCausalLM(
            LlamaConfig(
                hidden_size=64,
                num_hidden_layers=1,
                num_attention_heads=4,
                num_key_value_heads=2,
                intermediate_size=128,
                vocab_size=VOCAB,
            )
        ).eval()
    return qwen2(layers=1)


def weighted_layer(model, ids, weight):
    """The model's layer through the shared loop, on word-vectors that carry ``weight``, then its final norm."""
    base, family = model.base_model, family_for(model)
    hidden, positions = family.embed(base, ids, None, None, {})
    rotary = family.rotary(base, hidden, positions)
    call = LayerCall(
        base.harness_pruner, causal=True, implementation="eager", rotary=rotary, original_rotary=rotary
    )
    valid = torch.ones_like(ids, dtype=torch.bool)
    tokens = Tokens(valid, positions.expand_as(ids), torch.zeros_like(valid), weight)
    hidden, _, _ = stack.run_stack(family, family.stacks(base)["decoder"], hidden, tokens, call)
    return family.final_norm(base)(hidden)


@pytest.mark.parametrize("family", ["gpt2", "llama", "qwen2"])
def test_a_word_vector_of_size_two_is_attended_as_two_copies(family):
    """A merged word-vector standing for two tokens gets log 2 on its key in the drop layer of every
    family, with no code for it in the family: its output equals the stock layer's on the input with
    that token written twice (both copies at its position)."""
    stock = one_layer(family)
    model = harness.prune(copy.deepcopy(stock), speedup=1.0)
    torch.manual_seed(4)
    ids = torch.randint(3, VOCAB, (1, 12))
    weight = torch.ones(1, 12)
    weight[0, 5] = 2.0
    twice = torch.cat([ids[:, :6], ids[:, 5:]], dim=1)
    positions = torch.cat([torch.arange(6), torch.arange(5, 12)])[None]
    with torch.no_grad():
        got = weighted_layer(model, ids, weight)
        stock_hidden = stock.base_model(twice, position_ids=positions).last_hidden_state
        unweighted = weighted_layer(model, ids, torch.ones(1, 12))
    expected = torch.cat([stock_hidden[:, :5], stock_hidden[:, 6:]], dim=1)  # the later copy saw both
    assert torch.allclose(got, expected, atol=1e-5)
    assert not torch.allclose(unweighted[:, 5:], expected[:, 5:], atol=1e-3)  # the bias is what matched them


@pytest.mark.parametrize("method", ["acc", "last-token"])
def test_a_weight_bias_broadcasts_over_query_blocks_and_the_last_query_row(method):
    """log(weight) is one row for every query, (B, 1, 1, n): long inputs attend in blocks of query rows,
    and the last-query row is read at the last token; both must broadcast it, not slice past it."""
    from harness.pruning.attention import attend_and_score, with_weight

    torch.manual_seed(5)
    batch, heads, n = 2, 12, 300  # 12 heads x 300 keys: more than one block of query rows
    query, key, value = (torch.randn(batch, heads, n, 8) for _ in range(3))
    valid, positions = torch.ones(batch, n, dtype=torch.bool), torch.arange(n).expand(batch, n)
    row = with_weight(None, torch.rand(batch, n) + 0.5)
    results = [
        attend_and_score(
            query, key, value, valid, positions, METHODS.get(method), scaling=0.3, causal=True, bias=bias
        )
        for bias in (row, row.expand(batch, heads, n, n).contiguous())
    ]
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(*results))
