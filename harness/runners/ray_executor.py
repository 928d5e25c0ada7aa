"""Sweeps spread over a Ray cluster: ``harness run ... --executor ray [--ray-address ADDRESS]``.

Ray schedules; the cell logic is the serial sweep's own (``harness.runners.sweep``: ``prepare_group``,
``measure_cell``, ``finish_row``), so both executors write the same rows.  Three kinds of Ray task:

* **prepare**, one per group (model × task × protocol × method × seed): the protocol loads the model and
  data, fine-tunes (through the fine-tune cache in ``$HARNESS_CACHE``, so a rerun never trains again) and
  fits the method.  It returns the ``Prepared`` model to Ray's object store, where every node can read it,
  and a small ``row_source`` to the driver.
* **evaluate**, one per cell: the prepared model pruned at the cell's speedup, its quality measured.
* **time**, one per cell: the same pruned model timed against stock dense, with the hardware fingerprint
  of the machine that timed it, and the torch threads and timing tries of the driver (``--threads``), so
  the rows say what the cells' identity says.

Each task declares what it needs: one GPU when the sweep's device is CUDA (``cuda:N`` becomes the GPU Ray
assigns to the task), else ``TASK_CPUS`` CPUs (and as many torch threads).  Timing runs alone on its
machine through a per-node custom resource, ``timing_slot``, of which every node declares 1: a timing task
takes the whole slot, every prepare and evaluate task a sliver of it (``SHARE``).  So two timings never
share a node, and a timing starts only once no training or evaluation holds that node's slot (and none
starts while it runs).  Why not make timing take all the node's CPUs instead: nodes differ in CPU count,
and it would not keep GPU training off the machine.  A local Ray (no ``--ray-address``) declares the slot
itself; a cluster operator starts each node with ``ray start ... --resources '{"timing_slot": 1}'``, and a
cluster without it is refused.

Rows come back to the driver, which alone appends them to ``results.jsonl`` as cells finish, under the run
folder's lock: crash safety, resume and the one-writer lock hold as for a serial sweep.  A worker that
dies is replaced and its task retried (``RETRIES``); a cell's row is written once, when its evaluation
and timing have both returned.  Unlike the serial sweep, cells whose latency batch is random ids are
timed per cell rather than once per sweep (their tasks run apart; nothing is shared between them).
Workers get the driver's ``HARNESS_*``/``HF_*`` variables and working folder, so relative paths and the
cache resolve as on the driver: on a cluster, both must be on storage every node sees.

``ray`` is imported here only, when a sweep asks for it: ``import harness`` never needs it.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
from contextlib import contextmanager, suppress
from dataclasses import replace

import torch

from harness.measure import latency
from harness.measure.hardware import usable_cores
from harness.registry import HarnessError
from harness.runners.sweep import finish_row, measure_cell, prepare_group, row_source

TIMING_SLOT = "timing_slot"
SHARE = 0.001
"""The sliver of a node's timing slot each prepare and evaluate task holds: up to 1,000 of them share a
node (its CPUs and GPUs limit them first), and a timing task, which takes the whole slot, waits for them."""
TASK_CPUS = 1
"""CPUs (and torch threads) of each prepare and evaluate task on a CPU sweep."""
RETRIES = 3
"""Tries of a task whose worker died (OOM, a lost node) after the first; errors in the task are not retried."""
CONNECT_TIMEOUT_S = 5.0
KILL_ONCE = "HARNESS_RAY_KILL_ONCE"
"""Tests only: a file path; the first evaluate task that can create it kills its own worker after
measuring, so that the retry is exercised."""
FORWARDED = ("HARNESS_", "HF_")
START_CLUSTER = (
    "start one with: ray start --head --resources '{\"timing_slot\": 1}' (and on each other node: "
    "ray start --address HEAD:6379 --resources '{\"timing_slot\": 1}'), or drop --ray-address to run on a "
    "local Ray"
)


def _ray():
    """Ray, imported on first use: an optional dependency (the ``ray`` extra)."""
    try:
        import ray
    except ImportError:
        raise HarnessError(
            "--executor ray needs Ray, which is not installed: pip install 'acc-harness[ray]' "
            "(or drop --executor ray)"
        ) from None
    return ray


class RayExecutor:
    """Runs a sweep's groups as Ray tasks; ``address`` None starts a local Ray on this machine."""

    def __init__(self, address: str | None = None):
        self.address = address

    @contextmanager
    def session(self, config):
        """Connected to the cluster (or a local Ray started) for the ``with`` block; refused in one line
        before any work when the cluster does not answer or cannot run the sweep's tasks."""
        ray = _ray()
        started = self._connect(ray)
        try:
            _check_cluster(ray, config, self.address or "the local Ray")
            yield
        finally:
            if started:
                ray.shutdown()

    def _connect(self, ray) -> bool:
        """Connect; True when this call started Ray (and must shut it down).  A process already connected
        (a notebook, the tests) runs on that Ray."""
        if self.address is not None:
            _probe(self.address)
        if ray.is_initialized():
            current = ray.get_runtime_context().gcs_address
            if self.address not in (None, "auto", current):
                raise HarnessError(
                    f"this process is already connected to the Ray cluster at {current}, not {self.address}"
                )
            return False
        quiet = {"log_to_driver": False, "logging_level": logging.ERROR}
        if self.address is None:
            ray.init(num_cpus=usable_cores(), resources={TIMING_SLOT: 1}, include_dashboard=False, **quiet)
            return True
        try:
            ray.init(address=self.address, **quiet)
        except Exception as exc:  # Ray raises ConnectionError, RuntimeError or its own: all mean "no cluster"
            raise HarnessError(
                f"cannot connect to a Ray cluster at --ray-address {self.address} ({_first_line(exc)}); "
                f"{START_CLUSTER}"
            ) from None
        return True

    def run(self, config, groups: list, store, started) -> None:
        """Submit every group's tasks, then append each cell's row as soon as its evaluation and timing
        are back; on an error, cancel what is still queued or running."""
        ray = _ray()
        worker = replace(config, device="cuda" if config.device.startswith("cuda") else "cpu", progress=False)
        env = {
            "vars": {k: v for k, v in os.environ.items() if k.startswith(FORWARDED)},
            "cwd": os.getcwd(),
        }
        timing = {"threads": torch.get_num_threads(), "attempts": latency.ATTEMPTS}
        tasks = _remote_tasks(ray, worker.device)
        sources, cells = [], []  # cells: (group, speedup, key, (source, quality, timed) refs)
        for group in groups:
            prepared, source = tasks["prepare"].remote(worker, group, env)
            sources.append(source)
            for speedup, key in group.todo.items():
                quality = tasks["evaluate"].remote(worker, group.cells, prepared, speedup, env)
                timed = tasks["time"].remote(worker, group.cells, prepared, speedup, env, timing)
                cells.append((group, speedup, key, (source, quality, timed)))
        _drain(ray, config, sources, cells, store, started)


def _remote_tasks(ray, device: str) -> dict:
    """The three Ray tasks with what each declares (see the module's docstring)."""
    gpu = device == "cuda"
    work = {"num_gpus": 1, "num_cpus": 1} if gpu else {"num_cpus": TASK_CPUS}
    shared = {"max_retries": RETRIES, "resources": {TIMING_SLOT: SHARE}, **work}
    return {
        "prepare": ray.remote(_prepare_task).options(num_returns=2, **shared),
        "evaluate": ray.remote(_evaluate_task).options(**shared),
        "time": ray.remote(_timing_task).options(
            max_retries=RETRIES, resources={TIMING_SLOT: 1}, num_cpus=1, num_gpus=int(gpu)
        ),
    }


def _drain(ray, config, sources: list, cells: list, store, started) -> None:
    """Wait for the tasks one by one; a cell's row is appended once its three refs are all done, and
    ``started`` is called when the first prepare task is back (the model and data loaded: sweep.json)."""
    waiting: dict = {}
    for cell in cells:
        for ref in cell[3]:
            waiting.setdefault(ref, []).append(cell)
    pending, done, sources = list(waiting), set(), set(sources)
    try:
        while pending:
            [ref], pending = ray.wait(pending, num_returns=1)
            _get(ray, ref)  # a failed task raises here, before any later row
            done.add(ref)
            if ref in sources:
                started()
            for group, speedup, key, refs in waiting[ref]:
                if all(r in done for r in refs):
                    source, quality, timed = (_get(ray, r) for r in refs)
                    measured = {**quality, **timed}
                    store.append(finish_row(config, group.cells, key, speedup, source, measured))
    finally:
        for ref in pending:  # an error or Ctrl-C: nothing keeps computing for a driver that stopped
            with suppress(Exception):  # a task that ended meanwhile; the error that stopped us matters
                ray.cancel(ref, force=True)


def _get(ray, ref):
    """``ray.get``; a HarnessError raised in a task is raised here as itself (one line for the user)."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, HarnessError):
            raise exc.cause from None
        raise
    except ray.exceptions.RayError as exc:  # a worker or node lost more often than RETRIES allows
        raise HarnessError(
            f"a Ray task failed {RETRIES + 1} times ({_first_line(exc)}); finished cells are saved, "
            "rerun the same command to resume"
        ) from None


def _prepare_task(config, group, env):
    """Ray task: the group's prepared model (to the object store, on the CPU so that any node's worker can
    load it) and its row source (to the driver)."""
    _enter(env, TASK_CPUS)
    prepared = prepare_group(config, group)
    prepared.loaded.model.to("cpu")
    return prepared, row_source(prepared)


def _evaluate_task(config, cells, prepared, speedup, env) -> dict:
    """Ray task: one cell's quality columns."""
    _enter(env, TASK_CPUS)
    prepared.loaded.model.to(config.device)
    measured = measure_cell(config, cells, prepared, speedup, parts=("quality",))
    _die_once_if_asked()
    return measured


def _timing_task(config, cells, prepared, speedup, env, timing) -> dict:
    """Ray task: one cell's speed columns and the fingerprint of this machine, alone on it."""
    _enter(env, timing["threads"])
    latency.ATTEMPTS = timing["attempts"]
    prepared.loaded.model.to(config.device)
    return measure_cell(config, cells, prepared, speedup, parts=("timing",))


def _enter(env: dict, threads: int) -> None:
    """Make this worker see what the driver sees: its harness and hub variables (a worker serves many
    tasks, so a variable the driver lacks is removed), its working folder where this node has it, and
    ``threads`` torch threads (Ray starts workers with one)."""
    for name in [name for name in os.environ if name.startswith("HARNESS_") and name not in env["vars"]]:
        del os.environ[name]
    os.environ.update(env["vars"])
    if os.path.isdir(env["cwd"]):
        os.chdir(env["cwd"])
    torch.set_num_threads(threads)


def _die_once_if_asked() -> None:
    marker = os.environ.get(KILL_ONCE)
    if not marker:
        return
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    os.kill(os.getpid(), signal.SIGKILL)


def _check_cluster(ray, config, where: str) -> None:
    """Refuse a cluster that cannot run the sweep: no node declares the timing slot, or no GPU for a CUDA
    sweep."""
    resources = ray.cluster_resources()
    if resources.get(TIMING_SLOT, 0) < 1:
        raise HarnessError(
            f"the Ray cluster at {where} has no node with a {TIMING_SLOT!r} resource, which keeps timings "
            f"alone on their machine; start each node with ray start ... --resources "
            f"'{{\"{TIMING_SLOT}\": 1}}'"
        )
    if config.device.startswith("cuda") and resources.get("GPU", 0) < 1:
        raise HarnessError(f"--device {config.device} asked for, but the Ray cluster at {where} has no GPU")


def _probe(address: str) -> None:
    """A cluster address that does not answer is refused within ``CONNECT_TIMEOUT_S`` (``ray.init`` itself
    waits much longer and logs as it retries)."""
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except ValueError:
        raise HarnessError(
            f"--ray-address must be HOST:PORT (such as 10.0.0.1:6379), got {address!r}"
        ) from None
    except OSError as exc:
        raise HarnessError(
            f"no Ray cluster answers at --ray-address {address} ({exc.strerror or exc}); {START_CLUSTER}"
        ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


__all__ = ["KILL_ONCE", "TIMING_SLOT", "RayExecutor"]
