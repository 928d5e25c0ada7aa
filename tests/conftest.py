import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, BertModel

TOLERANCE = {torch.float32: dict(atol=1e-5, rtol=1e-5), torch.bfloat16: dict(atol=1e-2, rtol=1.6e-2)}
"""Speedup 1 against stock, per dtype: float32 to rounding, bfloat16 to its 8-bit mantissa (``--dtype``)."""


def same_as_stock(got: torch.Tensor, expected: torch.Tensor) -> None:
    assert got.dtype == expected.dtype
    torch.testing.assert_close(got, expected, **TOLERANCE[expected.dtype])


def tiny_bert_config(**overrides) -> BertConfig:
    values = dict(
        hidden_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=128,
        vocab_size=120,
        max_position_embeddings=128,
        num_labels=3,
    )
    values.update(overrides)
    return BertConfig(**values)


@pytest.fixture(autouse=True)
def _one_timing_try(monkeypatch):
    """A busy machine retries sweep timings 20 s apart; the suite's speed must not depend on what
    else runs beside it (the retry itself is tested with explicit ``attempts``)."""
    from harness.measure import latency

    monkeypatch.setattr(latency, "ATTEMPTS", 1)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """The test's own empty harness cache, checked the default way (sizes and mtimes, no HARNESS_VERIFY)."""
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HARNESS_VERIFY", raising=False)
    return tmp_path / "cache"


@pytest.fixture
def workdir(tmp_path, monkeypatch, cache):
    """The test's own current folder and cache, with the hub offline (as everywhere here)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


@pytest.fixture
def tiny_classifier():
    """A random tiny BertForSequenceClassification (eval mode) built with the given attention kernel."""

    def build(attn_implementation="sdpa", **overrides):
        torch.manual_seed(0)
        config = tiny_bert_config(**overrides)
        return BertForSequenceClassification._from_config(
            config, attn_implementation=attn_implementation
        ).eval()

    return build


@pytest.fixture
def tiny_encoder():
    def build(attn_implementation="sdpa", **overrides):
        torch.manual_seed(0)
        return BertModel._from_config(
            tiny_bert_config(**overrides), attn_implementation=attn_implementation
        ).eval()

    return build


@pytest.fixture
def padded_batch():
    """Three samples of 24, 15 and 6 real tokens (ids start with a [CLS]-like 1), right-padded."""
    torch.manual_seed(1)
    ids = torch.randint(3, 120, (3, 24))
    ids[:, 0] = 1
    mask = torch.ones_like(ids)
    mask[1, 15:] = 0
    mask[2, 6:] = 0
    return ids.masked_fill(mask == 0, 0), mask


WORDS = (
    "good great fine bad awful poor movie film plot actors story is was the a and not very "
    "really funny boring dull bright sharp weak strong"
).split()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A local folder holding a tiny random BertForSequenceClassification and a WordPiece tokenizer."""
    from transformers import BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    BertTokenizerFast.from_pretrained(folder).save_pretrained(
        folder
    )  # vocab_file= is ignored by transformers 5
    torch.manual_seed(0)
    config = tiny_bert_config(vocab_size=5 + len(WORDS), num_hidden_layers=6, num_labels=2)
    BertForSequenceClassification(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_sentiment_dir(tmp_path_factory):
    """sst2-style train/validation csv files (columns sentence, label) from a fixed random grammar."""
    import random

    import pandas as pd

    rng = random.Random(0)
    positive, negative = (
        ["good", "great", "funny", "bright", "strong"],
        ["bad", "awful", "boring", "dull", "weak"],
    )

    def rows(n):
        out = []
        for _ in range(n):
            label = rng.randint(0, 1)
            words = [rng.choice(positive if label else negative) for _ in range(rng.randint(1, 3))]
            filler = [
                rng.choice(["the", "movie", "film", "plot", "is", "was", "very"])
                for _ in range(rng.randint(2, 12))
            ]
            sentence = filler[: len(filler) // 2] + words + filler[len(filler) // 2 :]
            out.append({"sentence": " ".join(sentence), "label": label})
        return pd.DataFrame(out)

    folder = tmp_path_factory.mktemp("sst2-data")
    rows(96).to_csv(folder / "train.csv", index=False)
    rows(40).to_csv(folder / "validation.csv", index=False)
    return folder


@pytest.fixture(scope="session")
def tiny_gpt2_checkpoint(tiny_checkpoint, tmp_path_factory):
    """A tiny random GPT-2 classifier folder (6 layers) sharing the tiny WordPiece tokenizer."""
    from transformers import AutoTokenizer, GPT2Config, GPT2ForSequenceClassification

    folder = tmp_path_factory.mktemp("tiny-gpt2")
    tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoint)
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = GPT2Config(
        n_embd=64,
        n_layer=6,
        n_head=4,
        vocab_size=len(tokenizer),
        n_positions=128,
        pad_token_id=tokenizer.pad_token_id,
        num_labels=2,
    )
    GPT2ForSequenceClassification(config).save_pretrained(folder)
    return folder


LM_CORPUS = [
    "Review: the movie was good and the plot was great\nSentiment: positive",
    "Review: a dull, boring film with weak actors\nSentiment: negative",
    "The council said the new road would open in July, after two years of work.",
    "Question: is the sky blue?\nAnswer: yes",
]
"""Text the tiny language model's tokenizer is trained on (and ``test_lm_eval`` scores)."""


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory):
    """A folder with a random 4-layer GPT2LMHeadModel and a matching byte-level BPE tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-gpt2")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(
        LM_CORPUS * 20,
        trainers.BpeTrainer(
            vocab_size=320,
            special_tokens=["<|endoftext|>"],
            show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>"
    )
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=32,
        n_layer=4,
        n_head=4,
        n_positions=512,
        bos_token_id=0,
        eos_token_id=0,
    )
    GPT2LMHeadModel(config).save_pretrained(folder)
    return folder
