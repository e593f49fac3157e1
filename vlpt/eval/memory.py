"""The peak memory of one run: a record's ``peak_memory_mb``.

Each run starts by resetting the peaks (``reset_peak_memory``), so a record holds its own run's peak and not
the largest of every run its process made before it. On Linux the resident peak is ``VmHWM``, which writing 5
to ``/proc/self/clear_refs`` resets; where that is not possible (another system), the process's lifetime peak
(``ru_maxrss``) stands in. On a GPU the peak of allocated GPU memory is added.
"""
from __future__ import annotations

import re
import resource
from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak: the resident peak where the system allows it, and the GPU's."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        pass  # not Linux, or not allowed: the lifetime peak stands in
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def resident_peak_mb() -> float:
    """Peak resident memory since the last reset (Linux), else over the process's life, in MiB."""
    try:
        found = re.search(r"^VmHWM:\s+(\d+) kB", _STATUS.read_text(), re.MULTILINE)
    except OSError:
        found = None
    if found:
        return int(found.group(1)) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def peak_memory_mb(device: torch.device) -> float:
    """The run's peak: resident memory, plus allocated GPU memory on a GPU, in MiB."""
    peak = resident_peak_mb()
    if device.type == "cuda":
        peak += torch.cuda.max_memory_allocated(device) / 2**20
    return round(peak, 1)
