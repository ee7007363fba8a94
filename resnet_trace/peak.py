"""The one peak-memory meter: a step's peak above a level, on CUDA or on the CPU.

:class:`PeakMeter` reads its level when it is made and its high-water mark from then on;
``reset()`` starts the mark again and keeps the level (a measured step after an unmeasured one,
against the level before the model was built). ``run --backward`` (:mod:`resnet_trace.training`)
and each rank of the sharded step (:mod:`resnet_trace.rankstep`) measure with it.

* CUDA: the caching allocator's ``max_memory_allocated`` after ``reset_peak_memory_stats``,
  above ``memory_allocated`` at the level.
* The CPU (Linux): the resident set's high-water mark (VmHWM in ``/proc/self/status``, reset by
  writing 5 to ``/proc/self/clear_refs``, after ``malloc_trim``), above the resident set (VmRSS)
  at the level. Where the mark cannot be reset, ``getrusage``'s lifetime maximum, which says
  something only when the step raised it; otherwise, and on other devices, ``None``.
"""

from __future__ import annotations

import contextlib
import ctypes
import sys
from pathlib import Path
from typing import Any

CUDA = "cuda max_memory_allocated"
VMHWM = "VmHWM (/proc/self/status)"
RUSAGE = "getrusage ru_maxrss"
NONE = "none"


class PeakMeter:
    """A peak above the level read when the meter was made. ``source`` says how it is read."""

    def __init__(self, device: Any) -> None:
        import torch

        self.device = torch.device(device)
        self.level = 0
        self._ru_level = 0
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.level = torch.cuda.memory_allocated(self.device)
            self.source = CUDA
            return
        if self.device.type != "cpu":
            self.source = NONE
            return
        trim_heap()
        rss = status_bytes("VmRSS")
        self.level = rss or 0
        self.source = VMHWM if rss is not None else NONE
        self.reset()

    def reset(self) -> None:
        """Start the high-water mark again, from now; the level stays."""
        if self.source == CUDA:
            import torch

            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        if self.source == NONE and self.device.type != "cpu":
            return
        trim_heap()
        try:
            Path("/proc/self/clear_refs").write_text("5")
            if status_bytes("VmHWM") is None:
                raise OSError("no VmHWM")
            self.source = VMHWM
        except OSError:
            self._ru_level = ru_maxrss()
            self.source = RUSAGE if self.level else NONE

    def peak(self) -> int | None:
        """The peak since the last reset above the level, in bytes (``None``: it cannot be read)."""
        if self.source == CUDA:
            import torch

            torch.cuda.synchronize(self.device)
            return max(0, torch.cuda.max_memory_allocated(self.device) - self.level)
        if self.source == VMHWM:
            high = status_bytes("VmHWM")
            return None if high is None else max(0, high - self.level)
        if self.source == RUSAGE:
            after = ru_maxrss()
            return after - self.level if after > self._ru_level else None
        return None


def status_bytes(field: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` in bytes; ``None`` where it cannot be read."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def ru_maxrss() -> int:
    """This process's lifetime resident maximum in bytes (``getrusage``); 0 where there is none."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return 0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024  # bytes on macOS, KiB on Linux


def trim_heap() -> None:
    """Give freed heap back to the system (glibc), so that a level read next is a clean one."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
