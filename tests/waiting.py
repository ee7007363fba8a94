"""Waiting on a condition with a deadline, for the signal tests (never a fixed sleep).

A fixed sleep is too long on a quiet machine (the suite waits for nothing) and too short on a
busy one (the signal lands before the moment the test means). These wait for the moment itself.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


def wait_for(condition: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` seconds pass; whether it held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


def _threads(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return next((int(line.split()[1]) for line in status.splitlines() if line.startswith("Threads:")), 0)


def wait_until_computing(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """Return once ``proc`` runs torch kernels: its intra-op worker threads have started.

    Importing torch (with numpy's BLAS pool) leaves a process at most one thread per CPU; the
    first parallel kernel starts torch's own workers, which takes it past that. Where /proc
    cannot tell (not Linux, or one thread per process by the environment), the deadline is the
    fallback: the signal then comes as late as a fixed sleep would have sent it. Fails at once
    if the process has already ended (the test would otherwise signal nothing).
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if not Path(f"/proc/{proc.pid}/status").exists():
        time.sleep(min(timeout, 5.0))
    else:
        wait_for(lambda: proc.poll() is not None or _threads(proc.pid) > cpus, timeout)
    assert proc.poll() is None, "the process ended before it could be signalled"


def wait_for_file(path: Path, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    """Return once ``path`` exists (a marker the child writes at the moment the test means)."""
    assert wait_for(lambda: path.exists() or proc.poll() is not None, timeout), f"{path} never appeared"
    assert proc.poll() is None, "the process ended before it could be signalled"
