"""Run a benchmark measurement in a fresh process, so each peak-memory figure is its own."""
from __future__ import annotations

import multiprocessing as mp
from typing import Callable


def _child(queue, measure: Callable[..., dict], kwargs: dict) -> None:
    try:
        queue.put(measure(**kwargs))
    except Exception as error:  # the parent would wait for a result forever
        queue.put(error)
        raise


def run_isolated(measure: Callable[..., dict], **kwargs) -> dict:
    """``measure(**kwargs)`` in a spawned process; its exception, if any, raised here."""
    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(queue, measure, kwargs))
    process.start()
    result = queue.get()
    process.join()
    if isinstance(result, Exception):
        raise RuntimeError(f"{measure.__name__}({kwargs}) failed in its process") from result
    return result
