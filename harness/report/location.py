"""Where ``harness run`` writes a run's leaderboard and figures: where the user points, never over another run's.

Why: reports used to land in the current directory's ``leaderboards/`` and ``plots/`` (in a clone, the
tracked example files) whatever ``--out`` said, named by the run folder's last name only, so ``runs/base``
and ``other/base`` overwrote each other.  Now a run's reports go under its report folder, ``--report-dir``
or else the run folder itself: ``leaderboards/<name>.md`` and ``.csv``, and ``plots/<name>/``, with
``<name>`` the run folder's name.  ``leaderboards/<name>.json`` records which run folder (relative to the
report folder, so that a clone's committed examples stay valid) the name belongs to; a run whose name
there belongs to another run folder is refused before it starts, and checked again before writing.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from harness.registry import HarnessError
from harness.report.store import write_json_atomic


@dataclass(frozen=True)
class ReportPlace:
    root: Path
    """The report folder: ``--report-dir``, or the run folder."""
    name: str
    source: str
    """The run folder, relative to ``root``."""

    @property
    def leaderboards(self) -> Path:
        return self.root / "leaderboards"

    @property
    def plots(self) -> Path:
        return self.root / "plots" / self.name

    @property
    def owner_file(self) -> Path:
        return self.leaderboards / f"{self.name}.json"

    def check_free(self) -> None:
        """Raise unless the name is unused here or already this run folder's."""
        try:
            owner = json.loads(self.owner_file.read_text()).get("run")
        except (OSError, ValueError, AttributeError):
            return  # none yet (or not ours to judge): the name is free
        if owner != self.source:
            raise HarnessError(
                f"{self.leaderboards / self.name}.md holds the reports of run folder {owner} (relative to "
                f"{self.root}), not {self.source}; give this run another --report-dir, or an --out of another name"
            )

    def record_owner(self) -> None:
        write_json_atomic(self.owner_file, {"run": self.source})


def report_name(name: str) -> str:
    """``name`` if it is a plain file-name stem, else a ``HarnessError``.

    Why: reports are written as ``<out>/<name>.md`` (and ``plots/<name>/``), so a name with a folder in it,
    ``..``, ``.`` or nothing at all would put them outside ``--out`` (``--name ../../x``) or hide them."""
    if (
        not name.strip()
        or name in (".", "..")
        or any(sep and sep in name for sep in ("/", os.sep, os.altsep, "\0"))
    ):
        raise HarnessError(
            f"report name {name!r} is not a plain file name (no folders, not '.' or '..'); "
            "give --name a file name and --out the folder"
        )
    return name


def default_name(run_dir: str | Path) -> str:
    """The run folder's own name, also for ``.`` or ``runs/x/..`` (whose ``Path.name`` is empty or ``..``);
    symlinks are not followed, so a link's name stays the name the user gave."""
    return Path(os.path.abspath(run_dir)).name


def report_place(run_dir: str | Path, report_dir: str | Path | None = None) -> ReportPlace:
    """Where the reports of ``run_dir`` go (checked free for it)."""
    run = Path(run_dir).resolve()
    root = Path(report_dir) if report_dir is not None else Path(run_dir)
    place = ReportPlace(root, run.name, Path(os.path.relpath(run, root.resolve())).as_posix())
    place.check_free()
    return place
