"""The one peak meter (resnet_trace.peak) against tensors of known size: the truth is their bytes."""

from __future__ import annotations

import os

import pytest
import torch

from resnet_trace.peak import NONE, VMHWM, PeakMeter

MIB = 2**20

linux_mark = pytest.mark.skipif(
    not os.access("/proc/self/clear_refs", os.W_OK), reason="needs a resettable VmHWM (Linux)"
)


def _touched(mib: int) -> torch.Tensor:
    return torch.ones(mib * MIB // 4)  # every page written, so resident


@linux_mark
def test_the_peak_is_what_was_allocated_above_the_level():
    meter = PeakMeter("cpu")
    assert meter.source == VMHWM
    x = _touched(64)
    del x
    peak = meter.peak()
    assert peak is not None and 63 * MIB <= peak < 96 * MIB, peak / MIB


@linux_mark
def test_reset_forgets_the_mark_and_keeps_the_level():
    meter = PeakMeter("cpu")
    big = _touched(64)
    del big
    kept = _touched(32)  # held across the reset: above the level, so in the next peak
    meter.reset()
    y = _touched(16)
    del y
    peak = meter.peak()
    # 32 kept + 16 at the peak, above the level read at the start; the 64 before the reset is gone
    assert peak is not None and 47 * MIB <= peak < 63 * MIB, peak / MIB
    del kept


def test_a_device_it_cannot_read_has_no_peak():
    meter = PeakMeter("meta")
    assert meter.source == NONE and meter.peak() is None
