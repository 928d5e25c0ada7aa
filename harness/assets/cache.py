"""Cache entries: folders built once, checked on every use, and built again when damaged.

Why: a disk that filled up once, or a copy killed half-way, leaves a truncated or altered file in the
cache, and a benchmark that loads it either dies with a library's traceback or, worse, reports wrong
numbers under a row that calls its checkpoint verified.  So an entry is checked each time it is used,
not only when it is made, and a damaged one heals itself:

* ``build_once`` fills a temporary sibling folder, records the size, mtime and sha256 of every file in
  a marker written last (the manifest), and renames the folder into place: a folder under its final
  name with a marker is complete.
* ``entry_problem`` compares an entry with its manifest: sizes every time (one ``stat`` per file),
  hashes only of files whose size or mtime changed, or of every file with ``HARNESS_VERIFY=always``.
  A file whose hash still matches after its mtime changed gets the new mtime recorded, so that the
  next use is fast again.
* ``usable`` reports a damaged entry on one line and removes it, and ``build_once`` builds it again:
  a pinned asset is fetched again, a converted checkpoint or fine-tuned model rebuilt.  An entry with
  no manifest (an interrupted build, or one made by an older harness) cannot be checked, so it is
  treated the same way.
* ``harness cache verify`` hashes every file; what it finds damaged it marks (``mark_damaged``), because
  the default check of a use (sizes and mtimes) passes damage that kept its size and mtime, and would
  use the entry again.  A marked entry is damaged to ``check_entry``, so its next use rebuilds it.
* Results rows say which check stood behind this use (``how_checked``): sizes and mtimes, the sha256 of
  every file, or none because the entry was built just now.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from harness.registry import HarnessError

MARKER = ".harness-built.json"
DAMAGED = ".harness-damaged"  # written into an entry by `harness cache verify`: the problem it found
VERIFY_MODES = ("changed", "always")
BUILT_NOW = "built now (the sha256 of every file recorded in the cache manifest)"
_checks: dict[Path, str] = {}  # entry folder -> how this process last checked it (``how_checked``)


def cache_dir() -> Path:
    """The harness cache root: ``$HARNESS_CACHE``, else ``~/.cache/harness``."""
    return Path(os.environ.get("HARNESS_CACHE") or Path.home() / ".cache" / "harness").expanduser()


def hash_every_use() -> bool:
    """``HARNESS_VERIFY=always`` hashes every file on every use; ``changed`` (the default) only changed ones."""
    mode = os.environ.get("HARNESS_VERIFY", "").strip().lower() or "changed"
    if mode not in VERIFY_MODES:
        raise HarnessError(f"HARNESS_VERIFY must be one of {', '.join(VERIFY_MODES)}, got {mode!r}")
    return mode == "always"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def notice(message: str) -> None:
    """One line on stderr for something the harness did on the user's behalf (healing the cache)."""
    print(f"harness: {message}", file=sys.stderr, flush=True)


def _manifest(folder: Path) -> dict[str, dict]:
    files = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name not in (MARKER, DAMAGED):
            stat = path.stat()
            files[path.relative_to(folder).as_posix()] = {
                "size": stat.st_size,
                "mtime_ns": stat.st_mtime_ns,
                "sha256": sha256_file(path),
            }
    return files


def _write_marker(folder: Path, marker: dict) -> None:
    temporary = folder / (MARKER + ".tmp")
    temporary.write_text(json.dumps(marker, indent=1, default=str))
    os.replace(temporary, folder / MARKER)


def entry_problem(target: Path, always: bool | None = None) -> str | None:
    """None when ``target`` is a complete entry whose files match its manifest; else what is wrong
    (``check_entry`` without saying how it checked)."""
    return check_entry(target, always)[0]


def check_entry(target: Path, always: bool | None = None) -> tuple[str | None, str]:
    """``(problem, how)``: what is wrong with ``target`` (None when nothing is), and which check ran.

    ``always`` hashes every file (default: ``HARNESS_VERIFY``); otherwise only files whose size or
    mtime differ from the manifest are hashed.  ``how`` exists because results rows must say how
    much their cached checkpoint was checked on this use, and only this function knows.
    """
    always = hash_every_use() if always is None else always
    damage = _marked_damage(target)
    if damage is not None:
        return f"`harness cache verify` found: {damage}", "the damage mark of `harness cache verify`"
    try:
        marker = json.loads((target / MARKER).read_text())
        files = marker["files"]
    except FileNotFoundError:
        return (
            "it has no completion marker: an interrupted build, or one made by an older harness",
            "its marker",
        )
    except (OSError, ValueError, KeyError, TypeError):
        return "it has no readable integrity manifest (made by an older harness?)", "its marker"
    problem, touched = _compare(target, files, always)
    if touched and problem is None:
        _remember_mtimes(target, marker, touched)
    return problem, _how(always, len(touched))


def _compare(target: Path, files: dict[str, dict], always: bool) -> tuple[str | None, dict[str, int]]:
    """The first file that differs from its record, and the new mtimes of files hashed intact."""
    touched = {}
    for name, recorded in files.items():
        try:
            stat = (target / name).stat()
        except OSError:
            return f"{name} is missing", touched
        if stat.st_size != recorded["size"]:
            return f"{name} has {stat.st_size} bytes, {recorded['size']} were recorded", touched
        if always or stat.st_mtime_ns != recorded["mtime_ns"]:
            if sha256_file(target / name) != recorded["sha256"]:
                return f"{name} does not match its recorded sha256", touched
            if stat.st_mtime_ns != recorded["mtime_ns"]:
                touched[name] = stat.st_mtime_ns
    return None, touched


def _how(always: bool, changed: int) -> str:
    """Which check ``check_entry`` ran, in words for results rows: the default one is weaker, and says so."""
    if always:
        return "sha256 of every file against the cache manifest (HARNESS_VERIFY=always)"
    hashed = (
        f", and the sha256 of the {changed} file(s) whose mtime changed" if changed else ", not their sha256"
    )
    return f"sizes and mtimes of every file against the cache manifest{hashed} (HARNESS_VERIFY=always hashes all)"


def _marked_damage(target: Path) -> str | None:
    """What ``mark_damaged`` recorded in ``target``, or None when it is unmarked."""
    path = target / DAMAGED
    if not path.exists():
        return None
    try:
        return path.read_text(errors="replace").strip() or "no detail recorded"
    except OSError as exc:
        return f"its damage mark is unreadable ({exc.strerror or exc})"


def mark_damaged(target: Path, problem: str) -> str:
    """Mark ``target`` so that its next use rebuilds it, and say what happens next (for `harness cache verify`).

    Why a mark: verify hashes every file, but a use checks only sizes and mtimes by default, which damage
    that kept both passes, so the use would take the entry again.  A mark, not removal, because verify
    should delete nothing: the damaged files stay to be looked at until the rebuild replaces them.
    """
    if target.name.startswith(".tmp-"):  # never write into a staging folder: its build may still be running
        return "a leftover of an interrupted build (or one still running), never used; `harness cache clear` removes it"
    try:
        if not (target / DAMAGED).exists():
            (target / DAMAGED).write_text(problem + "\n")
    except OSError as exc:
        return (
            f"it cannot be marked for rebuilding ({exc.strerror or exc}), so a use that checks only sizes and "
            f"mtimes would take it: make {target.parent.parent} writable and verify again, or set HARNESS_CACHE"
        )
    return "it is rebuilt when next used"


def how_checked(path: Path) -> str:
    """How this process last checked the cache entry holding ``path`` (in ``usable`` or ``build_once``), for
    results rows: which check stands behind a cached checkpoint depends on ``HARNESS_VERIFY`` and on this use."""
    for folder in (_key(path), *_key(path).parents):
        if folder in _checks:
            return _checks[folder]
    return "not checked by this process"


def _key(path: Path) -> Path:
    return Path(os.path.abspath(path))


def _remember_mtimes(target: Path, marker: dict, touched: dict[str, int]) -> None:
    """Record new mtimes of files whose content was just found intact; best effort (the cache may be read-only)."""
    for name, mtime in touched.items():
        marker["files"][name]["mtime_ns"] = mtime
    try:
        _write_marker(target, marker)
    except OSError:
        pass


def remove_entry(target: Path) -> None:
    """Take ``target`` out of the cache at once (a rename), then delete it."""
    trash = target.with_name(f".tmp-{target.name}-removed-{os.getpid()}")
    try:
        os.replace(target, trash)
    except FileNotFoundError:  # another process removed it first
        return
    shutil.rmtree(trash, ignore_errors=True)


def usable(target: Path, what: str, again: str = "rebuilding it") -> bool:
    """True when ``target`` is an intact entry.  A damaged one is removed and reported on one line
    (``again`` says what happens next), so that the caller builds it afresh."""
    if not target.exists():
        return False
    problem, how = check_entry(target)
    if problem is None:
        _checks[_key(target)] = how
        return True
    try:
        remove_entry(target)
    except OSError as exc:
        raise HarnessError(
            f"the {what} in {target} is damaged ({problem}) and cannot be removed ({exc}); "
            f"set HARNESS_CACHE to a writable folder"
        ) from exc
    notice(f"the {what} in {target} is damaged ({problem}); {again}")
    return False


def build_once(target: Path, build: Callable[[Path], dict], what: str, again: str = "rebuilding it") -> Path:
    """``target``, a cache folder made once by ``build(staging_folder)`` and checked on every call.

    ``build`` fills a temporary sibling folder and returns facts worth keeping (timings, checks, pins);
    they are written with the manifest to a marker file last, and the folder is renamed into place, so
    a folder under its final name is always complete.  Another process that finishes first wins; ours is
    discarded.  ``what`` names the entry in messages.
    """
    if usable(target, what, again):
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
        try:
            facts = build(staging)
            _write_marker(staging, {**facts, "files": _manifest(staging)})
            os.replace(staging, target)
            _checks[_key(target)] = BUILT_NOW
        except OSError:
            problem, how = check_entry(target)
            if problem is not None:  # not merely "another process was first"
                raise
            _checks[_key(target)] = how
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    except OSError as exc:
        raise HarnessError(
            f"cannot write the {what} to the cache {target.parent} ({exc}); "
            f"set HARNESS_CACHE to a writable folder with enough space"
        ) from exc
    return target


def _entry_folders() -> list[Path]:
    """``<cache>/<kind>/<entry>`` folders: kinds are assets, converted, finetuned, and what plugins add."""
    return sorted(path for path in cache_dir().glob("*/*") if path.is_dir())


def entries() -> list[Path]:
    """Every entry of the cache (staging debris excluded), in a stable order."""
    return [path for path in _entry_folders() if not path.name.startswith(".tmp-")]


def entry_name(path: Path) -> str:
    """``<kind>/<folder>``, as ``harness cache`` shows it."""
    return f"{path.parent.name}/{path.name}"


def select_entries(name: str | None) -> list[Path]:
    """Entries matching ``name``: a kind (``assets``), ``kind/folder``, a folder, or an asset name (``minilm``
    matches ``assets/minilm-0.1.0``); for None all of them, staging debris included."""
    if name is None:
        return _entry_folders()
    found = [
        path
        for path in entries()
        if name in (path.parent.name, path.name, entry_name(path)) or path.name.startswith(name + "-")
    ]
    if not found:
        known = ", ".join(entry_name(path) for path in entries()) or "none"
        raise HarnessError(f"no cache entry matches {name!r}; entries in {cache_dir()}: {known}")
    return found
