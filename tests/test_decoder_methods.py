"""Decoder prefill baselines (last-token, last-token-pool, gemfilter, acc-recent, truncation, random) on a tiny
random Llama: selections against stock attention probabilities, protected first and last tokens, equality with
stock at speedup 1, kept counts against the budget, gemfilter's selection pass in its FLOPs, generation, and
lm-eval answers that never steer the context's selection."""

import copy

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import harness
from harness.contracts.flops import Schedule, counts_for_speedup, forward_flops
from harness.measure.flop_count import count_flops
from harness.models.compat import cache_kwargs, output_cache
from harness.pruning.methods.acc_recent import ramp_weights
from harness.pruning.methods.gemfilter import selected_count, selection_flops

VOCAB, LAYERS = 97, 4
DECODER_METHODS = ["last-token", "last-token-pool", "gemfilter", "acc-recent", "truncation", "random"]
SCHEDULE = Schedule(protected=2, min_keep=16)  # decoder defaults: sink and last token, floor of 16


def llama(implementation="eager"):
    config = LlamaConfig(
        hidden_size=64,
        num_hidden_layers=LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        vocab_size=VOCAB,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM._from_config(config, attn_implementation=implementation).eval()


def prompt(n=48, seed=1):
    torch.manual_seed(seed)
    return torch.randint(3, VOCAB, (1, n))


def left_padded(lengths=(40, 29, 17)):
    prompts = [prompt(n, seed=n)[0] for n in lengths]
    width = max(lengths)
    ids, mask = (
        torch.zeros(len(prompts), width, dtype=torch.long),
        torch.zeros(len(prompts), width, dtype=torch.long),
    )
    for row, p in enumerate(prompts):
        ids[row, width - len(p) :], mask[row, width - len(p) :] = p, 1
    return prompts, ids, mask


def stock_scores(method, weights, positions):
    """An independent score per token from one layer's stock eager probabilities (1, H, n, n)."""
    p = weights[0]
    if method == "last-token":
        return p[:, -1].mean(dim=0)
    if method == "last-token-pool":  # the largest last-row score within 3 places
        row = p[:, -1].mean(dim=0)
        return torch.stack([row[max(0, j - 3) : j + 4].max() for j in range(len(row))])
    if method == "acc-recent":
        w = torch.arange(1, p.shape[-1] + 1, dtype=p.dtype) / p.shape[-1]
        return (p * w[None, :, None]).sum(dim=(0, 1)) / p.shape[0] / w.flip(0).cumsum(0).flip(0)
    return positions.to(p.dtype)  # truncation: the most recent


def reference_kept(stock, method, ids, speedup):
    """Layer by layer through the stock Llama layers: which positions each layer keeps."""
    base, n = stock.base_model, ids.shape[1]
    counts = counts_for_speedup(harness.models.family_for(stock).arch_spec(stock), n, speedup, SCHEDULE)
    hidden, positions = base.embed_tokens(ids), torch.arange(n)
    cos, sin = base.rotary_emb(hidden, position_ids=positions[None])
    kept_per_layer = []
    for layer, keep in zip(base.layers, counts):
        size = len(positions)
        mask = torch.full((size, size), torch.finfo(torch.float32).min).triu(1)[None, None]
        rotary = (cos[:, positions], sin[:, positions])
        _, weights = layer.self_attn(
            layer.input_layernorm(hidden), position_embeddings=rotary, attention_mask=mask
        )
        out = layer(hidden, attention_mask=mask, position_embeddings=rotary)
        score = stock_scores(method, weights, positions)
        score[0] = score[-1] = float("inf")
        kept = score.topk(keep).indices.sort().values
        hidden, positions = out[:, kept], positions[kept]
        kept_per_layer.append(positions.tolist())
    return kept_per_layer


@pytest.mark.parametrize("method", ["last-token", "last-token-pool", "acc-recent", "truncation"])
@pytest.mark.parametrize("speedup", [1.5, 2.0])
def test_progressive_selection_matches_stock_attention(method, speedup):
    stock = llama()
    model = harness.prune(copy.deepcopy(stock), method=method, speedup=speedup)
    ids = prompt()
    with torch.no_grad():
        model(ids)
        assert [layer[0] for layer in model.last_kept] == reference_kept(stock, method, ids, speedup)


def test_last_token_scores_in_the_layer_match_its_last_probability_row():
    """The one-row scores equal the last row of the stock probabilities (not just their ranking)."""
    from harness.pruning.attention import attend_and_score
    from harness.pruning.methods import METHODS

    stock, ids = llama(), prompt()
    layer, base = stock.base_model.layers[0], stock.base_model
    with torch.no_grad():
        weights = stock(ids, output_attentions=True).attentions[0]
        normed = layer.input_layernorm(base.embed_tokens(ids))
        cos, sin = base.rotary_emb(normed, position_ids=torch.arange(48)[None])
        attn = layer.self_attn
        q, k, v = (
            proj(normed).view(1, 48, -1, attn.head_dim).transpose(1, 2)
            for proj in (attn.q_proj, attn.k_proj, attn.v_proj)
        )
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, repeat_kv

        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        groups = attn.num_key_value_groups
        _, scores = attend_and_score(
            q,
            repeat_kv(k, groups),
            repeat_kv(v, groups),
            torch.ones(1, 48, dtype=torch.bool),
            torch.arange(48)[None],
            METHODS.get("last-token"),
            scaling=attn.scaling,
            causal=True,
        )
    assert torch.allclose(scores[0], weights[0, :, -1].mean(dim=0), atol=1e-6)


@pytest.mark.parametrize("speedup", [2.0, 2.5])
def test_gemfilter_selects_by_the_filter_layers_last_row_and_reruns_stock(speedup):
    stock = llama()
    model = harness.prune(copy.deepcopy(stock), method="gemfilter", speedup=speedup, min_keep=0)
    ids, n = prompt(), 48
    spec = model.arch_spec
    layer = model.pruning_method.filter_layer(spec)
    k = selected_count(spec, n, speedup, layer, 2)
    with torch.no_grad():
        logits = model(ids).logits
        row = stock(ids, output_attentions=True).attentions[layer][0, :, -1].mean(dim=0)
        row[0] = row[-1] = float("inf")
        selected = row.topk(k).indices.sort().values
        again = stock(
            ids[:, selected], position_ids=selected[None]
        ).logits  # the whole model, original positions
    assert model.last_kept == [[selected.tolist()]] * LAYERS
    assert torch.allclose(logits[0, -1], again[0, -1], atol=1e-5)
    assert torch.isnan(logits[0, 1]).all() == (1 not in selected.tolist())


@pytest.mark.parametrize("method", DECODER_METHODS)
@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_speedup_one_equals_stock(method, implementation):
    stock = llama(implementation)
    _, ids, mask = left_padded()
    model = harness.prune(copy.deepcopy(stock), method=method, speedup=2.0)
    model(ids, attention_mask=mask)  # a pruned forward first: nothing of it may linger
    model.set_speedup(1.0)
    got, expected = model(ids, attention_mask=mask).logits, stock(ids, attention_mask=mask).logits
    assert torch.allclose(got[mask.bool()], expected[mask.bool()], atol=1e-5)
    assert model.last_forward.realised_speedup == pytest.approx(1.0)


@pytest.mark.parametrize("method", DECODER_METHODS)
@pytest.mark.parametrize("speedup", [1.5, 2.0])
def test_protected_first_and_last_tokens_and_counts_match_the_budget(method, speedup):
    model = harness.prune(llama("sdpa"), method=method, speedup=speedup)
    _, ids, mask = left_padded()
    model(ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0))
    spec = model.arch_spec
    for row, n in enumerate(mask.sum(dim=1).tolist()):
        first, last = ids.shape[1] - n, ids.shape[1] - 1
        kept = [layer[row] for layer in model.last_kept]
        assert all(first in layer and last in layer for layer in kept), (method, row)
        if method == "gemfilter":
            expected = [
                selected_count(spec, n, speedup, model.pruning_method.filter_layer(spec), 16)
            ] * LAYERS
        else:
            expected = list(counts_for_speedup(spec, n, speedup, SCHEDULE))
        assert [len(layer) for layer in kept] == expected, (method, row)
    assert model.last_forward.realised_speedup >= speedup - 1e-6 or model.last_forward.clamped


@pytest.mark.parametrize(
    "method", ["acc", "acc-recent", "acc-vnorm", "last-token", "last-token-pool", "gemfilter"]
)
def test_an_answer_scored_with_its_context_never_steers_which_context_tokens_are_kept(method):
    """lm-eval feeds a continuation in the same forward as its context: the answer's tokens are kept,
    but the context is pruned as by its own prefill, whatever the answer says."""
    model = harness.prune(llama(), method=method, speedup=2.0)
    context = prompt(40)
    answers = [
        torch.randint(3, VOCAB, (1, 6), generator=torch.Generator().manual_seed(seed)) for seed in (5, 6)
    ]
    kept = []
    for answer in answers:
        with torch.no_grad(), model.protect_tail([6]):
            model(torch.cat([context, answer[:, :-1]], dim=1))
        kept.append([[p for p in layer[0] if p < 40] for layer in model.last_kept])
        assert all(set(range(39, 45)) <= set(layer[0]) for layer in model.last_kept)  # the answer is kept
    assert kept[0] == kept[1]
    if method == "last-token":  # the first layer selects by the context's last row of stock attention
        with torch.no_grad():
            row = llama()(torch.cat([context, answers[0][:, :-1]], dim=1), output_attentions=True).attentions[
                0
            ][0, :, 39]
        score = row.mean(dim=0)[:39]
        score[0] = float("inf")
        keep = len(model.last_kept[0][0]) - 6  # the tail's six, the context's last token among them
        assert kept[0][0] == sorted(score.topk(keep).indices.tolist() + [39])


def test_gemfilter_flops_count_the_selection_pass():
    model = harness.prune(llama("sdpa"), method="gemfilter", speedup=2.0)
    ids, n = prompt(200), 200
    spec = model.arch_spec
    layer = model.pruning_method.filter_layer(spec)
    measured = count_flops(lambda: model(ids))
    k = len(model.last_kept[0][0])
    analytic = model.last_forward.pruned_flops
    assert analytic == selection_flops(spec, n, k, layer) + forward_flops(spec, k) > forward_flops(spec, k)
    assert measured == pytest.approx(analytic, rel=0.02)
    assert forward_flops(spec, n) / analytic == pytest.approx(2.0, rel=0.05)


@pytest.mark.parametrize("method", ["last-token", "gemfilter", "acc-recent", "truncation"])
def test_pruned_generation_of_a_padded_batch_equals_each_prompt_alone(method):
    model = harness.prune(llama("sdpa"), method=method, speedup=2.0, min_keep=0)
    prompts, ids, mask = left_padded()
    settings = dict(max_new_tokens=5, do_sample=False, pad_token_id=0)
    together = model.generate(ids, attention_mask=mask, **settings)[:, ids.shape[1] :]
    assert all(len(kept) < len(p) for kept, p in zip(model.last_kept[-1], prompts))  # every row pruned
    for row, p in enumerate(prompts):
        alone = model.generate(p[None], **settings)[0, len(p) :]
        assert torch.equal(together[row], alone), (method, row)


@pytest.mark.parametrize("method", DECODER_METHODS)
def test_generation_after_pruning_starts_from_the_pruned_prefill(method):
    model = harness.prune(llama("sdpa"), method=method, speedup=2.0)
    ids = prompt(40)
    first = model(ids).logits[0, -1].argmax()
    out = model.generate(
        ids,
        max_new_tokens=4,
        do_sample=False,
        pad_token_id=0,
        return_dict_in_generate=True,
        output_scores=True,
    )
    assert out.sequences[0, 40] == first
    assert all(torch.isfinite(score).all() for score in out.scores)


def test_gemfilter_decoding_continues_from_the_prompt_length():
    """The first layer's cache holds only the selection; a step without position ids still takes position n."""
    model = harness.prune(llama("sdpa"), method="gemfilter", speedup=2.0, min_keep=0)
    ids, step = prompt(40), torch.tensor([[5]])

    def next_logits(**position):
        with torch.no_grad():
            cache = output_cache(model(ids, use_cache=True))
            return model(step, use_cache=True, **cache_kwargs(cache), **position).logits

    implicit = next_logits()
    assert len(model.last_kept[0][0]) < 40  # the first layer cached a selection
    assert torch.allclose(implicit, next_logits(position_ids=torch.tensor([[40]])), atol=1e-6)


def test_decoder_methods_refuse_encoders(tiny_classifier):
    from harness.registry import HarnessError

    for method in ("last-token", "gemfilter", "acc-recent"):
        with pytest.raises(HarnessError, match=method):
            harness.prune(tiny_classifier(), method=method, speedup=2.0)


def test_ramp_weights_rank_valid_queries_only():
    valid = torch.tensor([[False, True, True, True, False]])
    assert torch.allclose(ramp_weights(valid), torch.tensor([[0.0, 1 / 3, 2 / 3, 1.0, 0.0]]))


@pytest.mark.parametrize("method", ["acc", "truncation", "gemfilter"])
def test_fused_causal_kernel_after_a_drop_matches_the_explicit_mask(method, monkeypatch):
    """Unpadded kept tokens under ``sdpa`` run the fused causal kernel with no mask (stock layers after a
    drop, a non-scoring drop layer's context, GemFilter's second pass); the logits, the kept positions
    and the generated tokens are those of the explicit lower-triangle mask, and with left padding the
    explicit mask stays."""
    from harness.pruning import attention

    model = harness.prune(llama("sdpa"), method=method, speedup=2.0)
    ids = prompt(64)
    _, padded, mask = left_padded()

    def run():
        with torch.no_grad():
            logits = model(ids).logits
            kept = copy.deepcopy(model.last_kept)
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, do_sample=False)
            padded_logits = model(padded, attention_mask=mask).logits
        return logits, kept, out, padded_logits

    fused = run()
    seen = []
    monkeypatch.setattr(attention, "fused_causal", lambda *args: seen.append(args) or False)
    explicit = run()
    assert seen  # the explicit path really ran
    torch.testing.assert_close(
        fused[0], explicit[0], rtol=1e-4, atol=1e-4, equal_nan=True
    )  # NaN: dropped rows
    assert fused[1] == explicit[1] and torch.equal(fused[2], explicit[2])
    torch.testing.assert_close(fused[3], explicit[3], rtol=1e-4, atol=1e-4, equal_nan=True)
