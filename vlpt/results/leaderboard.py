"""Aggregate run records over seeds and render ``LEADERBOARD.md`` and ``leaderboard.csv``.

The records folder is the only input, and the output holds no timestamps, so
rebuilding from the same records gives byte-identical files.
"""
from __future__ import annotations

import csv
import io
import os
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from vlpt.results.record import ACCURACY, ADAPT_MS, DICE, IOU, RunRecord
from vlpt.results.store import RecordStore, atomic_write_text

MARKDOWN_NAME = "LEADERBOARD.md"
CSV_NAME = "leaderboard.csv"
CSV_COLUMNS = [
    "protocol", "backbone", "dataset", "method", "variant", "shots", "targets",
    "eval_set", "metric", "mean", "std", "n_seeds",
]
MISSING = "–"

PROTOCOL_TITLES = {
    "few_shot": "Few-shot classification",
    "base_to_novel": "Base-to-novel generalization",
    "cross_dataset": "Cross-dataset transfer",
    "domain_generalization": "Domain generalization",
    "test_time": "Test-time adaptation",
    "segmentation": "Segmentation",
}
_TRANSFER = ("cross_dataset", "domain_generalization", "test_time")


@dataclass(frozen=True)
class Stat:
    """A metric aggregated over seeds; ``std`` is None for values derived from means (HM, Avg)."""

    mean: float
    std: float | None
    n: int


@dataclass
class Group:
    """The records of one (protocol, backbone, dataset, method, variant, shots, targets), over seeds."""

    protocol: str
    backbone: str
    dataset: str
    method: str
    variant: str
    shots: int
    targets: tuple[str, ...]
    seeds: int = 0
    stats: dict[tuple[str, str], Stat] = field(default_factory=dict)  # (eval_set, metric) -> Stat

    def get(self, eval_set: str, metric: str = ACCURACY) -> Stat | None:
        return self.stats.get((eval_set, metric))

    def ordered_keys(self) -> list[tuple[str, str]]:
        """(eval_set, metric) pairs: the protocol's headline sets first, then the rest sorted."""
        if self.protocol == "few_shot":
            lead = ["test"]
        elif self.protocol == "base_to_novel":
            lead = ["base", "novel", "hm"]
        elif self.protocol in _TRANSFER:
            lead = ["test", *self.targets, "avg"]
        elif self.protocol == "segmentation":
            lead = ["test", *self.targets]
        else:
            lead = ["test"]
        rank = {name: i for i, name in enumerate(lead)}
        return sorted(
            self.stats,
            key=lambda k: (rank.get(k[0], len(lead)), k[0], k[1] != ACCURACY, k[1]),
        )


def _protocol_rank(protocol: str) -> tuple[int, str]:
    order = list(PROTOCOL_TITLES)
    return (order.index(protocol) if protocol in order else len(order), protocol)


def aggregate(records: list[RunRecord]) -> list[Group]:
    """Group records over seeds; mean, sample std (0 for one seed) and count per eval set and metric."""
    grouped: dict[tuple, list[RunRecord]] = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.identity.seed, r.run_id)):
        i = record.identity
        grouped[(i.protocol, i.backbone, i.dataset, i.method, i.variant, i.shots, i.targets)].append(record)

    groups = []
    for (protocol, backbone, dataset, method, variant, shots, targets), members in grouped.items():
        group = Group(protocol, backbone, dataset, method, variant, shots, targets, seeds=len(members))
        values: dict[tuple[str, str], list[float]] = defaultdict(list)
        for record in members:
            for eval_set, metrics in record.metrics.items():
                for metric, value in metrics.items():
                    values[(eval_set, metric)].append(float(value))
        for key, vals in values.items():
            std = statistics.stdev(vals) if len(vals) > 1 else 0.0
            group.stats[key] = Stat(statistics.fmean(vals), std, len(vals))
        _add_derived(group)
        groups.append(group)

    groups.sort(key=lambda g: (_protocol_rank(g.protocol), g.backbone, g.dataset, g.shots, g.method, g.variant, g.targets))
    return groups


def _add_derived(group: Group) -> None:
    """HM from the mean base and novel accuracy; Avg over the targets' mean accuracies."""
    if group.protocol == "base_to_novel":
        base, novel = group.get("base"), group.get("novel")
        if base and novel:
            total = base.mean + novel.mean
            hm = 2 * base.mean * novel.mean / total if total else 0.0
            group.stats[("hm", ACCURACY)] = Stat(hm, None, min(base.n, novel.n))
    elif group.protocol in _TRANSFER and group.targets:
        stats = [group.get(t) for t in group.targets]
        if all(stats):
            mean = statistics.fmean(s.mean for s in stats)
            group.stats[("avg", ACCURACY)] = Stat(mean, None, min(s.n for s in stats))


# ---------------------------------------------------------------- rendering


def _cell(stat: Stat | None) -> str:
    if stat is None:
        return MISSING
    if stat.std is None:
        return f"{stat.mean:.2f}"
    return f"{stat.mean:.2f} ± {stat.std:.2f}"


def _text(value: object) -> str:
    return str(value).replace("|", "\\|")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


SAMPLE_COUNT = "n"


def _adapt_ms(group: Group) -> str:
    times = [stat.mean for (eval_set, metric), stat in group.stats.items() if metric == ADAPT_MS]
    return f"{statistics.fmean(times):.1f}" if times else MISSING


def _protocol_section(protocol: str, groups: list[Group]) -> list[str]:
    title = PROTOCOL_TITLES.get(protocol, protocol.replace("_", " ").capitalize())
    lines = [f"## {title} (`{protocol}`)", ""]
    model, shots = ("Model", "Train images") if protocol == "segmentation" else ("Backbone", "Shots")
    header = [model, "Dataset", "Method", "Variant", shots]
    notes: list[str] = []

    if protocol == "few_shot":
        header += ["Accuracy (mean ± std)"]
        columns = [lambda g: _cell(g.get("test"))]
    elif protocol == "base_to_novel":
        header += ["Base", "Novel", "HM"]
        columns = [lambda g, s=s: _cell(g.get(s)) for s in ("base", "novel", "hm")]
        notes.append(
            "HM = 2·B·N / (B + N), computed from the mean base (B) and mean novel (N) accuracy "
            "over seeds, not averaged over per-seed HMs."
        )
    elif protocol in _TRANSFER:
        targets = list(dict.fromkeys(t for g in groups for t in g.targets))
        header += ["Source", *map(_text, targets), "Avg"]
        columns = [lambda g: _cell(g.get("test"))]
        columns += [lambda g, t=t: _cell(g.get(t)) if t in g.targets else MISSING for t in targets]
        columns += [lambda g: _cell(g.get("avg"))]
        notes.append(
            "Source: accuracy on the source dataset's test set. Avg: mean of the row's target "
            "accuracies (means over seeds); shown only when every target was evaluated."
        )
        if protocol == "test_time":
            header += ["ms / image"]
            columns += [_adapt_ms]
            notes.append(
                "ms / image: wall time to adapt to one test image and predict it, averaged over the row's "
                "evaluation sets and seeds (– for methods that do not adapt; without DiffTPT's one-off view "
                "generation). Shots: labelled images per class behind the starting prompt (0: none, the "
                "hand-written prompt)."
            )
    elif protocol == "segmentation":
        targets = list(dict.fromkeys(t for g in groups for t in g.targets))
        header += ["Dice", "IoU"] + [f"{_text(t)} {name}" for t in targets for name in ("Dice", "IoU")]
        columns = [lambda g, m=m: _cell(g.get("test", m)) for m in (DICE, IOU)]
        columns += [
            lambda g, t=t, m=m: _cell(g.get(t, m)) if t in g.targets else MISSING
            for t in targets for m in (DICE, IOU)
        ]
        notes.append(
            "Dice: per-image Dice averaged over images; IoU: dataset-level IoU of the foreground (binary) or "
            "averaged over classes (multi-class), in %. "
            "Train images: K training images (0: nothing trained)."
        )
    else:  # every evaluation set and metric; sample counts ("n") stay in the CSV only
        keys = list(dict.fromkeys(k for g in groups for k in g.ordered_keys() if k[1] != SAMPLE_COUNT))
        header += [_text(s if m == ACCURACY else f"{s} {m}") for s, m in keys]
        columns = [lambda g, k=k: _cell(g.stats.get(k)) for k in keys]
    header += ["Seeds"]

    rows = [
        [_text(g.backbone), _text(g.dataset), _text(g.method), _text(g.variant), str(g.shots)]
        + [column(g) for column in columns]
        + [str(g.seeds)]
        for g in groups
    ]
    lines += _table(header, rows)
    if notes:
        lines += [""] + notes
    return lines + [""]


def render_markdown(groups: list[Group], n_records: int, source: str) -> str:
    plural = "record" if n_records == 1 else "records"
    lines = [
        "# vlpt leaderboard",
        "",
        f"Generated by `vlpt leaderboard` from {n_records} {plural} in `{source}`; do not edit by hand.",
        "",
    ]
    if not groups:
        lines += [f"No run records found in `{source}`.", ""]
        return "\n".join(lines)
    lines += [
        "Accuracies in %, mean ± sample standard deviation over seeds (0.00 for a single seed); "
        "Seeds is the number of records in the row.",
        "",
    ]
    by_protocol: dict[str, list[Group]] = defaultdict(list)
    for group in groups:
        by_protocol[group.protocol].append(group)
    for protocol, members in by_protocol.items():  # groups are already in protocol order
        lines += _protocol_section(protocol, members)
    return "\n".join(lines)


def render_csv(groups: list[Group]) -> str:
    """Long format: one row per group, evaluation set and metric (HM and Avg rows have no std)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for g in groups:
        for eval_set, metric in g.ordered_keys():
            stat = g.stats[(eval_set, metric)]
            writer.writerow([
                g.protocol, g.backbone, g.dataset, g.method, g.variant, g.shots, ";".join(g.targets),
                eval_set, metric, f"{stat.mean:.6f}", "" if stat.std is None else f"{stat.std:.6f}", stat.n,
            ])
    return buffer.getvalue()


def _display_dir(records_dir: Path, out_dir: Path) -> str:
    """``records_dir`` relative to ``out_dir`` (independent of the working directory)."""
    try:
        return Path(os.path.relpath(records_dir.resolve(), out_dir.resolve())).as_posix()
    except ValueError:  # different drives on Windows
        return records_dir.name


def write_leaderboard(records_dir: str | Path, out_dir: str | Path) -> list[Path]:
    """Rebuild ``out_dir/LEADERBOARD.md`` and ``out_dir/leaderboard.csv`` from the records alone.

    Unreadable record files are skipped with a RecordWarning. Returns the written paths.
    """
    records_dir, out_dir = Path(records_dir), Path(out_dir)
    records = RecordStore(records_dir).records()
    groups = aggregate(records)
    markdown = render_markdown(groups, len(records), _display_dir(records_dir, out_dir))
    return [
        atomic_write_text(out_dir / MARKDOWN_NAME, markdown),
        atomic_write_text(out_dir / CSV_NAME, render_csv(groups)),
    ]


__all__ = ["Group", "Stat", "aggregate", "render_csv", "render_markdown", "write_leaderboard"]
