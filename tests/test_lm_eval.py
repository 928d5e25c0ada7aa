"""The lm-eval bridge: the ``acc`` model type, its request plumbing, the offline tasks and ``harness lm-eval``.

A tiny random GPT-2 (4 layers, hidden 32) with a 320-token byte-level BPE tokenizer stands in for a real
decoder.  Tests named ``*_pruned_*`` / ``test_cli_*`` / ``test_evaluate_*`` need the pruned-decoder
adapter (``harness/models/gpt2.py``): without it ``harness.prune`` rejects a GPT2LMHeadModel and they
fail on purpose (not skipped).  ``test_bridge_protects_*`` checks the plumbing with a stand-in pruner
and runs without the adapter.
"""

from __future__ import annotations

import contextlib
import json
import math
import types

import pytest
import torch
from conftest import LM_CORPUS as CORPUS

import harness
from harness.registry import HarnessError
from harness.runners import lm_eval_bridge as bridge
from harness.runners.lm_eval_bridge import TASKS_DIR, AccLM


def _requests():
    from lm_eval.api.instance import Instance

    pairs = [
        ("Review: the movie was good and the plot was great, said nobody at all\nSentiment:", " positive"),
        ("Review: the movie was good and the plot was great, said nobody at all\nSentiment:", " negative"),
        ("Review: a dull film", " with weak actors and a plot that goes nowhere for two hours"),
        ("The council said", " the road"),
        ("", "Question: is the sky blue?"),
        # same context + continuation[:-1]: lm-eval scores them from one row (its logits cache)
        ("Review: the movie was good\nSentiment: p", "o"),
        ("Review: the movie was good\nSentiment: p", "ositive"),
    ]
    loglikelihood = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]
    texts = [" ".join(CORPUS) * 3, "a dull film"]  # the first needs several 64-token windows
    rolling = [Instance("loglikelihood_rolling", {}, (text,), i) for i, text in enumerate(texts)]
    return loglikelihood, rolling


def _stock(folder):
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=str(folder), device="cpu", batch_size=3, max_length=64)


# --- registration and options ------------------------------------------------------------------------


def test_model_type_is_registered_under_both_names():
    from lm_eval.api.registry import get_model

    assert get_model("harness") is AccLM and get_model("acc") is AccLM


@pytest.mark.parametrize(
    "args, message",
    [
        ("speedup=fast", "speedup must be a number >= 1, got 'fast'"),
        ("speedup=0.5", "speedup must be a number >= 1, got 0.5"),
        ("speedup=2,profile=steep", "unknown profile 'steep'"),
        ("speedup=2,r_min=lots", "r_min must be a number within [0, 1], got 'lots'"),
        ("speedup=2,protect_first=1.5", "protect_first must be a whole number >= 0"),
    ],
)
def test_bad_pruning_options_fail_before_the_model_loads(tiny_gpt2, monkeypatch, args, message):
    from lm_eval.models.huggingface import HFLM

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded before the options were checked")

    monkeypatch.setattr(HFLM, "__init__", no_load)
    with pytest.raises(HarnessError) as error:
        AccLM.create_from_arg_string(f"pretrained={tiny_gpt2},{args}")
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_include_path_is_added_once():
    tasks = str(TASKS_DIR)
    assert bridge._with_include_path(["--model", "acc", "--tasks", "x"]) == [
        "run",
        "--model",
        "acc",
        "--tasks",
        "x",
        "--include_path",
        tasks,
    ]
    assert bridge._with_include_path(["run", "--tasks", "x"])[-2:] == ["--include_path", tasks]
    assert bridge._with_include_path(["ls", "tasks"])[-2:] == ["--include_path", tasks]
    assert bridge._with_include_path(["run", "--include_path", "mine"]) == ["run", "--include_path", "mine"]
    assert bridge._with_include_path(["--help"]) == ["--help"]
    assert bridge._with_include_path([]) == []


def test_flatten_results():
    output = {
        "results": {
            "rt-polarity-zs": {"alias": "rt-polarity-zs", "acc,none": 0.5, "acc_stderr,none": 0.1},
            "heldout-ppl": {
                "alias": "heldout-ppl",
                "word_perplexity,none": 900.0,
                "word_perplexity_stderr,none": "N/A",
            },
        },
        "n-samples": {"rt-polarity-zs": {"original": 1276, "effective": 4}},
    }
    assert bridge.flatten_results(output) == {
        "rt-polarity-zs": {"acc": 0.5, "acc_stderr": 0.1, "n": 4},
        "heldout-ppl": {"word_perplexity": 900.0, "word_perplexity_stderr": None},
    }


# --- the request plumbing, with a stand-in pruner -----------------------------------------------------


class _StandInPruner:
    """Computes only what a pruned decoder must: valid positions inside the protected tail (else NaN)."""

    def __init__(self):
        self.tail, self.calls = None, []

    @contextlib.contextmanager
    def protect_tail(self, lengths):
        self.tail = list(lengths)
        try:
            yield
        finally:
            self.tail = None


def _stand_in_prune(model, speedup=1.0, **options):
    """The pruned model's public surface that the bridge uses (``protect_tail``, ``last_forward``), and
    nothing of a real pruner's internals: the bridge must not need them."""
    from harness.pruning.pruner import ForwardStats

    model.stand_in = pruner = _StandInPruner()
    model.protect_tail, model.last_forward = pruner.protect_tail, ForwardStats(1, 1, 0, 1)
    stock_forward = model.forward

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        out = stock_forward(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        if input_ids.shape[1] == 1:  # a generation step
            return out
        valid = attention_mask.bool() if attention_mask is not None else torch.ones_like(input_ids).bool()
        tails = torch.tensor(pruner.tail or [1] * len(input_ids)).unsqueeze(1)
        from_end = valid.sum(1, keepdim=True) - valid.long().cumsum(1)
        pruner.calls.append((tuple(input_ids.shape), valid.sum(1).tolist(), tails.flatten().tolist()))
        out.logits = out.logits.masked_fill(~(valid & (from_end < tails)).unsqueeze(-1), float("nan"))
        return out

    model.forward = types.MethodType(forward, model)
    return model


def test_bridge_protects_exactly_the_scored_positions(tiny_gpt2, monkeypatch):
    """Right padding is masked and each request's continuation is protected: with a model that computes
    nothing else, every log-likelihood is finite and equals stock lm-eval's."""
    monkeypatch.setattr(harness.api, "prune", _stand_in_prune)
    loglikelihood, rolling = _requests()
    stock = _stock(tiny_gpt2)
    acc = AccLM(pretrained=str(tiny_gpt2), batch_size=3, max_length=64, speedup=2)
    expected, got = stock.loglikelihood(loglikelihood), acc.loglikelihood(loglikelihood)
    assert [flag for _, flag in got] == [flag for _, flag in expected]
    assert [ll for ll, _ in got] == pytest.approx([ll for ll, _ in expected], abs=1e-5)
    assert all(math.isfinite(ll) for ll, _ in got)
    calls = acc.model.stand_in.calls
    assert any(min(lengths) < shape[1] for shape, lengths, _ in calls)  # some batch was padded
    assert all(tail <= length for _, lengths, tails in calls for length, tail in zip(lengths, tails))
    assert acc.loglikelihood_rolling(rolling) == pytest.approx(stock.loglikelihood_rolling(rolling), abs=1e-4)


def test_bridge_rejects_a_batch_it_cannot_match(tiny_gpt2, monkeypatch):
    monkeypatch.setattr(harness.api, "prune", _stand_in_prune)
    acc = AccLM(pretrained=str(tiny_gpt2), batch_size=2, max_length=64)
    request = bridge._Request((("a", "b"), [5, 6], [7]), [])
    with pytest.raises(HarnessError, match="lm-eval"):
        acc._batch_layout(torch.tensor([[5, 9]]), [request])


# --- the offline tasks ---------------------------------------------------------------------------------


def test_tasks_load_offline(monkeypatch):
    import datasets
    from lm_eval.tasks import TaskManager

    def no_hub(*args, **kwargs):
        raise AssertionError("a task called datasets.load_dataset")

    monkeypatch.setattr(datasets, "load_dataset", no_hub)
    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False)
    names = ["rt-polarity-zs", "boolq-zs", "heldout-ppl"]
    assert set(names) <= set(manager.all_tasks)
    loaded = manager.load(names)["tasks"] if hasattr(manager, "load") else manager.load_task_or_group(names)
    tasks = {task.config.task: task for task in loaded.values()}

    rt = tasks["rt-polarity-zs"]
    doc = rt.test_docs()[0]
    assert len(rt.test_docs()) == 1276
    assert rt.doc_to_text(doc) == f"Review: {doc['sentence']}\nSentiment:"
    assert [rt.config.target_delimiter + c for c in rt.doc_to_choice(doc)] == [" negative", " positive"]
    assert rt.doc_to_target(doc) == doc["label"]

    boolq = tasks["boolq-zs"]
    doc = boolq.validation_docs()[0]
    assert len(boolq.validation_docs()) == 3270
    assert boolq.doc_to_text(doc) == f"{doc['passage']}\nQuestion: {doc['question']}?\nAnswer:"
    assert [boolq.config.target_delimiter + c for c in boolq.doc_to_choice(doc)] == [" no", " yes"]

    ppl = tasks["heldout-ppl"]
    docs = ppl.test_docs()
    assert ppl.OUTPUT_TYPE == "loglikelihood" and len(docs) == 200
    assert len(ppl.doc_to_target(docs[0]).split()) == 32 and len(ppl.doc_to_text(docs[0]).split()) > 32
    assert {"word_perplexity", "bits_per_byte"} <= set(ppl._metric_fn_list)


# --- through the pruned decoder (needs harness/models/gpt2.py) ----------------------------------------


def test_pruned_speedup_1_matches_stock_lm_eval(tiny_gpt2):
    loglikelihood, rolling = _requests()
    stock = _stock(tiny_gpt2)
    acc = AccLM.create_from_arg_string(
        f"pretrained={tiny_gpt2},speedup=1,method=acc,profile=tilt,r_min=0,max_length=64",
        {"batch_size": 3, "device": "cpu"},
    )
    assert acc.model.pruning.speedup == 1.0
    expected, got = stock.loglikelihood(loglikelihood), acc.loglikelihood(loglikelihood)
    assert [ll for ll, _ in got] == pytest.approx([ll for ll, _ in expected], abs=1e-5)
    assert [flag for _, flag in got] == [flag for _, flag in expected]
    assert acc.loglikelihood_rolling(rolling) == pytest.approx(stock.loglikelihood_rolling(rolling), abs=1e-4)


def test_pruned_speedup_2_scores_every_request(tiny_gpt2):
    from lm_eval.api.instance import Instance

    loglikelihood, rolling = _requests()
    acc = AccLM(pretrained=str(tiny_gpt2), batch_size=3, max_length=64, speedup=2, device="cpu")
    results = acc.loglikelihood(loglikelihood)
    assert all(math.isfinite(ll) for ll, _ in results)
    # the first (longest) request has a short continuation: the adapter really pruned its context
    context, continuation = acc._encode_pair(*loglikelihood[0].args)
    valid = len(context) + len(continuation) - 1
    assert acc.model.pruning.speedup == 2.0
    assert all(math.isfinite(ll) for ll in acc.loglikelihood_rolling(rolling))
    single = AccLM(pretrained=str(tiny_gpt2), batch_size=1, max_length=64, speedup=2, device="cpu")
    single.loglikelihood(loglikelihood[:1])
    assert min(len(kept[0]) for kept in single.model.last_kept) < valid
    generated = acc.generate_until(
        [Instance("generate_until", {}, ("Review: the movie", {"until": ["\n"], "max_gen_toks": 4}), 0)]
    )
    assert len(generated) == 1 and isinstance(generated[0], str)


def _generation_requests(max_gen_toks=12):
    from lm_eval.api.instance import Instance

    prompts = [
        "Review: the movie was good and the plot was great, said nobody at all\nSentiment:",
        "Question: is the sky blue?\nAnswer:",
        "The council said",
        "Review: a dull film",
    ]
    return [
        Instance(
            "generate_until",
            {},
            (prompt, {"until": ["\n\n"], "max_gen_toks": max_gen_toks, "do_sample": False}),
            i,
        )
        for i, prompt in enumerate(prompts)
    ]


def test_pruned_speedup_1_generates_as_stock_lm_eval(tiny_gpt2):
    """lm-eval left-pads prompts of different lengths into one batch and decodes from the cache: at
    speedup 1 every answer is stock's, character for character (not merely some string)."""
    requests = _generation_requests()
    expected = _stock(tiny_gpt2).generate_until(requests)
    acc = AccLM(pretrained=str(tiny_gpt2), batch_size=3, max_length=64, speedup=1, device="cpu")
    assert acc.generate_until(requests) == expected
    assert any(len(answer) > 5 for answer in expected)  # the comparison covers real decoding steps


def test_cli_lm_eval_writes_results(tiny_gpt2, tmp_path, capsys):
    from harness.cli import main

    code = main(
        [
            "lm-eval",
            "--model",
            "acc",
            "--model_args",
            f"pretrained={tiny_gpt2},speedup=1",
            "--tasks",
            "rt-polarity-zs",
            "--limit",
            "4",
            "--device",
            "cpu",
            "--output_path",
            str(tmp_path),
        ]
    )
    assert code == 0, capsys.readouterr().err[-2000:]
    files = list(tmp_path.rglob("results_*.json"))
    assert len(files) == 1
    results = json.loads(files[0].read_text())
    assert results["config"]["model"] == "acc"
    assert 0.0 <= results["results"]["rt-polarity-zs"]["acc,none"] <= 1.0
    assert results["n-samples"]["rt-polarity-zs"]["effective"] == 4


def test_cli_lm_eval_bad_speedup_is_one_line(tiny_gpt2, tmp_path, capsys):
    from harness.cli import main

    code = main(
        [
            "lm-eval",
            "--model",
            "acc",
            "--model_args",
            f"pretrained={tiny_gpt2},speedup=fast",
            "--tasks",
            "rt-polarity-zs",
            "--limit",
            "2",
            "--device",
            "cpu",
        ]
    )
    assert code == 2
    assert "harness: error: speedup must be a number >= 1, got 'fast'" in capsys.readouterr().err


def test_evaluate_returns_metrics_and_stderrs(tiny_gpt2):
    from transformers import AutoTokenizer, GPT2LMHeadModel

    model = GPT2LMHeadModel.from_pretrained(tiny_gpt2)
    tokenizer = AutoTokenizer.from_pretrained(tiny_gpt2)
    model = harness.prune(model, speedup=2.0)
    results = bridge.evaluate(model, tokenizer, ["rt-polarity-zs", "heldout-ppl"], batch_size=4, limit=4)
    assert set(results) == {"rt-polarity-zs", "heldout-ppl"}
    rt = results["rt-polarity-zs"]
    assert 0.0 <= rt["acc"] <= 1.0 and rt["acc_stderr"] >= 0.0 and "acc_norm" in rt and rt["n"] == 4
    ppl = results["heldout-ppl"]
    assert all(math.isfinite(ppl[name]) for name in ("word_perplexity", "bits_per_byte"))
    # the context is pruned, the 32 scored words are protected
    assert 1.2 < rt["eval_predicted_speedup"] < 2.2  # per-sample targets are met to the nearest token
    assert 1.0 < ppl["eval_predicted_speedup"] <= 2.2
    assert rt["eval_clamped"] >= 0 and ppl["eval_clamped"] >= 0
    assert model.pruning.speedup == 2.0  # evaluate keeps the caller's settings
