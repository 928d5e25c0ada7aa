"""Offline tuning of generative models (``--protocol finetune-lm``): the continuation is never eliminated,
a step learns, speedup 1 of a tuned model is a stock model with its weights, the training data never
shares a document with what is scored, and bad input is one line."""

from __future__ import annotations

import json

import pytest
import torch
from cli_checks import no_model_load, one_line_error
from transformers import (
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    T5Config,
    T5ForConditionalGeneration,
)

from harness import cli, prune
from harness.data.overlap import Documents
from harness.models.catalog import LoadedModel
from harness.registry import HarnessError
from harness.runners import lm_training, protocols
from harness.training import lm
from harness.training.lm import Example, LMTrainSettings, tune_lm

SENTENCES = [
    "the council said the new road would open in july after two years of work on the bridge",
    "a dull and boring film with weak actors and a plot that goes nowhere for two long hours",
    "the movie was good and the plot was great with a cast that clearly enjoyed every scene",
    "question is the sky blue on a clear day in the middle of summer answer yes it is",
]
EXAMPLES = [Example(" ".join(SENTENCES[i:] + SENTENCES[:i]), " and then it rained") for i in range(4)]


def _config(kind: str, vocab: int):
    if kind == "gpt2":
        return GPT2LMHeadModel, GPT2Config(vocab_size=vocab, n_embd=32, n_layer=4, n_head=4, n_positions=256)
    if kind == "llama":
        config = LlamaConfig(
            vocab_size=vocab,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
        )
        return LlamaForCausalLM, config
    config = T5Config(
        vocab_size=vocab,
        d_model=32,
        d_ff=64,
        num_layers=4,
        num_decoder_layers=2,
        num_heads=4,
        d_kv=8,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=0,
    )
    return T5ForConditionalGeneration, config


def _loaded(tiny_gpt2, kind: str, **options) -> tuple[LoadedModel, str]:
    tokenizer = AutoTokenizer.from_pretrained(tiny_gpt2)
    tokenizer.pad_token = tokenizer.eos_token
    cls, config = _config(kind, len(tokenizer))
    torch.manual_seed(0)
    model = prune(cls(config), method="acc", **options)
    family = "encoder-decoder" if kind == "t5" else "decoder"
    return LoadedModel(model, tokenizer, f"tiny {kind}", "random weights"), family


def _continuation_loss(loaded: LoadedModel, family: str, speedup: float) -> float:
    """Mean next-token loss of the continuations at ``speedup`` (what the pruned pass learns)."""
    model = loaded.model
    model.eval()
    model.set_speedup(speedup)
    with torch.no_grad():
        if family == "decoder":
            rows = [lm.encode_pair(loaded.tokenizer, e, 256) for e in EXAMPLES]
            pairs = [lm._decoder_pass(model, ids, tail, "cpu") for ids, tail in rows]
        else:
            pairs = [lm._seq2seq_pass(model, loaded.tokenizer, EXAMPLES, 256, "cpu")]
    logits = torch.cat([p[0] for p in pairs])
    targets = torch.cat([p[1] for p in pairs])
    model.set_speedup(1.0)
    return torch.nn.functional.cross_entropy(logits, targets).item()


@pytest.mark.parametrize("kind", ["gpt2", "llama", "t5"])
def test_one_step_lowers_the_loss(tiny_gpt2, kind):
    loaded, family = _loaded(tiny_gpt2, kind)
    before = {s: _continuation_loss(loaded, family, s) for s in (1.0, 2.0)}
    settings = LMTrainSettings(
        steps=1, batch_size=len(EXAMPLES), learning_rate=3e-3, speedup_range=(2.0, 2.0)
    )
    tune_lm(loaded, EXAMPLES, settings, family, progress=False)
    after = {s: _continuation_loss(loaded, family, s) for s in (1.0, 2.0)}
    assert after[1.0] < before[1.0] and after[2.0] < before[2.0], (before, after)


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_the_continuation_is_never_eliminated(tiny_gpt2, kind, monkeypatch):
    loaded, family = _loaded(tiny_gpt2, kind, min_keep=1)
    model, seen = loaded.model, []
    original = lm._decoder_pass

    def spy(model_, ids, tail, device):
        out = original(model_, ids, tail, device)
        inputs = len(ids) - 1
        tail_positions = set(range(inputs - tail, inputs))
        kept = [set(layer[0]) for layer in model.last_kept]
        seen.append(
            (model.pruning.speedup, min(map(len, kept)), inputs, all(tail_positions <= k for k in kept))
        )
        return out

    monkeypatch.setattr(lm, "_decoder_pass", spy)
    settings = LMTrainSettings(steps=2, batch_size=2, speedup_range=(2.0, 2.0))
    tune_lm(loaded, EXAMPLES, settings, family, progress=False)
    assert seen and all(protected for *_, protected in seen)
    pruned = [fewest < inputs for speedup, fewest, inputs, _ in seen if speedup > 1]
    assert pruned and all(pruned), seen  # the context was pruned while the continuation stayed


def test_speedup_1_of_a_tuned_model_is_stock_with_its_weights(tiny_gpt2, tmp_path):
    loaded, family = _loaded(tiny_gpt2, "llama")
    tuned = tune_lm(loaded, EXAMPLES, LMTrainSettings(steps=1, batch_size=2), family, progress=False)
    tuned.save_pretrained(tmp_path)
    stock = LlamaForCausalLM(_config("llama", len(loaded.tokenizer))[1])
    stock.load_state_dict(tuned.state_dict())
    ids = loaded.tokenizer(SENTENCES[0], return_tensors="pt")["input_ids"]
    tuned.set_speedup(1.0)
    with torch.no_grad():
        assert torch.allclose(tuned(ids).logits, stock.eval()(ids).logits, atol=1e-5)


def test_lora_trains_adapters_and_merges_them(tiny_gpt2):
    loaded, family = _loaded(tiny_gpt2, "llama")
    before = {name: p.detach().clone() for name, p in loaded.model.named_parameters()}
    settings = LMTrainSettings(steps=1, batch_size=2, learning_rate=1e-2, lora=4)
    tuned = tune_lm(loaded, EXAMPLES, settings, family, progress=False)
    after = dict(tuned.named_parameters())
    assert set(after) == set(before)  # merged back: the plain model's parameters, no adapters
    changed = [name for name in before if not torch.equal(before[name], after[name])]
    assert changed and all("proj" in name for name in changed), changed
    assert torch.equal(before["lm_head.weight"], after["lm_head.weight"])


# --- training data and the overlap check --------------------------------------------------------------


def test_documents_overlap_by_runs_of_words():
    docs = Documents([SENTENCES[0], "Short text."])
    assert docs.shares("Yesterday THE council said the new road would open in july after two years of delay")
    assert not docs.shares("the council said the new road would open in august after two years of work")
    assert docs.shares("  the new road would open in july, after two years ")  # 11 words, whole
    assert not docs.shares("short text")  # too short to mean a shared document


def test_own_text_files_become_examples(tmp_path):
    path = tmp_path / "own.jsonl"
    path.write_text("\n".join(json.dumps({"prompt": s[:20], "response": s[20:]}) for s in SENTENCES))
    train = lm_training.training_set((str(path),), None, 0)
    assert len(train.examples) == 4 and train.provenance[str(path)] == {"examples": 4, "of": 4}
    text = tmp_path / "text.csv"
    text.write_text("text\n" + "\n".join(SENTENCES) + "\n")
    for example in lm_training.training_set((str(text),), 2, 0).examples:  # the last half, up to 32 words
        words = len(example.context.split()) + len(example.continuation.split())
        assert len(example.continuation.split()) == words // 2 and example.continuation.startswith(" ")


def _run(args, capsys, monkeypatch):
    no_model_load(monkeypatch, (protocols, "load_causal_lm"))
    return one_line_error(capsys, cli.main(["run", "--no-progress", *args]))


def test_training_on_an_evaluated_document_is_refused(tiny_gpt2, workdir, capsys, monkeypatch):
    from harness.data.tasks import load_task

    review = next(s for s in load_task("rt-polarity").splits["test"]["sentence"] if len(s.split()) > 15)
    own = workdir / "own.jsonl"
    own.write_text(json.dumps({"text": "An unrelated opening line. " + review}) + "\n")
    args = ["--models", str(tiny_gpt2), "--protocol", "finetune-lm", "--tasks", "rt-polarity"]
    err = _run([*args, "--train-on", str(own), "--speedups", "1"], capsys, monkeypatch)
    assert "shares text with a document the sweep evaluates (rt-polarity-zs)" in err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--train-on", "missing.jsonl"], "--train-on missing.jsonl: no such file"),
        (
            ["--train-on", "no-columns.csv"],
            "needs a 'text' column or 'prompt' and 'response' columns; it has title",
        ),
        (["--train-on", "rt-polarity-long"], "--train-on rt-polarity-long: the task has no training split"),
        (["--train-steps", "0"], "--train-steps must be a whole number >= 1, got 0"),
        (["--lora", "-1"], "--lora must be a LoRA rank >= 1 (or 0: full fine-tuning), got -1"),
        (["--models", "minilm"], "--protocol finetune-lm needs a decoder or an encoder-decoder"),
    ],
)
def test_bad_input_is_one_line(tiny_gpt2, workdir, capsys, monkeypatch, extra, message):
    (workdir / "no-columns.csv").write_text("title\nhello\n")
    args = [
        "--models",
        str(tiny_gpt2),
        "--protocol",
        "finetune-lm",
        "--tasks",
        "rt-polarity",
        "--speedups",
        "1",
    ]
    err = _run([*args, *extra], capsys, monkeypatch)
    assert message in err


def test_lora_without_peft_is_one_line(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_peft(name, *args, **kwargs):
        if name == "peft":
            raise ImportError("no peft")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_peft)
    with pytest.raises(HarnessError, match=r"--lora needs the peft package \(pip install peft\)"):
        lm.check_lm_settings(LMTrainSettings(lora=8))


def test_prompt_modes_run_on_the_tuned_model(tiny_gpt2, workdir, capsys):
    """--prompts with --protocol finetune-lm: each mode is evaluated on the tuned model, and its rows say so
    (their protocol, their mode and their train context) and carry the tuning in their identity."""
    own = workdir / "own.jsonl"
    own.write_text("\n".join(json.dumps({"text": s}) for s in SENTENCES) + "\n")
    args = ["run", "--models", str(tiny_gpt2), "--tasks", "rt-polarity", "--protocol", "finetune-lm"]
    args += ["--prompts", "zero-shot", "--train-on", str(own), "--train-steps", "1", "--speedups", "1,2"]
    args += ["--limit", "2", "--repeats", "1", "--max-length", "64", "--no-progress", "--out", "run"]
    assert cli.main(args) == 0, capsys.readouterr().err[-2000:]
    rows = [json.loads(line) for line in (workdir / "run" / "results.jsonl").read_text().splitlines()]
    assert [row["speedup"] for row in rows] == [1.0, 2.0]
    for row in rows:
        assert (
            row["protocol"] == "finetune-lm/prompts/zero-shot" and row["prompt_mode"] == "zero-shot (tuned)"
        )
        assert row["train"]["steps"] == 1 and row["train"]["train_on"][str(own)]["examples"] == 4
        assert row["identity"]["settings"]["train"]["train_on"] == [str(own)]


def test_compare_keeps_tuned_and_training_free_rows_apart():
    """One method under two protocols is two models: `harness compare` must not average them."""
    from pathlib import Path

    from harness.report.compare import compare_frame
    from harness.report.leaderboard import load_rows

    runs = Path(__file__).parent.parent / "leaderboards" / "runs"
    table = compare_frame(load_rows([runs / "smollm2_training_free", runs / "smollm2_finetune_lm"]))
    assert set(table["method"]) == {"acc [zero-shot]", "acc [finetune-lm]"}
    ppl = table[(table["task"] == "heldout-ppl") & (table["speedup"] == 1)].set_index("method")["quality"]
    assert ppl.round(1).to_dict() == {"acc [finetune-lm]": 46.4, "acc [zero-shot]": 50.0}
