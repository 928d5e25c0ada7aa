"""Crash-safe result storage: one JSON line per finished cell, plus atomic whole-file writers.

A sweep can be killed at any moment (Ctrl-C, OOM, a lost machine) and is resumed by skipping the
cells already in ``results.jsonl``.  So a row is appended with a single ``write`` on an ``O_APPEND``
descriptor and fsynced: a crash can at worst leave one partial *last* line, which loading drops (the
cell is simply run again) and which is cut off before the next append so that the file stays valid
JSON Lines.  Metadata, leaderboards and figures are replaced atomically (temp file + ``os.replace``:
``harness.io``), so a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from harness.io import jsonable, write_bytes_atomic, write_json_atomic, write_text_atomic
from harness.registry import HarnessError

# The atomic writers live in harness.io (the latency store, below the reports, writes with them too);
# they are named here as well, where the reports and the benches import them.
__all__ = [
    "RESULTS_FILE",
    "RESULTS_SCHEMA",
    "ResultStore",
    "read_results",
    "report_rows",
    "unique_runs",
    "write_bytes_atomic",
    "write_json_atomic",
    "write_text_atomic",
]

RESULTS_FILE = "results.jsonl"
RESULTS_SCHEMA = 2
"""The rows' format: 2 adds ``identity`` (what made the cell) and ``schema``; rows without ``schema`` are 1."""
ROW_KEYS = ("cell_key", "model", "task", "method", "speedup")
"""What every row names; a line without them is refused rather than shown as a blank leaderboard row."""


def read_results(path: Path) -> tuple[list[dict[str, Any]], int]:
    """Parse a results file; return its complete rows and the byte length they occupy (``_numbered_rows``)."""
    numbered, offset = _numbered_rows(path)
    return [row for _, row in numbered], offset


def _numbered_rows(path: Path) -> tuple[list[tuple[int, dict[str, Any]]], int]:
    """Parse a results file; return its complete rows with their line numbers, and the byte length they occupy.

    A last line without its newline, or whose JSON does not parse, is what a crash mid-append
    leaves: it is not returned and not counted in the length.  A bad line anywhere else, or a
    complete JSON object that lacks ``ROW_KEYS`` (such as ``{}``, wherever it is), is real
    corruption and raises, naming the file and line.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], 0
    except OSError as exc:
        raise HarnessError(f"cannot read {path}: {exc.strerror or exc}") from None
    partial_tail = data.rpartition(b"\n")[2]  # bytes after the final newline
    lines = data[: len(data) - len(partial_tail)].split(b"\n")[:-1]
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    rows: list[tuple[int, dict[str, Any]]] = []
    offset = 0
    for index, line in enumerate(lines):
        if line.strip():
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError("not a JSON object")
            except ValueError as exc:
                if index == last and not partial_tail:
                    return rows, offset
                raise HarnessError(f"{path} line {index + 1} is not a valid result row: {exc}") from None
            if missing := [key for key in ROW_KEYS if key not in row]:  # e.g. "{}": complete, but not a row
                raise HarnessError(
                    f"{path} line {index + 1} is not a result row (it has no {', '.join(missing)}); "
                    f"delete that line and rerun"
                )
            rows.append((index + 1, row))
        offset += len(line) + 1
    return rows, offset


REPORT_KEYS = (*ROW_KEYS, "weights", "hardware", "measured_speedup", "latency_ms", "dense_latency_ms")
"""What every board reads from every row, whatever its schema: every committed ``leaderboards/runs`` row
(schema 1, no ``schema`` field) has them.  A row without them is another harness's (compare showed one as
"Timed on nan").  Not quality: rows of random weights have no score, zero-shot rows no ``train``."""


def report_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a results file that reports show, each once, or a ``HarnessError`` naming file and line.

    Why refuse rather than pick: one cell twice (a hand-edited or concatenated file) used to show the later
    row, or average both; a row of another harness version used to be shown half empty.  Both are refused,
    even an exact copy of a row, since which row is right is the user's call, not the report's."""
    numbered, _ = _numbered_rows(path)
    seen: dict[str, int] = {}
    for line, row in numbered:
        _check_readable(path, line, row)
        first = seen.setdefault(json.dumps(row["cell_key"]), line)
        if first != line:
            raise HarnessError(
                f"{path} holds cell {row['cell_key']} twice, on lines {first} and {line}; delete the line you do not "
                "trust (or both, and rerun the same 'harness run' to measure the cell again)"
            )
    return [row for _, row in numbered]


def _check_readable(path: Path, line: int, row: dict[str, Any]) -> None:
    """Refuse a row this harness would misread: one of a newer results schema, or one without ``REPORT_KEYS``."""
    schema, version = row.get("schema", 1), row.get("harness_version")
    writer = f"harness {version}" if version else "a harness too old to record its version"
    if type(schema) is not int or schema < 1:
        raise HarnessError(
            f"{path} line {line} has results schema {schema!r}, which no harness writes; "
            "delete that line and rerun its cell"
        )
    if schema > RESULTS_SCHEMA:
        raise HarnessError(
            f"{path} line {line} was written by {writer} with results schema {schema}; this harness "
            f"reads up to {RESULTS_SCHEMA}; upgrade the harness to report it"
        )
    if missing := [key for key in REPORT_KEYS if row.get(key) is None]:
        raise HarnessError(
            f"{path} line {line} was written by {writer} without {', '.join(missing)}, which reports "
            "need; report it with that version, or rerun its cells into another folder with this one"
        )


def unique_runs(run_dirs: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """The run folders, each once, in the order given (the first spelling kept).

    Why: ``harness leaderboard runs/x runs/x`` (or ``./runs/x``, or a symlink to it) counted every row twice.
    The same results file is the same run, so folders are told apart by that file's inode where it exists."""
    unique: dict[Any, Path] = {}
    for run_dir in map(Path, run_dirs):
        results = run_dir / RESULTS_FILE
        try:
            stat = results.stat()
            key: Any = (stat.st_dev, stat.st_ino)
        except OSError:
            key = results.resolve()  # missing: the caller says so
        unique.setdefault(key, run_dir)
    return list(unique.values())


class ResultStore:
    """The ``results.jsonl`` of one run folder, created (and checked writable) on construction."""

    def __init__(self, run_dir: str | os.PathLike[str]):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / RESULTS_FILE
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            # A probe now, rather than an error after the first hour-long cell has finished.
            with tempfile.TemporaryFile(dir=self.run_dir):
                pass
        except OSError as exc:
            raise HarnessError(
                f"output folder {self.run_dir} is not writable: {exc.strerror or exc}"
            ) from None

    def rows(self) -> list[dict[str, Any]]:
        return read_results(self.path)[0]

    def done_keys(self) -> set[str]:
        return {row["cell_key"] for row in self.rows() if "cell_key" in row}

    def append(self, row: dict[str, Any]) -> None:
        """Append ``row`` as one durable line."""
        data = (json.dumps(row, ensure_ascii=False, default=jsonable) + "\n").encode()
        try:
            self._truncate_partial_tail()  # re-read each time: the file is small, resume stays simple
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                view = memoryview(data)
                while view:  # one write in practice; a short write (disk full) is finished, not lost
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise HarnessError(f"cannot append to {self.path}: {exc.strerror or exc}") from None

    def _truncate_partial_tail(self) -> None:
        _, valid = read_results(self.path)
        if self.path.exists() and self.path.stat().st_size > valid:
            os.truncate(self.path, valid)
