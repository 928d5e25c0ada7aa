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
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable

from harness.registry import HarnessError

MARKER = ".harness-built.json"
VERIFY_MODES = ("changed", "always")


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
        if path.is_file() and path.name != MARKER:
            stat = path.stat()
            files[path.relative_to(folder).as_posix()] = {
                "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha256_file(path)}
    return files


def _write_marker(folder: Path, marker: dict) -> None:
    temporary = folder / (MARKER + ".tmp")
    temporary.write_text(json.dumps(marker, indent=1, default=str))
    os.replace(temporary, folder / MARKER)


def entry_problem(target: Path, always: bool | None = None) -> str | None:
    """None when ``target`` is a complete entry whose files match its manifest; else what is wrong.

    ``always`` hashes every file (default: ``HARNESS_VERIFY``); otherwise only files whose size or
    mtime differ from the manifest are hashed.
    """
    try:
        marker = json.loads((target / MARKER).read_text())
        files = marker["files"]
    except FileNotFoundError:
        return "it has no completion marker: an interrupted build, or one made by an older harness"
    except (OSError, ValueError, KeyError, TypeError):
        return "it has no readable integrity manifest (made by an older harness?)"
    always = hash_every_use() if always is None else always
    touched = {}
    for name, recorded in files.items():
        try:
            stat = (target / name).stat()
        except OSError:
            return f"{name} is missing"
        if stat.st_size != recorded["size"]:
            return f"{name} has {stat.st_size} bytes, {recorded['size']} were recorded"
        if always or stat.st_mtime_ns != recorded["mtime_ns"]:
            if sha256_file(target / name) != recorded["sha256"]:
                return f"{name} does not match its recorded sha256"
            if stat.st_mtime_ns != recorded["mtime_ns"]:
                touched[name] = stat.st_mtime_ns
    if touched:
        _remember_mtimes(target, marker, touched)
    return None


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
    problem = entry_problem(target)
    if problem is None:
        return True
    try:
        remove_entry(target)
    except OSError as exc:
        raise HarnessError(f"the {what} in {target} is damaged ({problem}) and cannot be removed ({exc}); "
                           f"set HARNESS_CACHE to a writable folder") from exc
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
        except OSError:
            if entry_problem(target) is not None:  # not merely "another process was first"
                raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    except OSError as exc:
        raise HarnessError(f"cannot write the {what} to the cache {target.parent} ({exc}); "
                           f"set HARNESS_CACHE to a writable folder with enough space") from exc
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
    found = [path for path in entries()
             if name in (path.parent.name, path.name, entry_name(path)) or path.name.startswith(name + "-")]
    if not found:
        known = ", ".join(entry_name(path) for path in entries()) or "none"
        raise HarnessError(f"no cache entry matches {name!r}; entries in {cache_dir()}: {known}")
    return found
