"""ACC pruning of T5 encoder-decoders (Flan-T5's architecture, tiny random configs): equivalence with stock,
kept positions against an independent reference, the relative position bias, generation, FLOPs,
save/load, the seq2seq lm-eval backend."""

import copy

import pytest
import torch
from conftest import same_as_stock
from transformers import T5Config, T5ForConditionalGeneration

import harness
from harness.contracts.flops import forward_flops
from harness.measure.flop_count import count_flops
from harness.models.t5 import gather_bias
from harness.registry import HarnessError

VOCAB = 97


def tiny_t5(implementation="sdpa", vocab=VOCAB, layers=6):
    """6 encoder and 3 decoder layers, gated-GELU like Flan-T5; few buckets so that the bias varies a lot."""
    config = T5Config(
        d_model=64,
        d_ff=96,
        num_layers=layers,
        num_decoder_layers=3,
        num_heads=4,
        d_kv=16,
        vocab_size=vocab,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=20,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    torch.manual_seed(0)
    return T5ForConditionalGeneration._from_config(config, attn_implementation=implementation).eval()


def padded(side="right"):
    """Three inputs of 24, 15 and 6 tokens, each ending in </s> (1), padded with 0 on ``side``."""
    torch.manual_seed(1)
    ids, mask = torch.zeros(3, 24, dtype=torch.long), torch.zeros(3, 24, dtype=torch.long)
    for row, length in enumerate((24, 15, 6)):
        span = slice(24 - length, 24) if side == "left" else slice(0, length)
        ids[row, span], mask[row, span] = torch.randint(3, VOCAB, (length,)), 1
        ids[row, span.stop - 1] = 1
    return ids, mask


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_speedup_one_equals_stock(implementation, side, dtype):
    stock = tiny_t5(implementation).to(dtype)
    model = harness.prune(copy.deepcopy(stock), speedup=1.0)
    ids, mask = padded(side)
    decoder = torch.randint(2, VOCAB, (3, 5))
    expected = stock(ids, attention_mask=mask, decoder_input_ids=decoder).logits
    same_as_stock(model(ids, attention_mask=mask, decoder_input_ids=decoder).logits, expected)
    settings = dict(attention_mask=mask, max_new_tokens=6, do_sample=False)
    assert torch.equal(model.generate(ids, **settings), stock.generate(ids, **settings))


def reference(stock, ids, counts):
    """Independent encoder-side ACC on one unpadded input, from the stock blocks and their eager attention.

    Dropping a word-vector after layer l's attention is the same, for the kept ones, as masking it as a
    key in every later layer of the stock encoder: each kept token's stream only ever reads the keys it
    attends.  The stock blocks then use the bias of the original positions by construction.  Returns the
    kept positions per layer and the final states of the last layer's kept tokens."""
    encoder = stock.encoder
    n = ids.shape[1]
    captured = []
    hook = (
        encoder.block[0]
        .layer[0]
        .SelfAttention.register_forward_hook(lambda m, a, out: captured.append(out[2]))
    )
    handles = [hook] + [
        block.layer[0].SelfAttention.register_forward_hook(lambda m, a, out: captured.append(out[2]))
        for block in encoder.block[1:]
    ]
    alive = torch.ones(n, dtype=torch.bool)
    hidden, bias, kept_per_layer = encoder.embed_tokens(ids), None, []
    try:
        for block, keep in zip(encoder.block, counts):
            mask = torch.zeros(1, 1, 1, n).masked_fill(~alive, torch.finfo(torch.float32).min)
            hidden, bias, _ = block(hidden, mask, bias)
            probs = captured.pop()[0]  # (H, n, n)
            acc = probs[:, alive].sum(dim=(0, 1)) / (probs.shape[0] * int(alive.sum()))
            acc = acc.masked_fill(~alive, float("-inf"))
            acc[n - 1] = float("inf")  # </s>: protect_last=1
            alive = torch.zeros(n, dtype=torch.bool)
            alive[acc.topk(keep).indices] = True
            kept_per_layer.append(alive.nonzero().flatten().tolist())
    finally:
        for handle in handles:
            handle.remove()
    return kept_per_layer, encoder.final_layer_norm(hidden)[0, alive]


@pytest.mark.parametrize("speedup", [1.5, 2.0, 3.0])
def test_kept_positions_and_states_match_the_reference(speedup):
    stock = tiny_t5("eager")
    model = harness.prune(copy.deepcopy(stock), speedup=speedup)
    ids, _ = padded()
    out = model.encoder(input_ids=ids[:1])
    counts = [len(layer[0]) for layer in model.last_kept]
    expected_kept, expected_states = reference(stock, ids[:1], counts)
    assert [layer[0] for layer in model.last_kept] == expected_kept
    assert counts[-1] < 24
    assert torch.allclose(out.last_hidden_state[0], expected_states, atol=1e-5)
    assert out.kept_positions[0].tolist() == expected_kept[-1]


def test_bias_is_gathered_from_the_original_positions():
    attention = tiny_t5().encoder.block[0].layer[0].SelfAttention
    full = attention.compute_bias(30, 30)
    positions = torch.tensor([[0, 3, 17, 29], [2, 5, 6, 20]])
    gathered = gather_bias(full, positions)
    for b, row in enumerate(positions.tolist()):
        assert torch.equal(gathered[b], full[0][:, row][:, :, row])
    assert not torch.equal(gathered[0], attention.compute_bias(4, 4)[0])  # not the packed positions' bias


def test_padded_batch_prunes_each_sample_as_alone():
    model = harness.prune(tiny_t5(), speedup=2.0)
    ids, mask = padded()
    decoder = torch.zeros(3, 1, dtype=torch.long)
    together = model(ids, attention_mask=mask, decoder_input_ids=decoder).logits
    kept = model.last_kept
    for row, length in enumerate((24, 15, 6)):
        alone = model(ids[row : row + 1, :length], decoder_input_ids=decoder[:1]).logits
        assert [layer[row] for layer in kept] == [layer[0] for layer in model.last_kept]
        assert torch.allclose(together[row], alone[0], atol=1e-5)


def test_decoder_cross_attends_to_the_kept_states_only():
    model = harness.prune(tiny_t5(), speedup=3.0)
    ids, mask = padded()
    out = model(ids, attention_mask=mask, decoder_input_ids=torch.zeros(3, 2, dtype=torch.long))
    last = model.last_kept[-1]
    assert out.encoder_last_hidden_state.shape[1] == max(len(row) for row in last) < 24
    assert torch.isfinite(out.logits).all()


def test_generate_prunes_the_encoder_once():
    model = harness.prune(tiny_t5(), speedup=2.0)
    ids, mask = padded()
    calls = []
    model.encoder.register_forward_hook(lambda *args: calls.append(1))
    greedy = model.generate(
        ids,
        attention_mask=mask,
        max_new_tokens=5,
        do_sample=False,
        output_scores=True,
        return_dict_in_generate=True,
    )
    assert len(calls) == 1 and len(greedy.scores) == 5
    assert all(torch.isfinite(score).all() for score in greedy.scores)
    first = model(ids, attention_mask=mask, decoder_input_ids=torch.zeros(3, 1, dtype=torch.long)).logits[
        :, -1
    ]
    assert torch.equal(greedy.sequences[:, 1], first.argmax(-1))
    beams = model.generate(ids, attention_mask=mask, max_new_tokens=4, num_beams=3, do_sample=False)
    assert beams.shape[0] == 3 and len(calls) == 3


@pytest.mark.parametrize("speedup", [2.0, 3.0])
def test_measured_flops_match_analytic(speedup):
    model = harness.prune(tiny_t5(layers=8), speedup=speedup)
    ids = torch.randint(2, VOCAB, (2, 160))
    batch = harness.models.family_for(model).latency_inputs(model, ids)
    measured = count_flops(lambda: model(**batch))
    dense, analytic = model.harness_pruner.last_flops
    assert measured == pytest.approx(analytic, rel=0.02)
    assert dense / analytic == pytest.approx(speedup, rel=0.05)
    assert count_flops(lambda: harness.pruning.pruned_model.stock_copy(model)(**batch)) == pytest.approx(
        dense, rel=0.02
    )


def test_flop_model_counts_decoder_and_cross_attention():
    model = harness.prune(tiny_t5(), speedup=1.0)
    spec = model.arch_spec
    assert spec.decoder_layers == 3 and spec.decoder_tokens == 1 and spec.ffn_matrices == 3
    encoder_only = forward_flops(
        spec.__class__(**{**spec.__dict__, "decoder_layers": 0, "head_flops": 0}), 50
    )
    # cross-attention keys/values are projected from the kept states: fewer kept, cheaper decoder
    assert spec.decoder_flops(10) < spec.decoder_flops(50)
    assert forward_flops(spec, 50) == encoder_only + spec.decoder_flops(50) + spec.head_flops
    model.config.harness_decoder_tokens = 8
    longer = harness.models.family_for(model).arch_spec(model)
    assert longer.decoder_tokens == 8 and longer.decoder_flops(50) > spec.decoder_flops(50)


def test_set_speedup_save_and_load(tmp_path):
    model = harness.prune(tiny_t5(), speedup=2.0)
    ids, mask = padded()
    decoder = torch.zeros(3, 2, dtype=torch.long)
    before = model(ids, attention_mask=mask, decoder_input_ids=decoder).logits
    model.save_pretrained(tmp_path)
    loaded = harness.from_pretrained(str(tmp_path)).eval()
    assert loaded.pruning == model.pruning and type(loaded).__name__ == "T5ForConditionalGeneration"
    assert torch.allclose(
        loaded(ids, attention_mask=mask, decoder_input_ids=decoder).logits, before, atol=1e-5
    )
    loaded.set_speedup(1.0)
    loaded(ids, attention_mask=mask, decoder_input_ids=decoder)
    assert all(len(layer[0]) == 24 for layer in loaded.last_kept)


def test_no_kept_state_is_refused():
    with pytest.raises(HarnessError, match="at least one kept encoder state"):
        harness.prune(tiny_t5(), speedup=2.0, protect_last=0)


@pytest.mark.slow
def test_lm_eval_seq2seq_backend_serves_loglikelihood_and_generation():
    """The real T5 tokenizer (pinned asset) with a tiny random T5 of its vocabulary, through the model type."""
    from lm_eval.api.instance import Instance
    from transformers import AutoTokenizer

    from harness.models.catalog import t5_tokenizer
    from harness.runners.lm_eval_bridge import PrunedLM

    tokenizer = AutoTokenizer.from_pretrained(t5_tokenizer())
    stock = tiny_t5(vocab=32128)
    requests = [
        ("Review: a dull, boring film with weak actors and a plot that goes nowhere. Is it positive?", " no"),
        ("Question: is the sky blue on a clear day, as most people would say? Answer:", " yes"),
    ]
    scored = {}
    for speedup in (1.0, 2.0):
        lm = PrunedLM(pretrained=copy.deepcopy(stock), tokenizer=tokenizer, speedup=speedup, batch_size=2)
        assert lm.backend == "seq2seq"
        scored[speedup] = [
            ll
            for ll, _ in lm.loglikelihood(
                [Instance("loglikelihood", {}, r, i) for i, r in enumerate(requests)]
            )
        ]
        texts = lm.generate_until(
            [
                Instance("generate_until", {}, (context, {"until": ["\n"], "max_gen_toks": 4}), i)
                for i, (context, _) in enumerate(requests)
            ]
        )
        assert len(texts) == 2 and all(isinstance(text, str) for text in texts)
        if speedup > 1:
            assert lm.predicted_speedup > 1.3
    from lm_eval.models.huggingface import HFLM

    reference = HFLM(pretrained=stock, tokenizer=tokenizer, batch_size=2)
    expected = [
        ll
        for ll, _ in reference.loglikelihood(
            [Instance("loglikelihood", {}, r, i) for i, r in enumerate(requests)]
        )
    ]
    assert scored[1.0] == pytest.approx(expected, abs=1e-4)
    assert scored[2.0] != pytest.approx(expected, abs=1e-4)
