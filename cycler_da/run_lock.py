"""One writer per run: a run is locked while a process writes it.

The lock is an OS file lock (flock) on ``<runs_dir>/.<name>.lock``, beside the run directory
so that it also covers a run's set-up, before the directory exists. The kernel drops it when
its process ends however it ends, so a lock left by a killed process is no lock: ``--resume``
after ``kill -9`` needs no cleaning up. ``.<name>.owner`` says who holds it.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from filelock import FileLock, Timeout

from cycler_da.run_io import now
from cycler_da.run_setup import RunError


class RunLock:
    """Held by the one process that writes run `name` in `runs_dir` (a context manager)."""

    def __init__(self, runs_dir: Path, name: str):
        self.run_dir = runs_dir / name
        self.owner = runs_dir / f".{name}.owner"
        self.lock = FileLock(runs_dir / f".{name}.lock", timeout=0)

    def __enter__(self) -> RunLock:
        try:
            self.lock.acquire()
        except Timeout:
            holder = self.owner.read_text().strip() if self.owner.exists() else "another process"
            raise RunError(
                f"{self.run_dir} is being written by {holder}: wait for it to finish, or choose another --name"
            ) from None
        self.owner.write_text(f"pid {os.getpid()} on {socket.gethostname()}, since {now()}\n")
        return self

    def __exit__(self, *exc) -> None:
        self.owner.unlink(missing_ok=True)
        self.lock.release()
