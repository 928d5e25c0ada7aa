"""One live run per run folder: a lock that the kernel releases when its holder dies.

Why: two ``harness run`` commands with the same ``--out`` used to compute every cell twice (8 rows for 4
cells).  Now a second run into a folder that a live run holds refuses at once, on one line naming the
other process (pid, host, start); it does not wait, because a sweep can take hours and a user who
started two by mistake is better told than kept waiting.

The lock is ``fcntl.flock`` on ``<run>/.harness-run.lock``.  The kernel drops it when its process exits
or is killed, so a lock of a dead process never blocks; the file's content (pid, host, start, command)
only names the holder.  A clean exit empties the file, so a later run that finds content under a free
lock knows its holder died, takes the lock over and says so on one line.  The file stays in the folder:
deleting it while another process waits to open it would let two processes lock two different files.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from harness.assets.cache import notice
from harness.registry import HarnessError

LOCK_FILE = ".harness-run.lock"


@contextmanager
def run_lock(run_dir: str | os.PathLike[str]) -> Iterator[None]:
    """Hold ``run_dir``'s lock for the ``with`` block, or raise a HarnessError naming its live holder."""
    path = Path(run_dir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise HarnessError(f"cannot create the lock file {path}: {exc.strerror or exc}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise HarnessError(
                f"run folder {run_dir} is in use by {_describe(_read(fd))}; wait for it to "
                f"finish, or give this run another --out"
            ) from None
        if previous := _read(fd):
            notice(
                f"run folder {run_dir} was locked by {_describe(previous)}, which is no longer running; "
                f"taking it over"
            )
        _write(
            fd,
            {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "command": " ".join(sys.argv),
                "started": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            },
        )
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # a clean exit: nothing for the next run to take over
    finally:
        os.close(fd)  # and the kernel drops the lock


def _read(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    try:
        holder = json.loads(os.read(fd, 1 << 16) or b"{}")
    except ValueError:  # its holder died while writing it
        return {"pid": "?"}
    return holder if isinstance(holder, dict) else {"pid": "?"}


def _write(fd: int, holder: dict) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps(holder).encode())


def _describe(holder: dict) -> str:
    if not holder:
        return "another process (starting up)"
    return (
        f"pid {holder.get('pid', '?')} on {holder.get('host', '?')} (started {holder.get('started', '?')}: "
        f"{holder.get('command', '?')})"
    )
