"""Sweeps on Ray (``--executor ray``): the same quality as the serial sweep, a killed worker retried with
no row lost or doubled, a killed driver resumed, timings that never overlap, and bad input refused.

One local Ray of 2 CPUs serves the module (``local_ray``); the sweeps run on the tiny checkpoint."""

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import ray
from cli_checks import one_line_error, run_args

from harness import cli
from harness.runners.ray_executor import KILL_ONCE, TIMING_SLOT

ONE_TRY_CLI = (
    "import sys; from harness.measure import latency; from harness import cli; "
    "latency.ATTEMPTS = 1; sys.exit(cli.main(sys.argv[1:]))"
)
"""The CLI as the suite runs it in-process (one timing try: ``conftest._one_timing_try``), in a subprocess."""


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray of 2 CPUs and one timing slot, started once for the module and shut down after it (which
    ends every process it started); yields its address."""
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    ray.init(
        num_cpus=2,
        resources={TIMING_SLOT: 1},
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.ERROR,
    )
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def read_rows(run_dir):
    return [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]


def sweep(checkpoint, data_dir, out, *extra, methods="acc,truncation"):
    """2 methods × 2 speedups (4 cells) of the tiny checkpoint, one torch thread: the Ray executor's
    fine-tunes and evaluations run on one thread each, and the same threads give the same numbers."""
    return run_args(checkpoint, data_dir, "--methods", methods, "--threads", "1", *extra, out=str(out))


def with_speedups(args, speedups="1,2"):
    args[args.index("--speedups") + 1] = speedups
    return args


def test_ray_gives_the_serial_quality_and_timings_never_overlap(
    workdir, local_ray, tiny_checkpoint, tiny_sentiment_dir, monkeypatch
):
    serial, on_ray = workdir / "serial", workdir / "ray"
    assert cli.main(with_speedups(sweep(tiny_checkpoint, tiny_sentiment_dir, serial))) == 0
    monkeypatch.setenv("HARNESS_CACHE", str(workdir / "ray-cache"))  # Ray fine-tunes anew, in its workers
    args = with_speedups(sweep(tiny_checkpoint, tiny_sentiment_dir, on_ray, "--executor", "ray"))
    assert cli.main(args) == 0
    expected = {row["cell_key"]: row for row in read_rows(serial)}
    rows = read_rows(on_ray)
    assert len(rows) == 4 and {row["cell_key"] for row in rows} == set(expected)
    for row in rows:
        twin = expected[row["cell_key"]]
        assert row["train"]["reused"] is False
        assert (row["score"], row["metrics"], row["eval_clamped"]) == (
            twin["score"],
            twin["metrics"],
            twin["eval_clamped"],
        )
        assert row["identity"] == twin["identity"] and row["hardware"]["id"] == twin["hardware"]["id"]
        assert row["flops_measured"] == twin["flops_measured"] and row["kept_tokens"] == twin["kept_tokens"]
    windows = sorted(tuple(row["timing_window_s"]) for row in rows)
    assert all(end <= next_start for (_, end), (next_start, _) in zip(windows, windows[1:])), windows
    assert len(list((workdir / "ray-cache" / "finetuned").glob("*/model.safetensors"))) == 2


def test_a_killed_worker_is_retried_without_losing_or_doubling_a_row(
    workdir, local_ray, tiny_checkpoint, tiny_sentiment_dir, monkeypatch
):
    marker = workdir / "worker-killed"
    monkeypatch.setenv(KILL_ONCE, str(marker))
    out = workdir / "killed-worker"
    args = with_speedups(sweep(tiny_checkpoint, tiny_sentiment_dir, out, "--executor", "ray", methods="acc"))
    assert cli.main(args) == 0
    assert marker.exists()  # an evaluation task did kill its worker
    rows = read_rows(out)
    assert sorted(row["speedup"] for row in rows) == [1.0, 2.0]
    assert len({row["cell_key"] for row in rows}) == 2 and all(row["score"] is not None for row in rows)


def test_a_driver_killed_with_sigkill_resumes(workdir, local_ray, tiny_checkpoint, tiny_sentiment_dir):
    out = workdir / "killed-driver"
    args = with_speedups(
        sweep(tiny_checkpoint, tiny_sentiment_dir, out, "--executor", "ray", "--ray-address", local_ray),
        "1,2,3",
    )
    driver = subprocess.Popen(
        [sys.executable, "-c", ONE_TRY_CLI, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    results, deadline = out / "results.jsonl", time.monotonic() + 120
    while not (results.exists() and results.read_bytes().count(b"\n") >= 1):
        assert driver.poll() is None, driver.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, "no row landed in 120 s"
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    driver.stderr.close()
    landed = read_rows(out)
    assert 1 <= len(landed) < 6  # killed mid-sweep
    assert cli.main(args) == 0  # rerun (on the same cluster): only what is missing runs
    rows = read_rows(out)
    assert len(rows) == 6 and len({row["cell_key"] for row in rows}) == 6
    assert rows[: len(landed)] == landed  # the rows that had landed are kept as they were


def closed_port() -> int:
    """A local port where nothing listens (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--executor", "ray", "--ray-address", None], "no Ray cluster answers at --ray-address 127.0.0.1:"),
        (["--ray-address", "127.0.0.1:6379"], "--ray-address needs --executor ray"),
        (["--executor", "dask"], "invalid choice: 'dask'"),
    ],
)
def test_bad_executor_input_is_one_line_and_exit_2(
    workdir, tiny_checkpoint, tiny_sentiment_dir, capsys, extra, message
):
    extra = [f"127.0.0.1:{closed_port()}" if part is None else part for part in extra]
    out = workdir / "refused"
    start = time.monotonic()
    try:
        code = cli.main(run_args(tiny_checkpoint, tiny_sentiment_dir, *extra, out=str(out)))
    except SystemExit as exited:  # argparse's own refusals (one line too: cli._Parser)
        code = exited.code
    error = one_line_error(capsys, code)
    assert message in error and time.monotonic() - start < 30 and not out.exists()  # at once, nothing written
    if "answers" in message:
        assert "ray start --head --resources" in error and "drop --ray-address" in error


class _Cluster:
    """What ``_check_cluster`` asks of ray: the cluster's resources."""

    def __init__(self, resources: dict):
        self.resources = resources

    def cluster_resources(self) -> dict:
        return self.resources


@pytest.mark.parametrize(
    "resources, device, message",
    [
        ({"CPU": 8.0}, "cpu", "has no node with a 'timing_slot' resource"),
        (
            {"CPU": 8.0, TIMING_SLOT: 2.0},
            "cuda",
            "--device cuda asked for, but the Ray cluster at HEAD:6379 has no GPU",
        ),
    ],
)
def test_a_cluster_that_cannot_run_the_sweep_is_refused(resources, device, message):
    """A cluster whose nodes declare no timing slot would let timings share a machine; a CUDA sweep needs GPUs."""
    from types import SimpleNamespace

    from harness.registry import HarnessError
    from harness.runners.ray_executor import _check_cluster

    with pytest.raises(HarnessError, match=message):
        _check_cluster(_Cluster(resources), SimpleNamespace(device=device), "HEAD:6379")
    _check_cluster(_Cluster({"CPU": 8.0, "GPU": 1.0, TIMING_SLOT: 1.0}), SimpleNamespace(device=device), "x")
