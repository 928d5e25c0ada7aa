"""Checks of a checkpoint folder before transformers reads it: what is missing or damaged, in one line.

Why: transformers answers a folder without weights, with truncated weights or with only a pickle with an
``OSError`` or ``SafetensorError`` traceback; and a folder without tokenizer files with a tokenizer of
five special tokens that turns every word into ``[UNK]``, which gives a wrong score and no error at all.
Cache entries are checked against their manifests (``harness.assets.cache``); these checks are for the
folders users bring, and cost one header read per weights file.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import SafetensorError, safe_open

from harness.registry import HarnessError

WEIGHTS, INDEX = "model.safetensors", "model.safetensors.index.json"
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "tokenizer.model", "spiece.model",
                   "sentencepiece.bpe.model")
"""A tokenizer's vocabulary lives in one of these (fast tokenizers, WordPiece, BPE, SentencePiece)."""
UNUSED_VOCABULARY = 0.1
"""Models pad their embedding matrix a little beyond the tokenizer (to a multiple of 64 or 128), never by
a tenth: a bigger gap means the tokenizer belongs to another model."""


def check_checkpoint_files(folder: str | Path, what: str, tokenizer: bool = True) -> None:
    """Weights (safetensors, complete) and, when ``tokenizer``, tokenizer files; ``what`` names the folder."""
    folder = Path(folder)
    for path in _weights_files(folder, what):
        try:
            with safe_open(path, "pt"):
                pass
        except (SafetensorError, OSError) as exc:
            raise HarnessError(f"{what}: {path.name} is damaged or truncated ({_first_line(exc)}); "
                               f"copy it again from where it came from") from None
    if tokenizer and not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise HarnessError(f"{what} has no tokenizer files (one of {', '.join(TOKENIZER_FILES)}); copy the "
                           f"tokenizer of the model it was trained from into it")


def check_vocabulary(tokenizer, config, what: str) -> None:
    """The tokenizer's ids must index the model's embedding matrix, and fill most of it."""
    tokens, rows = len(tokenizer), config.vocab_size
    if tokens > rows or tokens < (1 - UNUSED_VOCABULARY) * rows:
        raise HarnessError(f"{what}: its tokenizer has {tokens} tokens but the model's vocabulary has {rows} "
                           f"(vocab_size in config.json); the tokenizer files belong to another model")


def _weights_files(folder: Path, what: str) -> list[Path]:
    if (folder / INDEX).is_file():
        try:
            names = sorted(set(json.loads((folder / INDEX).read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise HarnessError(f"{what}: {INDEX} is unreadable ({_first_line(exc)})") from None
        if missing := [name for name in names if not (folder / name).is_file()]:
            raise HarnessError(f"{what} lacks the weight files {', '.join(missing)} that {INDEX} names")
        return [folder / name for name in names]
    if (folder / WEIGHTS).is_file():
        return [folder / WEIGHTS]
    if pickles := sorted(path.name for path in folder.glob("pytorch_model*.bin")):
        raise HarnessError(f"{what} has only {', '.join(pickles)}, pickled weights, which the harness does not "
                           f"unpickle (a pickle can run code); if you trust it, convert it once to "
                           f"{WEIGHTS}: {_conversion(folder)}")
    raise HarnessError(f"{what} has no weights: expected {WEIGHTS} (or {INDEX} and its shards)")


def _conversion(folder: Path) -> str:
    """The one command that rewrites a pickled checkpoint as safetensors, for its own architecture."""
    try:
        architecture = json.loads((folder / "config.json").read_text())["architectures"][0]
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        architecture = "AutoModel"
    return (f"python -c \"import transformers as t; t.{architecture}.from_pretrained('{folder}', "
            f"use_safetensors=False).save_pretrained('{folder}')\"")


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
