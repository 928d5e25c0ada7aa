"""ACC pruning of decoders (GPT-2, Llama): equivalence, causal ACC against a reference, protection,
batch invariance, FLOPs, generation, classification heads."""

import copy

import pytest
import torch
from conftest import same_as_stock
from transformers import (
    GPT2Config,
    GPT2ForSequenceClassification,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
)

import harness
from harness.contracts.flops import Schedule, counts_for_speedup
from harness.measure.flop_count import count_flops
from harness.models.compat import output_cache

VOCAB = 97


def gpt2_config(layers=6):
    return GPT2Config(n_embd=64, n_layer=layers, n_head=4, vocab_size=VOCAB, n_positions=256, pad_token_id=0)


def llama_config(layers=6):
    return LlamaConfig(
        hidden_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        vocab_size=VOCAB,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )


CAUSAL_LMS = {"gpt2": (GPT2LMHeadModel, gpt2_config), "llama": (LlamaForCausalLM, llama_config)}
CLASSIFIERS = {
    "gpt2": (GPT2ForSequenceClassification, gpt2_config),
    "llama": (LlamaForSequenceClassification, llama_config),
}


def build(table, family, implementation="sdpa", layers=6):
    cls, config = table[family]
    torch.manual_seed(0)
    return cls._from_config(config(layers), attn_implementation=implementation).eval()


def batch(padding_side):
    torch.manual_seed(1)
    ids = torch.randint(3, VOCAB, (3, 24))
    mask = torch.ones_like(ids)
    if padding_side == "right":
        mask[1, 15:] = 0
        mask[2, 6:] = 0
    else:
        mask[1, :9] = 0
        mask[2, :18] = 0
    return ids.masked_fill(mask == 0, 0), mask


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_speedup_one_equals_stock(family, implementation, padding_side, dtype):
    stock = build(CAUSAL_LMS, family, implementation).to(dtype)
    ids, mask = batch(padding_side)
    expected = stock(ids, attention_mask=mask).logits
    got = harness.prune(copy.deepcopy(stock), speedup=1.0)(ids, attention_mask=mask).logits
    valid = mask.bool()
    same_as_stock(got[valid], expected[valid])


def reference_kept(model, family, ids, speedup):
    """Independent causal ACC on one unpadded sample from the stock layers and eager attention weights."""
    base = model.base_model
    n = ids.shape[1]
    spec = harness.models.family_for(model).arch_spec(model)
    counts = counts_for_speedup(
        spec, n, speedup, Schedule(protected=2, min_keep=16)
    )  # decoder defaults: sink and last token, floor 16
    causal = torch.full((n, n), torch.finfo(torch.float32).min).triu(1)[None, None]
    positions = torch.arange(n)
    if family == "gpt2":
        hidden = base.wte(ids) + base.wpe(positions[None])
        layers = base.h
    else:
        hidden = base.embed_tokens(ids)
        cos, sin = base.rotary_emb(hidden, position_ids=positions[None])
        layers = base.layers
    kept_per_layer = []
    for layer, keep in zip(layers, counts):
        size = len(positions)
        mask = causal[..., :size, :size]
        if family == "gpt2":
            _, weights = layer.attn(layer.ln_1(hidden), attention_mask=mask)
            out = layer(hidden, None, mask)
        else:
            rotary = (cos[:, positions], sin[:, positions])
            _, weights = layer.self_attn(
                layer.input_layernorm(hidden), position_embeddings=rotary, attention_mask=mask
            )
            out = layer(hidden, attention_mask=mask, position_embeddings=rotary)
        seen_by = torch.arange(size, 0, -1, dtype=torch.float32)  # queries i >= j
        acc = weights[0].sum(dim=(0, 1)) / (seen_by * weights.shape[1])
        acc[0] = acc[-1] = float("inf")
        kept = acc.topk(keep).indices.sort().values
        hidden, positions = out[:, kept], positions[kept]
        kept_per_layer.append(positions.tolist())
    return kept_per_layer


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("speedup", [1.5, 2.0, 3.0])
def test_causal_acc_matches_reference(family, speedup):
    stock = build(CAUSAL_LMS, family, "eager")
    model = harness.prune(copy.deepcopy(stock), speedup=speedup)
    ids, _ = batch("right")
    logits = model(ids[:1]).logits
    assert model.last_kept and [layer[0] for layer in model.last_kept] == reference_kept(
        stock, family, ids[:1], speedup
    )
    assert torch.isfinite(logits[0, -1]).all()


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_batch_invariance_and_last_token(family, padding_side):
    """Left-padded rows get position ids from the mask, as generate() does, so positions match alone."""
    model = harness.prune(build(CAUSAL_LMS, family), speedup=2.0, min_keep=0)  # rows of 6-24 tokens: no floor
    ids, mask = batch(padding_side)
    together = model(ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0)).logits
    for b in range(3):
        row = mask[b].bool()
        alone = model(ids[b : b + 1, row]).logits
        last = row.nonzero().max()
        assert torch.allclose(alone[0, -1], together[b, last], atol=1e-4)
        dropped = sorted(set(range(int(row.sum()))) - set(model.last_kept[-1][0]))
        assert dropped and torch.isnan(alone[0, dropped]).all() and torch.isfinite(alone[0, 0]).all()


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_protected_continuation_has_logits(family):
    model = harness.prune(build(CAUSAL_LMS, family), speedup=3.0, min_keep=0)
    ids, mask = batch("right")
    with model.harness_pruner.protect_tail([5, 4, 3]):
        logits = model(ids, attention_mask=mask).logits
    for b, tail in enumerate([5, 4, 3]):
        n = int(mask[b].sum())
        assert torch.isfinite(logits[b, n - tail : n]).all()
    assert torch.isnan(logits[0, 1:10]).any()


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("speedup", [1.0, 2.0, 4.0])
def test_measured_flops_match_analytic(family, speedup):
    model = harness.prune(build(CAUSAL_LMS, family, layers=12), speedup=speedup)
    ids = torch.randint(3, VOCAB, (2, 200))
    measured = count_flops(lambda: model(ids))
    dense, analytic = model.harness_pruner.last_flops
    assert measured == pytest.approx(analytic, rel=0.02)
    assert dense / analytic == pytest.approx(speedup, rel=0.05)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_generation_at_speedup_one_matches_stock(family, implementation):
    """Left-padded prompts of 24, 15 and 6 tokens in one batch: greedy tokens equal stock's, one by one."""
    stock = build(CAUSAL_LMS, family, implementation)
    model = harness.prune(copy.deepcopy(stock), speedup=1.0)
    ids, mask = batch("left")
    settings = dict(attention_mask=mask, max_new_tokens=8, do_sample=False, pad_token_id=0)
    assert torch.equal(model.generate(ids, **settings), stock.generate(ids, **settings))


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_pruned_generation_of_a_padded_batch_equals_each_prompt_alone(family):
    """At speedup 2, every layer's cache holds a different number of tokens per row; a left-padded batch of
    different-length prompts must still decode each row exactly as that prompt decodes on its own."""
    model = harness.prune(build(CAUSAL_LMS, family), speedup=2.0, min_keep=0)
    torch.manual_seed(3)
    prompts = [torch.randint(3, VOCAB, (n,)) for n in (40, 29, 17)]
    width = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :], mask[row, width - len(prompt) :] = prompt, 1
    settings = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
    together = model.generate(ids, attention_mask=mask, **settings)[:, width:]
    assert all(len(kept) < len(prompt) for kept, prompt in zip(model.last_kept[-1], prompts))  # all pruned
    for row, prompt in enumerate(prompts):
        alone = model.generate(prompt[None], **settings)[0, len(prompt) :]
        assert torch.equal(together[row], alone)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_generation_prunes_the_prefill_only(family):
    model = harness.prune(build(CAUSAL_LMS, family), speedup=2.0)
    ids = torch.randint(3, VOCAB, (1, 40))
    first = model(ids).logits[0, -1].argmax()
    kept = [40] + [len(layer[0]) for layer in model.last_kept][:-1]  # tokens entering each layer
    out = model.generate(
        ids,
        max_new_tokens=5,
        do_sample=False,
        pad_token_id=0,
        return_dict_in_generate=True,
        output_scores=True,
    )
    assert out.sequences[0, 40] == first
    assert all(torch.isfinite(score).all() for score in out.scores)
    cache = output_cache(out)
    assert [cache.layers[i].keys.shape[-2] for i in range(6)] == [k + 4 for k in kept]
    assert kept[-1] < 40


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_classifier_trains_without_nan(family):
    model = harness.prune(build(CLASSIFIERS, family).train(), speedup=2.0)
    ids, mask = batch("right")
    out = model(ids, attention_mask=mask, labels=torch.tensor([0, 1, 0]))
    assert torch.isfinite(out.logits).all()
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_decoder_save_and_load(tmp_path):
    model = harness.prune(build(CAUSAL_LMS, "gpt2"), speedup=2.0)
    ids, mask = batch("right")
    expected = model(ids, attention_mask=mask).logits
    model.save_pretrained(tmp_path)
    loaded = harness.from_pretrained(str(tmp_path)).eval()
    assert loaded.pruning.protect_last == 1 and loaded.pruning.speedup == 2.0
    assert torch.allclose(loaded(ids, attention_mask=mask).logits, expected, atol=1e-6, equal_nan=True)
