"""What a leaderboard row's runs cost and how they chose their hyperparameters.

Cost, the mean over the row's records: training time per training image (the run's time before evaluation,
``timings.train_s``, over ``config.data.n_train``: data, stored features the run extracted, and training), test
time per evaluated image (``timings.eval_s`` over the images of every evaluation set, adaptation included) and
peak memory (``peak_memory_mb``). Selection: how vlpt's runs chose their hyperparameters (``config.selection``:
fixed or validation) and how the method's paper chose those behind its published figures (``selection`` in
``published.yaml``: fixed, validation, or test, searched on the test set).
"""
from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass

from vlpt.results.paper import paper_selection
from vlpt.results.record import RunRecord

MISSING = "–"


@dataclass(frozen=True)
class Cost:
    """Means over a row's records; None where no record has the figure."""

    train_ms_per_image: float | None
    test_ms_per_image: float | None
    peak_memory_mb: float | None


def _mean(values: Iterable[float | None]) -> float | None:
    found = [v for v in values if v is not None]
    return statistics.fmean(found) if found else None


def _train_ms(record: RunRecord) -> float | None:
    n_train = (record.config.get("data") or {}).get("n_train")
    seconds = record.timings.get("train_s")
    if not n_train or seconds is None or not record.config.get("epochs"):
        return None  # nothing trained (zero-shot, test-time runs)
    if "resumed_at_epoch" in (record.config.get("trainer") or {}):
        return None  # its train_s covers the epochs after the resume only
    return 1000.0 * seconds / n_train


def _test_ms(record: RunRecord) -> float | None:
    images = sum(int(metrics.get("n", 0)) for metrics in record.metrics.values())
    seconds = record.timings.get("eval_s")
    return None if not images or seconds is None else 1000.0 * seconds / images


def run_cost(records: list[RunRecord]) -> Cost:
    """The mean cost of ``records`` (a row's)."""
    return Cost(_mean(map(_train_ms, records)), _mean(map(_test_ms, records)),
                _mean(r.peak_memory_mb for r in records))


def run_selection(records: list[RunRecord]) -> str:
    """How the records chose their hyperparameters: one rule, the rules joined by "/" where they differ,
    MISSING for records made before vlpt wrote it."""
    rules = sorted({str(r.config["selection"]) for r in records if "selection" in r.config})
    return "/".join(rules) or MISSING


def selection_text(method: str, records: list[RunRecord]) -> str:
    """vlpt's rule and the paper's where it is known: ``fixed``, ``validation (paper: test)``."""
    ours, paper = run_selection(records), paper_selection(method)
    if paper is None:
        return ours
    return f"{ours} (paper: {paper.rule}{'?' if paper.unverified else ''})"


def format_cost(value: float | None, digits: int = 1) -> str:
    return MISSING if value is None else f"{value:.{digits}f}"


COST_NOTE = ("Train ms / img: the run's time before evaluation (data, the stored features it extracted, training) "
             "per training image; runs reusing features an earlier run of the suite stored count less, resumed runs "
             "not at all. Test ms / img: evaluation time per evaluated image, test-time adaptation included. Peak "
             "MiB: the run's peak memory "
             "(resident, plus GPU). Means over the row's records, on the records' own machines. Selection: how vlpt's "
             "runs chose their hyperparameters (fixed: the reference's settings; validation: searched on the run's "
             "validation images) and, in brackets, how the paper chose those behind its figures (test: searched on "
             "the test set; ? not verified).")

__all__ = ["COST_NOTE", "Cost", "format_cost", "run_cost", "run_selection", "selection_text"]
