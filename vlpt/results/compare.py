"""Two methods (or two variants) side by side over the runs they share, paired by seed.

Runs pair when they have the same protocol, backbone, dataset, shots, targets and seed; a side
that trains nothing (shots 0, e.g. zero-shot) pairs with the other side at each of its shot
counts. For every evaluation set both report, a row gives both means, the mean paired
difference B - A with its per-seed values, and a paired t-test of B against A
(``scipy.stats.ttest_rel``; no test with fewer than two paired seeds). Base-to-novel rows
add ``hm`` (harmonic mean of base and novel accuracy, per seed) and transfer rows ``avg``
(mean target accuracy, per seed); the leaderboard instead derives both from means.
"""
from __future__ import annotations

import statistics
import warnings
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Iterable

from vlpt.errors import ConfigError
from vlpt.results.record import ACCURACY, RunRecord
from vlpt.results.protocols import known_protocol
from vlpt.results.validate import expected_eval_sets

ALPHA = 0.05


@dataclass(frozen=True)
class Side:
    """One side of a comparison: a method and one of its variants."""

    method: str
    variant: str

    def __str__(self) -> str:
        return f"{self.method}/{self.variant}"


@dataclass(frozen=True)
class ComparisonRow:
    """One evaluation set of one (protocol, backbone, dataset, shots, targets): A and B paired by seed."""

    protocol: str
    backbone: str
    dataset: str
    shots: int
    targets: tuple[str, ...]
    eval_set: str
    metric: str
    a_shots: int
    b_shots: int
    seeds: tuple[int, ...]
    a_values: tuple[float, ...]
    b_values: tuple[float, ...]
    a_mean: float
    b_mean: float
    mean_difference: float
    differences: tuple[float, ...]
    p_value: float | None
    significant: bool | None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["targets"], d["seeds"] = list(self.targets), list(self.seeds)
        for key in ("a_values", "b_values", "differences"):
            d[key] = list(d[key])
        return d


def parse_side(spec: str, records: Iterable[RunRecord]) -> Side:
    """``method/variant``, or ``method``: its ``default`` variant, else its only variant in ``records``."""
    method, slash, variant = spec.partition("/")
    if not method or (slash and not variant):
        raise ConfigError(f"{spec!r} is not METHOD or METHOD/VARIANT")
    variants = sorted({r.identity.variant for r in records if r.identity.method == method})
    if not variants:
        methods = sorted({r.identity.method for r in records})
        raise ConfigError(f"no records of method {method!r}; methods with records: {', '.join(methods) or 'none'}")
    if slash:
        if variant not in variants:
            raise ConfigError(f"no records of {method}/{variant}; variants of {method}: {', '.join(variants)}")
        return Side(method, variant)
    if "default" in variants:
        return Side(method, "default")
    if len(variants) == 1:
        return Side(method, variants[0])
    raise ConfigError(f"method {method!r} has several variants ({', '.join(variants)}) and no default; "
                      f"name one as {method}/VARIANT")


def paired_test(a: list[float], b: list[float], alpha: float = ALPHA) -> tuple[float | None, bool | None]:
    """Two-sided paired t-test of ``b`` against ``a``: (p-value, p < alpha); (None, None) below two pairs.

    Identical differences at every seed give p = 1 when they are all zero, else p = 0.
    """
    if len(a) < 2:
        return None, None
    differences = [y - x for x, y in zip(a, b)]
    if max(differences) == min(differences):
        p = 1.0 if differences[0] == 0 else 0.0
    else:
        from scipy import stats

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            p = float(stats.ttest_rel(b, a).pvalue)
    return p, p < alpha


def _values(record: RunRecord, metric: str) -> dict[str, float]:
    """Evaluation set -> value of ``metric``, with per-seed hm / avg for accuracy."""
    values = {s: m[metric] for s, m in record.metrics.items() if metric in m}
    i = record.identity
    facts = known_protocol(i.protocol)
    derived = facts.derived if facts and metric == ACCURACY else None
    if derived == "harmonic_mean" and {"base", "novel"} <= values.keys():
        base, novel = values["base"], values["novel"]
        values["hm"] = 2 * base * novel / (base + novel) if base + novel else 0.0
    if derived == "target_mean" and i.targets and set(i.targets) <= values.keys():
        values["avg"] = statistics.fmean(values[t] for t in i.targets)
    return values


def _set_order(protocol: str, dataset: str, targets: tuple[str, ...], eval_set: str) -> tuple:
    lead = (expected_eval_sets(protocol, dataset, targets) or []) + ["hm", "avg"]
    return (lead.index(eval_set) if eval_set in lead else len(lead), eval_set)


def compare_records(records: Iterable[RunRecord], a: Side, b: Side, metric: str | None = None,
                    alpha: float = ALPHA) -> list[ComparisonRow]:
    """Rows comparing ``a`` and ``b`` on their shared runs; ``metric`` defaults to accuracy
    (dice for segmentation)."""
    if a == b:
        raise ConfigError(f"A and B are both {a}; compare two methods or two variants")
    sides: dict[Side, dict[tuple, dict[tuple[int, int], RunRecord]]] = {a: defaultdict(dict), b: defaultdict(dict)}
    for record in records:
        i = record.identity
        side = Side(i.method, i.variant)
        if side in sides:
            sides[side][(i.protocol, i.backbone, i.dataset, i.targets)][(i.shots, i.seed)] = record
    rows = []
    for key in sorted(sides[a].keys() & sides[b].keys()):
        protocol, backbone, dataset, targets = key
        runs_a, runs_b = sides[a][key], sides[b][key]
        facts = known_protocol(protocol)
        chosen = metric or (facts.metrics[0] if facts else ACCURACY)
        for shots in sorted({s for s, _ in runs_a} | {s for s, _ in runs_b}):
            pairs = []
            for seed in sorted({seed for _, seed in runs_a} | {seed for _, seed in runs_b}):
                ra = runs_a.get((shots, seed)) or (runs_a.get((0, seed)) if shots else None)
                rb = runs_b.get((shots, seed)) or (runs_b.get((0, seed)) if shots else None)
                if ra is not None and rb is not None:
                    pairs.append((seed, ra, rb))
            rows += _rows(protocol, backbone, dataset, targets, shots, chosen, pairs, alpha)
    return rows


def _rows(protocol, backbone, dataset, targets, shots, metric, pairs, alpha) -> list[ComparisonRow]:
    per_set: dict[str, list[tuple[int, float, float, int, int]]] = defaultdict(list)
    for seed, ra, rb in pairs:
        values_a, values_b = _values(ra, metric), _values(rb, metric)
        for eval_set in values_a.keys() & values_b.keys():
            per_set[eval_set].append((seed, values_a[eval_set], values_b[eval_set],
                                      ra.identity.shots, rb.identity.shots))
    rows = []
    for eval_set in sorted(per_set, key=lambda s: _set_order(protocol, dataset, targets, s)):
        seeds, va, vb, shots_a, shots_b = zip(*per_set[eval_set])
        differences = tuple(y - x for x, y in zip(va, vb))
        p, significant = paired_test(list(va), list(vb), alpha)
        rows.append(ComparisonRow(
            protocol=protocol, backbone=backbone, dataset=dataset, shots=shots, targets=targets,
            eval_set=eval_set, metric=metric, a_shots=shots_a[0], b_shots=shots_b[0], seeds=seeds,
            a_values=va, b_values=vb, a_mean=statistics.fmean(va), b_mean=statistics.fmean(vb),
            mean_difference=statistics.fmean(differences), differences=differences,
            p_value=p, significant=significant,
        ))
    return rows


def format_rows(rows: list[ComparisonRow], a: Side, b: Side, alpha: float = ALPHA) -> str:
    """A plain-text report: one block per (protocol, backbone, dataset, shots, targets)."""
    lines = [f"A = {a}, B = {b}; B - A paired by seed, paired t-test (significant: p < {alpha:g})"]
    header = ["eval set", "metric", "A mean", "B mean", "B - A", "p", "significant", "per seed B - A"]
    block: tuple | None = None
    table: list[list[str]] = []

    def flush() -> None:
        if table:
            widths = [max(len(r[c]) for r in [header, *table]) for c in range(len(header))]
            lines.extend("  " + "  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip()
                         for r in [header, *table])

    for row in rows:
        key = (row.protocol, row.backbone, row.dataset, row.shots, row.targets)
        if key != block:
            flush()
            table = []
            block = key
            targets = f", targets {', '.join(row.targets)}" if row.targets else ""
            own = "" if row.a_shots == row.b_shots else f" (A {row.a_shots}, B {row.b_shots})"
            lines += ["", f"{row.protocol}  {row.backbone}  {row.dataset}  shots {row.shots}{own}{targets}"]
        table.append([
            row.eval_set, row.metric, f"{row.a_mean:.2f}", f"{row.b_mean:.2f}", f"{row.mean_difference:+.2f}",
            "n/a" if row.p_value is None else f"{row.p_value:.3g}",
            "n/a" if row.significant is None else ("yes" if row.significant else "no"),
            ", ".join(f"{seed}: {d:+.2f}" for seed, d in zip(row.seeds, row.differences)),
        ])
    flush()
    return "\n".join(lines) + "\n"


__all__ = ["ALPHA", "ComparisonRow", "Side", "compare_records", "format_rows", "paired_test", "parse_side"]
