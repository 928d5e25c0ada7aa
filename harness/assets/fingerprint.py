"""Content fingerprints: a short hash of what files hold, never of their names, sizes or times alone.

Why: a results row, a cached fine-tune or a resumed sweep that is keyed by a path or a task name returns
the old number after the file behind that name changed (a task file whose labels were flipped kept its
81.25%).  What a number was computed from is named by the bytes it read.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from harness.assets.cache import sha256_file

SHORT = 16
"""Hex digits kept: 64 bits, far beyond any collision a results folder could meet, short enough to read."""


@functools.lru_cache(maxsize=256)
def _file_digest(path: Path, size: int, mtime_ns: int) -> str:
    """One file's sha256, hashed once per process and file version (a sweep asks for each file per cell)."""
    return sha256_file(path)


def file_digest(path: str | Path) -> str:
    path = Path(path)
    stat = path.stat()
    return _file_digest(path.resolve(), stat.st_size, stat.st_mtime_ns)


def files_fingerprint(paths: Iterable[str | Path], root: str | Path | None = None) -> str:
    """The fingerprint of some files' contents, named relative to ``root`` (or by file name): moving a
    folder keeps its fingerprint, renaming or editing a file changes it."""
    entries = []
    for path in sorted(Path(p) for p in paths):
        name = path.relative_to(root).as_posix() if root is not None else path.name
        entries.append((name, file_digest(path)))
    return value_fingerprint(entries)


def folder_fingerprint(folder: str | Path) -> str:
    """Every regular file under ``folder`` (hidden ones, such as cache markers, left out)."""
    folder = Path(folder)
    files = [
        path
        for path in folder.rglob("*")
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    ]
    return files_fingerprint(files, folder)


def value_fingerprint(value: Any) -> str:
    """The fingerprint of a JSON-able value (keys sorted, so dict order does not matter)."""
    text = json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:SHORT]
