"""The long-context task's builder and the kept-position histograms (harness positions)."""

import importlib.util

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import harness
from harness.report.positions import histogram, kept_positions, plot_positions, positions_by_method, summary
from harness.runners.lm_eval_bridge import TASKS_DIR

_SPEC = importlib.util.spec_from_file_location("offline_data", TASKS_DIR / "offline_data.py")
offline_data = importlib.util.module_from_spec(
    _SPEC
)  # the task files' data hooks, where the harness installed them
_SPEC.loader.exec_module(offline_data)


def sentences(count=200):
    return [f"review text number {i} " + "word " * (i % 7) for i in range(count)], [
        i % 3 == 0 for i in range(count)
    ]


def test_long_items_ask_about_an_early_review_with_alternating_labels():
    text, labels = sentences()
    labels = [int(label) for label in labels]
    items = offline_data.long_reviews(text, labels, 12, seed=3, chars=(900, 1200))
    assert items == offline_data.long_reviews(text, labels, 12, seed=3, chars=(900, 1200))  # seeded
    for index, item in enumerate(items):
        lines = item["reviews"].split("\n")
        assert len(lines) == item["count"] and len(set(lines)) == item["count"]
        assert item["review"] <= max(1, item["count"] // 2)  # in the first half: far from the question
        asked = lines[item["review"] - 1]
        assert asked.startswith(f"Review #{item['review']}: ")
        assert labels[text.index(asked.split(": ", 1)[1])] == item["label"] == index % 2
        assert sum(len(line.split(": ", 1)[1]) for line in lines) >= 900


def test_recall_items_cue_one_early_review_and_continue_it_word_for_word():
    text, _ = sentences()
    text = [f"{line} {i} tail words here" for i, line in enumerate(text)]  # every review has its own cue
    items = offline_data.recall_reviews(text, 12, seed=3, chars=(900, 1200), cue_words=4, recall_words=3)
    assert items == offline_data.recall_reviews(
        text, 12, seed=3, chars=(900, 1200), cue_words=4, recall_words=3
    )
    for item in items:
        lines = item["reviews"].split("\n")
        assert item["review"] <= max(1, item["count"] // 2)  # in the first half: far from the end
        asked = lines[item["review"] - 1].split(": ", 1)[1]
        assert item["reviews"].count(item["cue"]) == 1  # the cue points at one place in the context
        assert asked.startswith(item["cue"] + item["continuation"])
        assert item["cue"].split() == asked.split()[:4] and len(item["continuation"].split()) == 3
    scores = offline_data.recall_scores(items[0], [(-6.0, True)])
    assert scores["acc"] == 1.0 and scores["word_perplexity"] == (-6.0, 3)


def test_long_docs_must_be_a_positive_count():
    from harness.registry import HarnessError

    with pytest.raises(HarnessError, match="long_docs must be a whole number >= 1"):
        offline_data.rt_polarity_long(long_docs="many")
    with pytest.raises(HarnessError, match="long_docs must be a whole number >= 1"):
        offline_data.rt_polarity_recall(long_docs=0)


def tiny_llama():
    config = LlamaConfig(
        hidden_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        vocab_size=97,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM._from_config(config, attn_implementation="sdpa").eval()


def test_kept_positions_are_the_models_kept_tokens_relative_to_the_prompt():
    model = harness.prune(tiny_llama(), method="truncation", speedup=2.0, min_keep=0)
    prompts = [list(range(3, 43)), list(range(3, 24))]
    layers = kept_positions(model, prompts)
    model(input_ids=torch.tensor([prompts[1]]))
    assert len(layers) == 4
    assert layers[-1][-len(model.last_kept[-1][0]) :] == [p / 20 for p in model.last_kept[-1][0]]
    assert 0.0 in layers[-1] and 1.0 in layers[-1]  # the protected first and last tokens
    assert min(p for p in layers[-1] if p > 0) > 0.5  # truncation keeps the most recent tokens


def test_position_histograms_are_drawn_one_panel_per_layer(tmp_path):
    by_method = positions_by_method(
        tiny_llama(), ["acc", "last-token", "gemfilter"], 2.0, [list(range(3, 60)), list(range(10, 50))]
    )
    assert all(len(layers) == 4 for layers in by_method.values())
    assert histogram([0.05, 0.05, 0.95, 1.0]).tolist() == [0.5] + [0.0] * 8 + [0.5]
    numbers = summary(by_method)
    assert set(numbers) == {"acc", "last-token", "gemfilter"} and all(
        0 <= v["mean"] <= 1 for v in numbers.values()
    )
    paths = plot_positions(by_method, tmp_path, "tiny", "positions_tiny")
    assert sorted(p.name for p in paths) == ["positions_tiny.png", "positions_tiny.svg"]
    assert all(p.stat().st_size > 0 for p in paths)
    assert (tmp_path / "positions_tiny.svg").read_text().count("layer ") >= 4


@pytest.mark.parametrize(
    "argv, message",
    [
        (["positions", "--model", "minilm"], "harness positions traces decoders; 'minilm' is not one"),
        (["positions", "--speedup", "fast"], "speedup must be a number >= 1, got 'fast'"),
        (["positions", "--methods", "acc,nope"], "unknown method 'nope'"),
        (["positions", "--limit", "0"], "--limit must be a positive integer, got 0"),
    ],
)
def test_positions_bad_input_is_one_line(capsys, argv, message):
    from harness.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
