"""Entry-point plugins: a real plugin distribution (tests/plugin_pkg) installed into its own folder adds a
method, a task and a model alias that `harness list` shows and `harness run` uses; registry rules for
duplicates, unknown names and lazy loading."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from harness.registry import HarnessError, Registry

REPO = Path(__file__).resolve().parents[1]
PLUGIN = Path(__file__).parent / "plugin_pkg"
SOURCE = "harness-example-plugin 0.1.0"


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory):
    """The example plugin installed with pip into a folder of its own (the test environment is untouched)."""
    root = tmp_path_factory.mktemp("plugin")
    source = root / "source"
    shutil.copytree(PLUGIN, source)  # pip builds in the source tree: keep the repository clean
    site = root / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--quiet",
            "--target",
            str(site),
            str(source),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return site


def harness(args: list[str], site: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), str(REPO)]),
        "HARNESS_CACHE": str(cwd / "cache"),
    }
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_list_shows_plugin_entries_and_their_source(plugin_site, tmp_path):
    done = harness(["list"], plugin_site, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = {line.split()[0]: line for line in done.stdout.splitlines() if line.startswith("  ")}
    for name in ("keynorm", "tiny-sentiment", "tiny-bert"):
        assert lines[name].endswith(f"[{SOURCE}]"), lines[name]
    assert "largest norm" in lines["keynorm"] and "zero-shot" not in lines["tiny-sentiment"]
    assert lines["acc"].endswith("[built in]")


def test_run_uses_the_plugin_method_task_and_model(plugin_site, tmp_path):
    out = tmp_path / "runs" / "plugin"
    done = harness(
        [
            "run",
            "--models",
            "tiny-bert",
            "--tasks",
            "tiny-sentiment",
            "--methods",
            "keynorm,acc",
            "--speedups",
            "1,2",
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--max-length",
            "32",
            "--repeats",
            "1",
            "--out",
            str(out),
            "--no-progress",
        ],
        plugin_site,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted((r["method"], r["speedup"]) for r in rows) == [
        ("acc", 1),
        ("acc", 2),
        ("keynorm", 1),
        ("keynorm", 2),
    ]
    for row in rows:
        assert (
            row["model"] == "tiny-bert"
            and row["task"] == "tiny-sentiment"
            and row["main_metric"] == "accuracy"
        )
        assert set(row["metrics"]) == {"accuracy", "f1"} and 0 <= row["score"] <= 1
        assert row["train"]["method"] == row["method"]  # each method fine-tuned for itself
        assert row["predicted_speedup"] == pytest.approx(row["speedup"], rel=0.05)
        assert row["flops_measured"] == pytest.approx(row["flops_analytic"], rel=0.02)
    caches = {row["method"]: row["train"]["cache"] for row in rows}
    assert caches["acc"] != caches["keynorm"]
    kept = {row["method"]: row["kept_tokens"] for row in rows if row["speedup"] == 2}
    assert kept["keynorm"][-1] < kept["keynorm"][0]


def _entry(name: str, value: str, group: str = "harness.methods") -> metadata.EntryPoint:
    return metadata.EntryPoint(name=name, value=value, group=group)


def _registry(monkeypatch, entries):
    monkeypatch.setattr("harness.registry.plugin_entry_points", lambda group: entries)
    registry = Registry("method", group="harness.methods")
    registry.register("acc", "the built-in acc")
    return registry


def test_a_name_registered_twice_names_both_sources(monkeypatch):
    registry = _registry(monkeypatch, [("evil-plugin 1.0", _entry("acc", "json:dumps"))])
    with pytest.raises(
        HarnessError, match="method 'acc' is registered twice: by built in and by evil-plugin 1.0"
    ):
        registry.get("acc")


def test_entries_load_lazily_and_unknown_names_list_the_valid_ones(monkeypatch):
    registry = _registry(
        monkeypatch,
        [
            ("good-plugin 1.0", _entry("dumps", "json:dumps")),
            ("broken-plugin 2.0", _entry("broken", "no_such_module_anywhere:thing")),
        ],
    )
    assert registry.get("acc") == "the built-in acc"  # the broken plugin is not imported for it
    assert registry.get("dumps") is json.dumps and registry.source("dumps") == "good-plugin 1.0"
    with pytest.raises(HarnessError, match="method 'broken' from broken-plugin 2.0 failed to load"):
        registry.get("broken")
    with pytest.raises(HarnessError, match="unknown method 'nope'; valid methods: acc, dumps"):
        registry.get("nope")
