"""Will a real forward fit? An estimate from the largest output (the built-in model's arithmetic,
or a shape-only trace), checked before allocating."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

from resnet_trace.errors import UsageError
from resnet_trace.records import Shape, Trace
from resnet_trace.units import human

# Live at once in a no_grad forward of the seed's block: its input, the skip output,
# a conv output and its ReLU output, then the sum, plus the statistics' temporaries. Four such
# maps undercounted a measured peak by 15-30%, so the guard counts six.
ACTIVATION_FACTOR = 6
#: A forward may use at most this share of the memory available.
SHARE = 0.8
LIMIT_VAR = "RESNET_TRACE_MEMORY_LIMIT"
# K/M/G/T and KiB/MiB/GiB/TiB are powers of 1024, KB/MB/GB/TB powers of 1000, a bare number is bytes.
_UNITS = {"": 1, "b": 1, "k": 2**10, "kib": 2**10, "m": 2**20, "mib": 2**20, "g": 2**30, "gib": 2**30}
_UNITS |= {"t": 2**40, "tib": 2**40, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_BYTES = re.compile(r"\A\s*(?P<num>[0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*(?P<unit>[a-z]*)\s*\Z", re.I)


def parse_bytes(text: str) -> int | None:
    """The one reader of a size in bytes (``--budget``, ``RESNET_TRACE_MEMORY_LIMIT``): ``24GiB``,
    ``80GB``, ``512M``, ``8e9``; None when ``text`` is not one (or is beyond 2**80)."""
    m = _BYTES.match(text)
    unit = _UNITS.get(m["unit"].lower()) if m else None
    value = float(m["num"]) * unit if m and unit is not None else math.nan
    if not math.isfinite(value) or value > 2**80:
        return None
    return int(value)


def _numel(shape: tuple[int, ...] | None) -> int:
    n = 1
    for d in shape or ():
        n *= d
    return n


def largest_traced(trace: Trace) -> int:
    """Elements of the largest output any call of ``trace`` produced (0 for none)."""
    return max((_numel(r.out_shape) for r in trace.rows), default=0)


def estimate_bytes(params: int, input_shape: Shape, largest: int, element_size: int) -> int:
    """Parameters + input + ``ACTIVATION_FACTOR`` x the largest output (or the input, if larger)."""
    n_in = _numel(input_shape)
    return (params + n_in + ACTIVATION_FACTOR * max(largest, n_in)) * element_size


def available_bytes() -> int | None:
    """Memory this process can still take (:func:`host_room`)."""
    return host_room()[0]


def host_room() -> tuple[int | None, str]:
    """Memory this process can still take, and what set it: the smallest of MemAvailable, the
    cgroup's limit less its use, and the process's own address-space limit (``RLIMIT_AS``,
    ``ulimit -v``) less the address space it already maps; ``RESNET_TRACE_MEMORY_LIMIT`` instead
    of all three."""
    override = limit_override()
    if override is not None:
        return override, f", set by {LIMIT_VAR}"
    avail: int | None = None
    source = ""
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
                if avail is None or room < avail:
                    avail, source = room, " under the cgroup's limit"
            break
        except (OSError, ValueError):
            continue
    mapped = address_space_room()
    if mapped is not None and (avail is None or mapped < avail):
        avail, source = mapped, " under the process's address-space limit (RLIMIT_AS, ulimit -v)"
    return avail, source


def address_space_room() -> int | None:
    """``RLIMIT_AS`` (its soft limit) less the address space this process maps now; None when
    there is no such limit or it cannot be read."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft == resource.RLIM_INFINITY or soft < 0:
            return None
        mapped = int(Path("/proc/self/statm").read_text().split()[0]) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ImportError, OSError, ValueError, IndexError, AttributeError):
        return None
    return int(soft) - mapped


def physical_bytes() -> int | None:
    """The machine's physical memory, where ``/proc`` and cgroups say nothing (macOS, BSD)."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, OSError, ValueError):
        return None


def limit_override() -> int | None:
    """Bytes from ``RESNET_TRACE_MEMORY_LIMIT`` (``2e9``, ``512MiB``, ``24G``), or None when unset."""
    raw = os.environ.get(LIMIT_VAR, "").strip()
    if not raw:
        return None
    value = parse_bytes(raw)
    if value is None:
        raise UsageError(f"{LIMIT_VAR}={raw!r} is not a number of bytes (e.g. 8000000000, 8e9 or 8GiB)")
    return value


def guard(need: int, what: str, *, available: int | None = None, where: str = "memory") -> int:
    """Refuse (exit 2) ``what`` (``run 8x3x224x224 at base_dim 64``) when the ``need`` bytes
    estimated for it exceed ``SHARE`` (80%) of what is available; return ``need``.

    ``available`` is what the caller measured (an accelerator's free memory); without it the
    host's is read. ``RESNET_TRACE_MEMORY_LIMIT`` overrides both.
    """
    # The environment variable wins over what was measured, here or on an accelerator.
    override = limit_override()
    avail: int | None
    if override is not None:
        avail, set_by = override, f", set by {LIMIT_VAR}"
    elif available is not None:
        avail, set_by = available, ""
    else:
        avail, set_by = host_room()
    if avail is not None and need > SHARE * avail:
        raise UsageError(
            f"{what} needs about {human(need)}, over the limit of {human(SHARE * max(avail, 0))} "
            f"({SHARE:.0%} of the {human(max(avail, 0))} of {where} available{set_by}); use "
            f"'resnet-trace summary', which needs no memory, or a smaller batch"
        )
    return need


def check_read(need: int, what: str) -> None:
    """Refuse (exit 2) reading ``what`` when ``need`` bytes exceed ``SHARE`` of what is available.

    Called with sizes taken from a file's header or directory, before any data is read or
    allocated. Where nothing can be measured, the machine's physical memory is the ceiling.
    """
    avail, set_by = host_room()
    if avail is None:
        avail = physical_bytes()
    if avail is None:
        return
    if need > SHARE * avail:
        raise UsageError(
            f"{what} needs about {human(need)}, over the limit of {human(SHARE * max(avail, 0))} "
            f"({SHARE:.0%} of the {human(max(avail, 0))} of memory available{set_by}); it was not read"
        )


def parse_budget(text: str) -> int:
    """``--budget``: a size in bytes of at least 1 (:func:`parse_bytes`)."""
    value = parse_bytes(text)
    if value is None or value < 1:
        raise UsageError(f"budget {text!r} is not a size in bytes (e.g. 24GiB, 80GB, 512MiB or 1e9)")
    return value
