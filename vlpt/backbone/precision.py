"""Mixed precision: the autocast Lightning trains under, for the code that runs outside Lightning's loops
(evaluation, stored features) to compute in the same precision."""
from __future__ import annotations

import torch

#: Lightning precisions that run under autocast, and the autocast's dtype
MIXED_PRECISION = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def autocast_for(precision: str, device: torch.device):
    """``torch.autocast`` as Lightning runs training at ``precision`` on ``device`` (disabled in fp32)."""
    dtype = MIXED_PRECISION.get(precision)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)
