"""Will a real forward fit? An estimate from a shape-only trace, checked before allocating."""

from __future__ import annotations

import os
from pathlib import Path

from resnet_trace.errors import UsageError
from resnet_trace.records import Trace

# Live at once in a no_grad forward of the seed's block: its input, the skip output,
# a conv output and its ReLU output, then the sum: about four maps of the largest size.
ACTIVATION_FACTOR = 4


def _numel(shape: tuple[int, ...] | None) -> int:
    n = 1
    for d in shape or ():
        n *= d
    return n


def estimate_bytes(trace: Trace, element_size: int) -> int:
    """Parameters + input + ``ACTIVATION_FACTOR`` x the largest output any call produced."""
    largest = max((_numel(r.out_shape) for r in trace.rows), default=0)
    largest = max(largest, _numel(trace.input_shape))
    return (trace.totals.params + _numel(trace.input_shape) + ACTIVATION_FACTOR * largest) * element_size


def available_bytes() -> int | None:
    """Memory this process can still take: MemAvailable, capped by a cgroup limit."""
    avail = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
                break
    except OSError:
        pass
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        try:
            raw = Path(limit_file).read_text().strip()
            if raw != "max" and int(raw) < 1 << 60:
                room = int(raw) - int(Path(usage_file).read_text().strip())
                avail = room if avail is None else min(avail, room)
            break
        except (OSError, ValueError):
            continue
    override = os.environ.get("RESNET_TRACE_MEMORY_LIMIT")
    if override:
        try:
            avail = int(float(override))
        except ValueError:
            raise UsageError(f"RESNET_TRACE_MEMORY_LIMIT={override!r} is not a number of bytes") from None
    return avail


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:,.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover


def guard(trace: Trace, element_size: int, *, available: int | None = None, where: str = "memory") -> int:
    """Refuse (exit 2) a forward whose estimate exceeds 80% of what is available."""
    need = estimate_bytes(trace, element_size)
    avail = available if available is not None else available_bytes()
    if avail is not None and need > 0.8 * avail:
        raise UsageError(
            f"run {'x'.join(map(str, trace.input_shape))} at base_dim {trace.model.base_dim} needs about "
            f"{human(need)} but {human(avail)} of {where} is available; use 'resnet-trace summary', "
            f"which needs no memory, or a smaller batch"
        )
    return need
