"""A record's peak memory is its own run's: resetting the peak forgets what the process held before."""
from pathlib import Path

import numpy as np
import pytest
import torch

from vlpt.eval.memory import peak_memory_mb, reset_peak_memory, resident_peak_mb


def test_reset_forgets_an_earlier_peak():
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("the resident peak resets on Linux only")
    block = np.ones(400 * 2**20 // 8)  # 400 MiB, touched
    held = resident_peak_mb()
    del block
    reset_peak_memory(torch.device("cpu"))
    assert resident_peak_mb() < held - 300
    assert peak_memory_mb(torch.device("cpu")) == pytest.approx(resident_peak_mb(), abs=0.1)
