"""Checks of a checkpoint folder before and while transformers reads it: what is missing, damaged or
disagrees, in one line.

Why: transformers answers a folder without weights, with truncated weights or with only a pickle with an
``OSError`` or ``SafetensorError`` traceback; and a folder without tokenizer files with a tokenizer of
five special tokens that turns every word into ``[UNK]``, which gives a wrong score and no error at all.
Weights that do not fill the model exactly load with the rest initialised at random (``load_exactly``).
Cache entries are checked against their manifests (``harness.assets.cache``); these checks are for the
folders users bring, and cost one header read per weights file.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from harness.registry import HarnessError, one_line

WEIGHTS, INDEX = "model.safetensors", "model.safetensors.index.json"
TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
)
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
            raise HarnessError(
                f"{what}: {path.name} is damaged or truncated ({_first_line(exc)}); "
                f"copy it again from where it came from"
            ) from None
    if tokenizer and not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise HarnessError(
            f"{what} has no tokenizer files (one of {', '.join(TOKENIZER_FILES)}); copy the "
            f"tokenizer of the model it was trained from into it"
        )


def check_vocabulary(tokenizer, config, what: str) -> None:
    """The tokenizer's ids must index the model's embedding matrix, and fill most of it."""
    tokens, rows = len(tokenizer), config.vocab_size
    if tokens > rows or tokens < (1 - UNUSED_VOCABULARY) * rows:
        raise HarnessError(
            f"{what}: its tokenizer has {tokens} tokens but the model's vocabulary has {rows} "
            f"(vocab_size in config.json); the tokenizer files belong to another model"
        )


SHOWN = 3
"""How many tensor names an error lists before it counts the rest."""


def load_exactly(cls, path: str | Path, what: str, fresh_head: bool = False, **kwargs):
    """``cls.from_pretrained(path, **kwargs)``, refusing weights that do not fill the model exactly.

    Why: transformers initialises every tensor the file lacks at random and drops every tensor the model
    does not know, saying so only in a logged report (which the CLI silences), and with another shape it
    raises a traceback.  So a header with one name damaged (a flipped bit), or a config.json of other sizes
    or of another architecture, gave a model that ran and scored near chance, or a traceback.  Refused, on
    one line naming the tensors: anything missing, unexpected or of another shape, except exactly these:

    * with ``fresh_head`` (a classifier about to be fine-tuned), what the task head lacks: the tensors
      outside the base model (``classifier.*``, ``score.weight``) and the pooler's, which only feeds the
      head, missing or of another shape (a base checkpoint has no head, a fine-tuned one has another task's
      labels).  Fine-tuning trains the head from scratch: a new head is its point;
    * unexpected tensors of heads, outside the base model or in a pooler (BERT's pre-training heads
      ``cls.*``, an untied ``lm_head.weight``, another task's ``score.weight``): no module of this model
      would read them;
    * unexpected tensors of a module the model has (a stale buffer such as old GPT-2 checkpoints'
      ``attn.masked_bias``): a renamed weight of that module is reported missing anyway.  Unexpected
      tensors of modules it lacks (layers beyond config.json's count) are refused: the model would run
      without them.

    Tied weights (an LM head that is the embedding matrix) are not reported missing: transformers ties
    them after loading.  A model that is its own base (T5, a bare encoder) has no such exceptions.
    """
    try:
        model, info = cls.from_pretrained(
            path, output_loading_info=True, ignore_mismatched_sizes=True, **kwargs
        )
    except (ValueError, RuntimeError) as exc:  # config.json describes no buildable model, or loading failed
        raise HarnessError(
            f"{what}: transformers cannot build the model its config.json describes from its "
            f"weights ({one_line(exc)}); fix config.json or copy the checkpoint again"
        ) from None
    if problems := _problems(model, info, fresh_head):
        raise HarnessError(
            f"{what}: its weights do not fit the {type(model).__name__} its config.json describes: "
            f"{'; '.join(problems)}; copy the checkpoint again from where it came from (a damaged "
            f"weights file), or put back the config.json saved with these weights"
        )
    return model


def _in_body(model, key: str) -> bool:
    """Whether ``key`` (with or without the base-model prefix: a bare checkpoint's unexpected keys lack it)
    names a tensor of the base model, not of a head or the pooler."""
    prefix = model.base_model_prefix
    base = getattr(model, prefix, None) if prefix else None
    if not isinstance(base, torch.nn.Module):
        return True
    first = key.removeprefix(f"{prefix}.").split(".")[0]
    return first != "pooler" and first in dict(base.named_children())


def _has_module(model, key: str) -> bool:
    """Whether the module owning tensor ``key`` (with or without the base-model prefix) exists in ``model``."""
    module = key.rpartition(".")[0]
    for name in (module, f"{model.base_model_prefix}.{module}"):
        try:
            model.get_submodule(name)
            return True
        except AttributeError:
            pass
    return False


def _problems(model, info: dict, fresh_head: bool) -> list[str]:
    """What transformers' loading info shows wrong, less the exceptions ``load_exactly`` allows."""

    def refused(key: str) -> bool:
        return not fresh_head or _in_body(model, key)

    missing = sorted(filter(refused, info["missing_keys"]))
    unexpected = sorted(
        key for key in info["unexpected_keys"] if _in_body(model, key) and not _has_module(model, key)
    )
    shapes = sorted(
        (entry for entry in info["mismatched_keys"] if refused(entry[0])), key=lambda entry: entry[0]
    )
    problems = []
    if missing:
        problems.append(f"{len(missing)} tensor{'s' * (len(missing) > 1)} missing ({_names(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected ({_names(unexpected)})")
    if shapes:
        shown = [
            f"{key} is {tuple(stored)} in the weights, {tuple(expected)} in config.json"
            for key, stored, expected in shapes
        ]
        problems.append(f"{len(shapes)} of another shape ({_names(shown)})")
    return problems


def _names(items: list[str]) -> str:
    more = f" and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
    return ", ".join(items[:SHOWN]) + more


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
        raise HarnessError(
            f"{what} has only {', '.join(pickles)}, pickled weights, which the harness does not "
            f"unpickle (a pickle can run code); if you trust it, convert it once to "
            f"{WEIGHTS}: {_conversion(folder)}"
        )
    raise HarnessError(f"{what} has no weights: expected {WEIGHTS} (or {INDEX} and its shards)")


def _conversion(folder: Path) -> str:
    """The one command that rewrites a pickled checkpoint as safetensors, for its own architecture."""
    try:
        architecture = json.loads((folder / "config.json").read_text())["architectures"][0]
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        architecture = "AutoModel"
    return (
        f"python -c \"import transformers as t; t.{architecture}.from_pretrained('{folder}', "
        f"use_safetensors=False).save_pretrained('{folder}')\""
    )


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
