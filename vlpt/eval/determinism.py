"""Which settings of a run keep it from being bitwise reproducible (same seed, same machine, same metrics).

On a CPU in fp32 a run is: every random draw comes from the run's seed, and a resumed run restores the
random states it stopped with (``vlpt.eval.resume``). Records carry the answer as
``config.determinism`` (see ``vlpt.results.record``).
"""
from __future__ import annotations

from vlpt.backbone.precision import MIXED_PRECISION


def determinism(device_type: str, precision: str, deterministic: bool | str, compile: bool, compile_backend: str,
                world_size: int, num_workers: int, resumed: bool) -> dict:
    """``{"deterministic": bool, "nondeterministic": [reasons]}`` for a run with these settings: each
    reason names a setting that was used and why it breaks bitwise reproducibility."""
    reasons = []
    if device_type == "cuda":
        if deterministic is not True:
            reasons.append(f"GPU with trainer.deterministic {deterministic!r}: operations without a deterministic "
                           f"GPU implementation (atomic adds) are allowed")
        if precision in MIXED_PRECISION:
            reasons.append(f"mixed precision {precision}: reduced-precision GPU kernels chosen per device and "
                           f"library version")
    if compile and compile_backend != "eager":
        reasons.append(f"torch.compile (backend {compile_backend}): generated and autotuned kernels may order "
                       f"floating-point operations differently between compilations")
    if world_size > 1:
        reasons.append(f"{world_size} processes (DDP): gradients are summed across processes (all-reduce order), "
                       f"and each process draws its own augmentations")
    if resumed and num_workers > 0:
        reasons.append(f"resumed with {num_workers} data loader worker(s): the workers' random streams restart at "
                       f"the checkpoint")
    return {"deterministic": not reasons, "nondeterministic": reasons}
