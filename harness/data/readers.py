"""Reading a user's data files (``--data-dir`` and task files): the formats, and the checks that make a
bad file one line naming the file, the column and the rows.

Why a module of its own: both the built-in tasks' ``--data-dir`` (``tasks.py``) and task files
(``task_file.py``) read files this way, and ``tasks.py`` loads task files, so the readers sit below both.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from harness.contracts.task import Task
from harness.registry import HarnessError, one_line


class DataError(HarnessError):
    """A task's data could not be found, read or understood."""


def _read_csv(path: Path) -> pd.DataFrame:
    # keep_default_na=False: a sentence such as "NA" or "null" is text, not a missing value
    return pd.read_csv(path, dtype=str, keep_default_na=False)


READERS: dict[str, Callable[[Path], pd.DataFrame]] = {
    ".csv": _read_csv,
    ".jsonl": lambda path: pd.read_json(path, lines=True, dtype=False),
    ".parquet": pd.read_parquet,
}


def read(path: Path) -> pd.DataFrame:
    """A user file as a DataFrame, read by its suffix (``READERS``); a parse error is one ``DataError``."""
    try:
        return READERS[path.suffix](path)
    except (ValueError, OSError) as exc:  # pandas/pyarrow parse errors are ValueError subclasses
        raise DataError(f"could not parse {path} as {path.suffix[1:]} ({one_line(exc)})") from exc


def normalise(spec: Task, df: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Check a user file's columns and labels, and reduce it to ``spec.columns``."""
    required = [*spec.text_fields, spec.label_field]
    if missing := [c for c in required if c not in df.columns]:
        raise DataError(
            f"expected columns {', '.join(required)} in {path}; found "
            f"{', '.join(map(str, df.columns)) or 'none'} (missing {', '.join(missing)})"
        )
    if df.empty:
        raise DataError(f"{path} has no data rows; every split needs at least one")
    for col in spec.text_fields:
        if n := int(df[col].isna().sum()):
            raise DataError(f"{path}: {n} rows have no {col}")
        if len(empty := (df[col].astype(str).str.strip() == "").to_numpy().nonzero()[0]):
            raise DataError(
                f"{path}: {len(empty)} rows have an empty {col} (data rows {_row_numbers(empty)}); "
                f"every text needs at least one word"
            )
    labels = _parse_labels(spec, df[spec.label_field], path)
    texts = {c: df[c].astype(str) for c in spec.text_fields}
    return pd.DataFrame({**texts, "label": labels}).reset_index(drop=True)


def _row_numbers(positions, shown: int = 5) -> str:
    """1-based data row numbers (the header is not a row), the first few and how many more."""
    numbers = ", ".join(str(int(p) + 1) for p in positions[:shown])
    return numbers + (f" and {len(positions) - shown} more" if len(positions) > shown else "")


def _parse_labels(spec: Task, raw: pd.Series, path: Path) -> pd.Series:
    """Numbers, or label names such as ``entailment``; classes must lie in ``0..num_labels-1``."""
    values = pd.to_numeric(raw, errors="coerce")
    if spec.label_names:
        by_name = raw.astype(str).map({n: i for i, n in enumerate(spec.label_names)})
        values = values.where(values.notna(), by_name)
    values = values.astype(float)
    if spec.is_regression:
        bad = values.isna()
    else:
        bad = values.isna() | (values % 1 != 0) | (values < 0) | (values >= spec.num_labels)
    if bad.any():
        allowed = (
            "numbers"
            if spec.is_regression
            else (
                f"0..{spec.num_labels - 1}"
                + (f" or {', '.join(spec.label_names)}" if spec.label_names else "")
            )
        )
        row = int(bad.to_numpy().argmax())
        raise DataError(
            f"{path}: {int(bad.sum())} bad values in column {spec.label_field} (first: "
            f"{raw.iloc[row]!r} in data row {row + 1}); expected {allowed}"
        )
    return values if spec.is_regression else values.astype("int64")
