"""Aggregate run records over seeds and render ``LEADERBOARD.md`` and ``leaderboard.csv``; the web page is
:mod:`vlpt.results.site`'s, and writing all three files is :mod:`vlpt.results.publish`'s.

The records folder is the only input besides the shipped published figures (:mod:`vlpt.results.paper`),
and the output holds no timestamps, so rebuilding from the same records gives byte-identical files.
"""
from __future__ import annotations

import csv
import io
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field

from vlpt.results.cost import COST_NOTE, format_cost, run_cost, run_selection, selection_text
from vlpt.results.paper import format_value, paper_results, paper_selection
from vlpt.results.protocols import known_protocol, protocol_names
from vlpt.results.record import ACCURACY, SAMPLE_COUNT, RunRecord

MARKDOWN_NAME = "LEADERBOARD.md"
CSV_NAME = "leaderboard.csv"
CSV_COLUMNS = [
    "protocol", "backbone", "dataset", "method", "variant", "shots", "targets",
    "eval_set", "metric", "mean", "std", "n_seeds", "ci95", "paper", "settings",
    "train_ms_per_image", "test_ms_per_image", "peak_memory_mb", "selection", "paper_selection",
]
#: the cost and selection columns of the Markdown and HTML tables (vlpt.results.cost)
COST_HEADERS = ["Train ms / img", "Test ms / img", "Peak MiB", "Selection"]
MISSING = "–"
#: the dataset of a row averaged over datasets (``dataset_averages``)
AVERAGE = "average"



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
    #: the records behind the row, by seed (for an average over datasets: those of every dataset)
    records: list[RunRecord] = field(default_factory=list, repr=False, compare=False)
    #: for an average over datasets (``dataset`` is AVERAGE): the datasets averaged
    over: tuple[str, ...] = ()

    def get(self, eval_set: str, metric: str = ACCURACY) -> Stat | None:
        return self.stats.get((eval_set, metric))

    @property
    def settings(self) -> str:
        """The non-default settings of the row's records (``nondefault_settings``), "" when all ran the defaults;
        a setting only some records used says how many (``train_views=8 (2 of 3 records)``)."""
        per_record = [nondefault_settings(record) for record in self.records]
        parts = []
        for found in dict.fromkeys(found for found in per_record if found):
            count, text = per_record.count(found), " ".join(found)
            parts.append(text if count == len(per_record) else f"{text} ({count} of {len(per_record)} records)")
        return "; ".join(parts)

    def ordered_keys(self) -> list[tuple[str, str]]:
        """(eval_set, metric) pairs: the protocol's headline sets first, then the rest sorted."""
        facts = known_protocol(self.protocol)
        lead = facts.lead_sets(self.targets) if facts else ["test"]
        rank = {name: i for i, name in enumerate(lead)}
        return sorted(
            self.stats,
            key=lambda k: (rank.get(k[0], len(lead)), k[0], k[1] != ACCURACY, k[1]),
        )


def nondefault_settings(record: RunRecord) -> tuple[str, ...]:
    """The settings a record ran with that compute something other than the reference code, for speed:
    ``train_views=N`` when it trained on N stored views per image, one drawn per epoch (the feature cache's
    ``train_views``; 0: the centre view), not on a new random crop every epoch. Empty for the defaults."""
    cache, data = record.config.get("feature_cache"), record.config.get("data")
    views = cache.get("train_views") if isinstance(cache, dict) else None
    augment = data.get("train_augment") if isinstance(data, dict) else None
    if isinstance(views, int) and not isinstance(views, bool) and augment != "none":
        return (f"train_views={views}",)
    return ()


def _protocol_rank(protocol: str) -> tuple[int, str]:
    order = protocol_names()
    return (order.index(protocol) if protocol in order else len(order), protocol)


def aggregate(records: list[RunRecord]) -> list[Group]:
    """Group records over seeds; mean, sample std (0 for one seed) and count per eval set and metric."""
    grouped: dict[tuple, list[RunRecord]] = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.identity.seed, r.run_id)):
        i = record.identity
        grouped[(i.protocol, i.backbone, i.dataset, i.method, i.variant, i.shots, i.targets)].append(record)

    groups = []
    for (protocol, backbone, dataset, method, variant, shots, targets), members in grouped.items():
        group = Group(protocol, backbone, dataset, method, variant, shots, targets, seeds=len(members),
                      records=members)
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
    """The protocol's derived statistic: HM from the mean base and novel accuracy (``harmonic_mean``), or Avg
    over the targets' mean accuracies (``target_mean``)."""
    facts = known_protocol(group.protocol)
    derived = facts.derived if facts else None
    if derived == "harmonic_mean":
        base, novel = group.get("base"), group.get("novel")
        if base and novel:
            total = base.mean + novel.mean
            hm = 2 * base.mean * novel.mean / total if total else 0.0
            group.stats[("hm", ACCURACY)] = Stat(hm, None, min(base.n, novel.n))
    elif derived == "target_mean" and group.targets:
        stats = [group.get(t) for t in group.targets]
        if all(stats):
            mean = statistics.fmean(s.mean for s in stats)
            group.stats[("avg", ACCURACY)] = Stat(mean, None, min(s.n for s in stats))


def dataset_averages(groups: list[Group]) -> list[Group]:
    """Per (protocol, backbone, method, variant, shots, targets) run on two or more datasets: a row whose
    every evaluation set holds the mean over the datasets of its mean over seeds (no std; the sets every
    dataset has), and HM / Avg derived from those means, as the papers average "over N datasets"."""
    by_key: dict[tuple, list[Group]] = defaultdict(list)
    for g in groups:
        if not g.over:
            by_key[(g.protocol, g.backbone, g.method, g.variant, g.shots, g.targets)].append(g)
    averages = []
    for (protocol, backbone, method, variant, shots, targets), members in by_key.items():
        if len(members) < 2:
            continue
        average = Group(protocol, backbone, AVERAGE, method, variant, shots, targets,
                        seeds=min(g.seeds for g in members), over=tuple(g.dataset for g in members),
                        records=[r for g in members for r in g.records])
        shared = set.intersection(*({k for k, stat in g.stats.items() if stat.std is not None} for g in members))
        for key in sorted(shared):
            stats = [g.stats[key] for g in members]
            average.stats[key] = Stat(statistics.fmean(s.mean for s in stats), None, min(s.n for s in stats))
        _add_derived(average)
        averages.append(average)
    averages.sort(key=lambda g: (_protocol_rank(g.protocol), g.backbone, g.shots, g.method, g.variant, g.targets))
    return averages


def ci95(stat: Stat | None) -> float | None:
    """Half-width of the 95% Student-t confidence interval of the mean over seeds, ``t(0.975, n-1)·std/√n``;
    None for one seed and for values derived from means (HM, Avg, averages over datasets)."""
    if stat is None or stat.std is None or stat.n < 2:
        return None
    from scipy.stats import t

    return float(t.ppf(0.975, stat.n - 1)) * stat.std / math.sqrt(stat.n)


# ---------------------------------------------------------------- tables


@dataclass(frozen=True)
class Column:
    """One value column of a protocol's table: the (eval_set, metric) it shows.

    ``eval_set`` None averages the metric over the row's evaluation sets (ms / image); ``target``
    columns are empty for rows not evaluated on that target.
    """

    header: str
    eval_set: str | None
    metric: str = ACCURACY
    target: bool = False
    digits: int = 2

    def stat(self, group: Group) -> Stat | None:
        if self.eval_set is None:
            stats = [stat for (_, metric), stat in group.stats.items() if metric == self.metric]
            if not stats:
                return None
            return Stat(statistics.fmean(s.mean for s in stats), None, min(s.n for s in stats))
        if self.target and self.eval_set not in group.targets:
            return None
        return group.get(self.eval_set, self.metric)

    def cell(self, group: Group) -> str:
        """``mean ± std`` (``mean`` alone for derived values), MISSING where there is none."""
        stat = self.stat(group)
        if stat is None:
            return MISSING
        if stat.std is None:
            return f"{stat.mean:.{self.digits}f}"
        return f"{stat.mean:.{self.digits}f} ± {stat.std:.{self.digits}f}"




def protocol_table(protocol: str, groups: list[Group]) -> tuple[list[Column], list[str]]:
    """The value columns of ``protocol``'s table over ``groups`` (its facts file's ``columns``; without them,
    every evaluation set and metric) and the notes that explain them."""
    facts = known_protocol(protocol)
    if facts is None or not facts.columns:  # every evaluation set and metric; sample counts stay in the CSV only
        keys = list(dict.fromkeys(k for g in groups for k in g.ordered_keys() if k[1] != SAMPLE_COUNT))
        return [Column(s if m == ACCURACY else f"{s} {m}", s, m) for s, m in keys], list(facts.notes if facts else [])
    targets = list(dict.fromkeys(t for g in groups for t in g.targets))
    columns = [Column(c.header, c.set, c.metric, target=c.set in targets, digits=c.digits)
               for c in facts.table_columns(targets)]
    return columns, list(facts.notes)


def protocol_title(protocol: str) -> str:
    facts = known_protocol(protocol)
    return facts.title if facts else protocol.replace("_", " ").capitalize()


def table_headers(protocol: str) -> tuple[str, str]:
    """The headers of the model and shots columns ("Backbone", "Shots"; segmentation: "Model", "Train images")."""
    facts = known_protocol(protocol)
    headers = facts.headers if facts else {"model": "Backbone", "shots": "Shots"}
    return headers["model"], headers["shots"]


# ---------------------------------------------------------------- rendering


def _text(value: object) -> str:
    return str(value).replace("|", "\\|")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def view_augments(group: Group) -> str:
    """The test-time view augmentation(s) of a row's records (``config.test_time.views``): one name when
    every evaluation set used the same, else ``set: name`` pairs; empty for records without any."""
    used: dict[str, set[str]] = defaultdict(set)
    for record in group.records:
        for eval_set, augment in (record.config.get("test_time") or {}).get("views", {}).items():
            used[eval_set].add(str(augment))
    names = {name for augments in used.values() for name in augments}
    if len(names) <= 1:
        return next(iter(names), "")
    return ", ".join(f"{eval_set}: {'/'.join(sorted(augments))}" for eval_set, augments in used.items())


def _protocol_section(protocol: str, groups: list[Group]) -> list[str]:
    lines = [f"## {protocol_title(protocol)} (`{protocol}`)", ""]
    model, shots = table_headers(protocol)
    columns, notes = protocol_table(protocol, groups)
    views = [view_augments(g) for g in groups]
    if not any(views):
        views = []
    else:
        notes.append("Views: the augmentation of each test image's views (crop_flip: random resized crops with "
                     "flips; augmix: TPT's AugMix over those crops; original: the original image alone), per "
                     "evaluation set where they differ.")
    header = [model, "Dataset", "Method", "Variant", shots, *(_text(c.header) for c in columns),
              *(["Views"] if views else []), "Seeds", *COST_HEADERS]
    rows = [
        [_text(g.backbone), _text(g.dataset), _text(g.method), _text(g.variant), str(g.shots)]
        + [column.cell(g) for column in columns]
        + ([_text(views[i]) or MISSING] if views else [])
        + [str(g.seeds)] + cost_cells(g)
        for i, g in enumerate(groups)
    ]
    notes.append(COST_NOTE)
    lines += _table(header, rows)
    flagged = [g for g in groups if g.settings]
    if flagged:
        notes = notes + ["Rows run with non-default settings (faster, not the reference computation): " + "; ".join(
            f"{g.method} ({g.variant}) on {g.dataset}, {g.shots} {shots.lower()}: {g.settings}" for g in flagged) + "."]
    if notes:
        lines += [""] + notes
    return lines + [""]


def cost_cells(group: Group) -> list[str]:
    """The row's cost (ms per training and test image, peak MiB) and selection cells."""
    cost = run_cost(group.records)
    return [format_cost(cost.train_ms_per_image, 2), format_cost(cost.test_ms_per_image, 2),
            format_cost(cost.peak_memory_mb, 0), _text(selection_text(group.method, group.records))]


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
    """Long format: one row per group, evaluation set and metric (HM and Avg rows have no std). ``ci95`` is
    the half-width of the 95% confidence interval over seeds (empty for one seed), ``paper`` the published
    figure for the row (see :mod:`vlpt.results.paper`), if any, ``settings`` the non-default settings its
    records ran with (``Group.settings``; empty for the defaults), then the row's cost and selection
    (:mod:`vlpt.results.cost`; empty where unknown)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for g in groups:
        paper = paper_results(g)
        cost, selection = run_cost(g.records), paper_selection(g.method)
        costs = [format_cost(cost.train_ms_per_image, 4).replace(MISSING, ""),
                 format_cost(cost.test_ms_per_image, 4).replace(MISSING, ""),
                 format_cost(cost.peak_memory_mb, 1).replace(MISSING, ""),
                 run_selection(g.records).replace(MISSING, ""), selection.rule if selection else ""]
        for eval_set, metric in g.ordered_keys():
            stat = g.stats[(eval_set, metric)]
            half_width = ci95(stat)
            published = paper.get((eval_set, metric))
            writer.writerow([
                g.protocol, g.backbone, g.dataset, g.method, g.variant, g.shots, ";".join(g.targets),
                eval_set, metric, f"{stat.mean:.6f}", "" if stat.std is None else f"{stat.std:.6f}", stat.n,
                "" if half_width is None else f"{half_width:.6f}", "" if published is None else format_value(published),
                g.settings, *costs,
            ])
    return buffer.getvalue()


__all__ = [
    "AVERAGE", "Column", "Group", "Stat", "aggregate", "ci95", "dataset_averages", "protocol_table", "render_csv",
    "nondefault_settings", "render_markdown",
]
