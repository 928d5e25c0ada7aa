"""Whether a text shares text with a set of documents: the check that tuning never sees what is scored.

Two texts overlap when they share a run of ``OVERLAP_WORDS`` words (lower-cased word characters), the
n-gram decontamination of GPT-3 and lm-eval; a text shorter than that, of at least ``SHORT_WORDS`` words,
overlaps when it occurs whole, on word boundaries.  Shorter texts (a label, a four-word question) are too
common to mean a shared document.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

OVERLAP_WORDS = 13
SHORT_WORDS = 8


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def _runs(tokens: list[str]) -> set[int]:
    return {hash(tuple(tokens[i : i + OVERLAP_WORDS])) for i in range(len(tokens) - OVERLAP_WORDS + 1)}


class Documents:
    """An index of texts that other texts are checked against."""

    def __init__(self, texts: Iterable[str]):
        self._runs: set[int] = set()
        joined = []
        for text in texts:
            tokens = words(text)
            self._runs |= _runs(tokens)
            joined.append(" ".join(tokens))
        self._joined = " " + " | ".join(joined) + " "

    def shares(self, text: str) -> bool:
        tokens = words(text)
        if len(tokens) >= OVERLAP_WORDS:
            return not self._runs.isdisjoint(_runs(tokens))
        return len(tokens) >= SHORT_WORDS and f" {' '.join(tokens)} " in self._joined
