"""An example plugin: everything a third-party package needs to add a method, a task and a model alias.

* ``KeyNorm`` — a score-only method: keep the word-vectors whose keys have the largest norm.
* ``TINY_SENTIMENT`` — a task from a task file shipped with the package (``data/tiny-sentiment.yaml``).
* ``TINY_BERT`` — a model alias whose checkpoint the package builds once into the harness cache (a
  6-layer, hidden-64 BERT with random weights and a 30-word vocabulary: small enough for a test).
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

from harness.assets.fetch import build_once, cache_dir
from harness.contracts import Method, ScoreInputs
from harness.data.task_file import load_task_file
from harness.models.catalog import ModelSpec

DATA = Path(__file__).parent / "data"


class KeyNorm(Method):
    name, needs = "keynorm", "keys"
    description = "keeps the word-vectors whose keys have the largest norm (example plugin)"

    def score(self, inputs: ScoreInputs) -> torch.Tensor:
        return inputs.keys.norm(dim=-1).mean(dim=1)


TINY_SENTIMENT = load_task_file(DATA / "tiny-sentiment.yaml")

WORDS = (
    "good great fine bad awful poor movie film plot actors story is was the a and not very "
    "really funny boring dull bright sharp weak strong"
).split()


def _architecture() -> BertConfig:
    return BertConfig(
        hidden_size=64,
        num_hidden_layers=6,
        num_attention_heads=4,
        intermediate_size=128,
        vocab_size=5 + len(WORDS),
        max_position_embeddings=128,
    )


def _build(folder: Path) -> dict:
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    BertTokenizerFast.from_pretrained(folder).save_pretrained(
        folder
    )  # vocab_file= is ignored by transformers 5
    torch.manual_seed(0)
    BertForSequenceClassification(_architecture()).save_pretrained(folder)
    return {"seed": 0}


def _folder() -> Path:
    return build_once(cache_dir() / "plugins" / "tiny-bert", _build, "example plugin's tiny-bert checkpoint")


TINY_BERT = ModelSpec(
    "tiny-bert",
    None,
    _architecture,
    description="a 6-layer, hidden-64 random BERT (example plugin)",
    family="bert",
    folder=_folder,
)
