"""The leaderboard as one self-contained web page, ``index.html``: sortable, filterable tables and SVG plots.

Rendered from the same aggregation as ``LEADERBOARD.md`` and ``leaderboard.csv``; the page opens from
disk (inline CSS and JavaScript from ``site_assets/``, plots drawn here as inline SVG; nothing is
fetched) and holds no timestamps, so the same records give the same bytes.
"""
from __future__ import annotations

from collections import defaultdict
from html import escape
from pathlib import Path

from vlpt.results import plots
from vlpt.results.leaderboard import (
    AVERAGE, COST_HEADERS, MISSING, Column, Group, ci95, dataset_averages, protocol_table, protocol_title,
    table_headers,
)
from vlpt.results.cost import COST_NOTE, format_cost, run_cost, selection_text
from vlpt.results.paper import PublishedResult, paper_selection, format_value, method_published, model_name, paper_results
from vlpt.results.protocols import known_protocol
from vlpt.results.provenance import Provenance, provenance
from vlpt.results.record import ADAPT_MS, DICE

SITE_NAME = "index.html"
GENERATOR = "vlpt leaderboard"
_GENERATOR_TAG = f'<meta name="generator" content="{GENERATOR}">'
_ASSETS = Path(__file__).resolve().parent / "site_assets"


def is_site(path: Path) -> bool:
    """True when ``path`` is a page written by :func:`render_site` (so a rebuild may replace it)."""
    try:
        with open(path, encoding="utf-8") as handle:
            return _GENERATOR_TAG in handle.read(4096)
    except (OSError, UnicodeDecodeError):
        return False


def method_label(method: str, variant: str) -> str:
    return method if variant == "default" else f"{method} · {variant}"


class _Page:
    """Numbering of the references cited and colours of the methods, shared by every part of the page."""

    def __init__(self, groups: list[Group], curves: dict[str, str] | None = None):
        #: links to the runs' training curves by run id (``vlpt.results.publish.training_curves``)
        self.curves = curves or {}
        # a method keeps its colour from section to section unless that colour is taken in the section
        self.colours: dict[tuple[str, str], str] = {}
        preferred: dict[str, str] = {}
        for protocol in dict.fromkeys(g.protocol for g in groups):
            used: set[str] = set()
            for label in sorted({method_label(g.method, g.variant) for g in groups if g.protocol == protocol}):
                chosen = preferred.get(label)
                if chosen is None or chosen in used:
                    free = [c for c in plots.PALETTE if c not in used and c not in preferred.values()]
                    free = free or [c for c in plots.PALETTE if c not in used] or list(plots.PALETTE)
                    chosen = free[0]
                preferred.setdefault(label, chosen)
                used.add(chosen)
                self.colours[(protocol, label)] = chosen
        self.published: list[tuple[str, PublishedResult]] = [
            (method, result) for method in sorted({g.method for g in groups}) for result in method_published(method)
        ]
        self.references = list(dict.fromkeys(result.reference for _, result in self.published))

    def colour(self, group: Group) -> str:
        return self.colours[(group.protocol, method_label(group.method, group.variant))]

    def cite(self, reference: str) -> str:
        number = self.references.index(reference) + 1
        return f'<sup><a href="#ref-{number}">[{number}]</a></sup>'


# ---------------------------------------------------------------- tables


def _value_cell(column: Column, group: Group) -> str:
    stat = column.stat(group)
    if stat is None:
        return f'<td class="num missing" data-sort="">{MISSING}</td>'
    mean = f"{stat.mean:.{column.digits}f}"
    parts = [f'<span class="mean">{mean}</span>']
    if stat.std is not None:
        parts.append(f'<span class="sd">± {stat.std:.{column.digits}f}</span>')
        half = ci95(stat)
        interval = MISSING if half is None else f"[{stat.mean - half:.2f}, {stat.mean + half:.2f}]"
        parts.append(f'<span class="ci" title="95% confidence interval of the mean over {stat.n} '
                     f'seed{"s" if stat.n != 1 else ""} (Student t)">{interval}</span>')
    return f'<td class="num" data-sort="{stat.mean:.6f}">{" ".join(parts)}</td>'


def _paper_cell(columns: list[Column], group: Group, page: _Page) -> str:
    found = paper_results(group)
    published = [(column, found.get((column.eval_set, column.metric))) for column in columns if column.eval_set]
    published = [(column, result) for column, result in published if result is not None]
    entries, first = [], ""
    for column, result in published:
        first = first or f"{result.value:.6f}"
        label = f'<span class="label">{escape(column.header)}</span> ' if len(published) > 1 else ""
        flag = ('<span class="unverified" title="[unverified]: recalled, not read from the paper">?</span>'
                if result.unverified else "")
        entries.append(f'<span class="pub" title="{escape(result.reference)}">{label}{format_value(result)}'
                       f"{flag}{page.cite(result.reference)}</span>")
    if not entries:
        return f'<td class="paper missing" data-sort="">{MISSING}</td>'
    return f'<td class="paper" data-sort="{first}">{" · ".join(entries)}</td>'


def _short(commit: str) -> str:
    return commit if commit == "unknown" else commit[:8] + ("+dirty" if commit.endswith("+dirty") else "")


def _provenance_cell(prov: Provenance, curves: dict[str, str]) -> str:
    if not prov.run_ids:
        return f'<td class="prov missing">{MISSING}</td>'
    commits = ", ".join(f"<code>{escape(c)}</code>" for c in prov.commits)
    hashes = ", ".join(f"<code>{h}</code>" for h in prov.config_hashes)
    differ = "" if prov.agrees else ' <span class="differ" title="the records of this row differ">≠</span>'
    summary = (f"<code>{escape(_short(prov.commits[0]))}</code>"
               + (f" +{len(prov.commits) - 1}" if len(prov.commits) > 1 else "")
               + f" · <code>{prov.config_hashes[0][:6]}</code>"
               + (f" +{len(prov.config_hashes) - 1}" if len(prov.config_hashes) > 1 else "") + differ)
    versions = ", ".join(f"{escape(name)} {escape(' / '.join(found))}" for name, found in prov.versions)
    runs = ", ".join(f'<a href="{escape(curves[r])}" title="training curves"><code>{r}</code></a>' if r in curves
                     else f"<code>{r}</code>" for r in prov.run_ids)
    linked = " (linked: training curves)" if any(r in curves for r in prov.run_ids) else ""
    return (f'<td class="prov"><details><summary>{summary}</summary><dl>'
            f"<dt>commit{'s' if len(prov.commits) > 1 else ''}</dt><dd>{commits}</dd>"
            f"<dt>config hash{'es' if len(prov.config_hashes) > 1 else ''}</dt><dd>{hashes}</dd>"
            f"<dt>versions</dt><dd>{versions or MISSING}</dd>"
            f"<dt>runs{linked}</dt><dd>{runs}</dd></dl></details></td>")


def _breakable(name: str) -> str:
    """``name`` escaped, with line-break opportunities after ``@`` and ``+`` (MODEL@PRETRAINED+decoder)."""
    return escape(name).replace("@", "@<wbr>").replace("+", "+<wbr>")


def _row(group: Group, columns: list[Column], page: _Page) -> str:
    label = method_label(group.method, group.variant)
    dataset = group.dataset
    if group.over:
        dataset_cell = (f'<td class="dataset" title="{escape(", ".join(group.over))}">average of '
                        f"{len(group.over)} datasets</td>")
    else:
        dataset_cell = f'<td class="dataset">{escape(dataset)}</td>'
    variant = "" if group.variant == "default" else f'<span class="variant">{escape(group.variant)}</span>'
    if group.settings:
        variant += (f' <span class="setting" title="non-default settings (faster, not the reference computation): '
                    f'{escape(group.settings)}">{escape(group.settings)}</span>')
    searchable = " ".join([group.backbone, "average" if group.over else dataset, str(group.shots),
                           group.method, group.variant, *group.over]).lower()
    cells = [
        f'<td class="backbone">{_breakable(group.backbone)}</td>',
        dataset_cell,
        f'<td class="num" data-sort="{group.shots}">{group.shots}</td>',
        f'<td class="method" data-sort="{escape(label.lower())}"><span class="swatch" '
        f'style="background:{page.colour(group)}"></span>{escape(group.method)}{variant}</td>',
        *(_value_cell(c, group) for c in columns),
        _paper_cell(columns, group, page),
        f'<td class="num" data-sort="{group.seeds}">{group.seeds}</td>',
        *_cost_cells(group),
        _provenance_cell(provenance(group.records), page.curves),
    ]
    attributes = (f'data-backbone="{escape(group.backbone)}" data-dataset="{escape(dataset)}" '
                  f'data-shots="{group.shots}" data-method="{escape(group.method)}" data-text="{escape(searchable)}"')
    return f"<tr {attributes}>" + "".join(cells) + "</tr>"


_NUM = ' class="num"'


def _cost_cells(group: Group) -> list[str]:
    """Train and test ms per image, peak MiB and the selection rule (the paper's note on hover)."""
    cost = run_cost(group.records)
    cells = []
    for value, digits in ((cost.train_ms_per_image, 2), (cost.test_ms_per_image, 2), (cost.peak_memory_mb, 0)):
        sort = "" if value is None else f"{value:.6f}"
        cells.append(f'<td class="num{" missing" if value is None else ""}" data-sort="{sort}">'
                     f"{format_cost(value, digits)}</td>")
    paper = paper_selection(group.method)
    title = f' title="{escape(paper.note)}"' if paper and paper.note else ""
    text = selection_text(group.method, group.records)
    return cells + [f'<td class="selection"{title} data-sort="{escape(text)}">{escape(text)}</td>']


def _select(name: str, title: str, values: list[str]) -> str:
    options = "".join(f'<option value="{escape(v)}">{escape(v)}</option>' for v in values)
    return (f'<select class="filter" name="{name}" aria-label="{title}">'
            f'<option value="">{title}: all</option>{options}</select>')


def _table(protocol: str, groups: list[Group], averages: list[Group], page: _Page) -> str:
    columns, notes = protocol_table(protocol, groups)
    model, shots = table_headers(protocol)
    header = [f'<th aria-sort="none">{model}</th>', '<th aria-sort="none">Dataset</th>',
              f'<th aria-sort="none" class="num">{shots}</th>', '<th aria-sort="none">Method</th>']
    header += [f'<th aria-sort="none" class="num">{escape(c.header)}</th>' for c in columns]
    header += ['<th aria-sort="none" title="the figure the method\'s paper published for this backbone, '
               'protocol, dataset, shots and evaluation set">Paper</th>',
               '<th aria-sort="none" class="num">Seeds</th>',
               *(f'<th aria-sort="none"{_NUM if h != "Selection" else ""}>{h}</th>' for h in COST_HEADERS),
               '<th class="nosort" title="git commit, config hash (resolved config without the seed), '
               'library versions and run ids of the row\'s records">Provenance</th>']
    rows = groups + averages
    filters = [
        _select("backbone", model, sorted({g.backbone for g in rows})),
        _select("dataset", "Dataset", sorted({g.dataset for g in rows})),
        _select("shots", shots, [str(s) for s in sorted({g.shots for g in rows})]),
        _select("method", "Method", sorted({g.method for g in rows})),
    ]
    notes = [
        "Cells: mean ± sample standard deviation over seeds, below it the 95% confidence interval of the mean "
        "(Student t; – for one seed). Click a column header to sort, again to reverse.",
        *notes,
        COST_NOTE,
    ]
    if averages:
        notes.append(f"Rows marked “average of N datasets” ({AVERAGE}) hold, per column, the mean over the "
                     "datasets of the means over seeds, for a backbone, method and shot count run on two or more "
                     "datasets (HM and Avg from those means); hover the cell for the datasets.")
    body = "\n".join(_row(g, columns, page) for g in groups)
    average_body = "\n".join(_row(g, columns, page) for g in averages)
    return "\n".join([
        '<div class="controls">',
        f'<input class="filter-text" type="search" placeholder="Filter rows: method, dataset, backbone…" '
        f'aria-label="Filter the {escape(protocol)} table">',
        *filters,
        '<span class="count"></span>',
        "</div>",
        f'<div class="table-wrap"><table class="board" id="table-{escape(protocol)}">',
        "<thead><tr>" + "".join(header) + "</tr></thead>",
        f"<tbody>\n{body}\n</tbody>",
        f'<tbody class="averages">\n{average_body}\n</tbody>' if averages else "",
        "</table></div>",
        '<ul class="notes">' + "".join(f"<li>{escape(n)}</li>" for n in notes) + "</ul>",
    ])


# ---------------------------------------------------------------- plots


def _figure(protocol: str, caption: str, sub: str, svg: str, note: str) -> str:
    """A plot with its caption, a link to its protocol's table, and a note on how to read it."""
    link = f'<a href="#{escape(protocol)}">{escape(protocol_title(protocol))}</a>'
    return (f'<figure class="plot"><figcaption>{escape(caption)}<span class="sub">{link} · {escape(sub)}</span>'
            f'</figcaption>\n{svg}\n<p class="plot-note">{escape(note)}</p></figure>')


def _by(groups: list[Group], *fields: str) -> dict[tuple, list[Group]]:
    out: dict[tuple, list[Group]] = defaultdict(list)
    for g in groups:
        out[tuple(getattr(g, f) for f in fields)].append(g)
    return out


def _dataset_name(group: Group) -> str:
    """A row's dataset in a plot title; an average names the datasets it is over (they differ between rows)."""
    if not group.over:
        return group.dataset
    return f"average of {len(group.over)} datasets ({', '.join(sorted(group.over))})"


def _tip(group: Group, stat, what: str) -> str:
    spread = "" if stat.std is None else f" ± {stat.std:.2f}"
    return f"{method_label(group.method, group.variant)}, {group.shots} shots: {what} {stat.mean:.2f}{spread}"


def _legend_labels(groups: list[Group]) -> dict[int, str]:
    """Legend label per group (by id): method and variant, with the shots where that alone repeats."""
    counts: dict[str, set[int]] = defaultdict(set)
    for g in groups:
        counts[method_label(g.method, g.variant)].add(g.shots)
    return {id(g): method_label(g.method, g.variant) + (f", {g.shots} shots" if len(counts[method_label(
        g.method, g.variant)]) > 1 else "") for g in groups}


def _adapts_at_test_time(group: Group) -> bool:
    """Whether the row's runs adapted to every test image: only those report ``adapt_ms_per_image``."""
    return any(metric == ADAPT_MS for _, metric in group.stats)


def _accuracy_vs_shots(rows: list[Group], page: _Page) -> list[tuple[str, str, str, str]]:
    figures = []
    for (backbone, _, _), members in _by(rows, "backbone", "dataset", "over").items():  # one plot per set of datasets
        members = [g for g in members if g.get("test")]
        if not members:
            continue
        categories = [str(s) for s in sorted({g.shots for g in members})]
        series = []
        for (method, variant), runs in sorted(_by(members, "method", "variant").items()):
            runs.sort(key=lambda g: g.shots)
            points = tuple(plots.Point(str(g.shots), g.get("test").mean, ci95(g.get("test")),
                                       _tip(g, g.get("test"), "accuracy")) for g in runs)
            level = all(g.shots == 0 for g in runs)
            series.append(plots.Series(method_label(method, variant), page.colour(runs[0]), points, reference=level))
        name = _dataset_name(members[0])
        svg = plots.line_chart(f"Accuracy vs shots, {name} ({backbone})",
                               f"Test accuracy (%) of each method by shots per class on {name}; whiskers: 95% CI.",
                               categories, series, "shots per class", "accuracy (%)", cap=100.0)
        figures.append((f"Accuracy vs shots · {name}", backbone, svg,
                        "Whiskers: 95% CI over seeds. Dashed: methods without training images "
                        "(zero-shot), drawn across as a level to beat."))
    return figures


def _base_vs_novel(rows: list[Group], page: _Page) -> list[tuple[str, str, str, str]]:
    figures = []
    for (backbone, _, _), members in _by(rows, "backbone", "dataset", "over").items():  # one plot per set of datasets
        members = [g for g in members if g.get("base") and g.get("novel")]
        if not members:
            continue
        series, labels = [], _legend_labels(members)
        for g in members:
            base, novel = g.get("base"), g.get("novel")
            hm = g.get("hm")
            tip = (f"{method_label(g.method, g.variant)}, {g.shots} shots: base {base.mean:.2f}, novel "
                   f"{novel.mean:.2f}" + (f", HM {hm.mean:.2f}" if hm else ""))
            point = plots.Point(base.mean, novel.mean, ci95(novel), tip, x_err=ci95(base))
            series.append(plots.Series(labels[id(g)], page.colour(g), (point,)))
        name = _dataset_name(members[0])
        svg = plots.scatter_chart(f"Base vs novel accuracy, {name} ({backbone})",
                                  f"Base-class against novel-class accuracy (%) of each method on {name}; "
                                  "dashed curves join points of equal harmonic mean.",
                                  series, "base accuracy (%)", "novel accuracy (%)", harmonic_means=True,
                                  cap=100.0)
        figures.append((f"Base vs novel accuracy · {name}", backbone, svg,
                        "Up and to the right is better; dashed curves: equal HM. Whiskers: 95% CI."))
    return figures


def _test_time_gain(rows: list[Group], page: _Page) -> list[tuple[str, str, str, str]]:
    """Per source and targets: each test-time method's accuracy minus the zero-shot baseline's (a method
    that neither trains nor adapts, shots 0; its default variant first) on every evaluation set."""
    figures = []
    for (backbone, dataset, targets), members in _by(rows, "backbone", "dataset", "targets").items():
        if any(g.over for g in members):
            continue
        baselines = sorted((g for g in members if g.shots == 0 and not _adapts_at_test_time(g)),
                           key=lambda g: (g.variant != "default", g.method, g.variant))
        adapted = [g for g in members if _adapts_at_test_time(g)]
        if not baselines or not adapted:
            continue
        baseline, labels = baselines[0], _legend_labels(adapted)
        reference = method_label(baseline.method, baseline.variant)
        domains = [("test", f"{dataset} (source)"), *((t, t) for t in targets)]
        series = []
        for g in adapted:
            points = []
            for eval_set, label in domains:
                stat, base = g.get(eval_set), baseline.get(eval_set)
                if stat and base:
                    gain = stat.mean - base.mean
                    points.append(plots.Point(label, gain, None, f"{labels[id(g)]}, {label}: {stat.mean:.2f} vs "
                                              f"{base.mean:.2f} ({gain:+.2f})"))
            series.append(plots.Series(labels[id(g)], page.colour(g), tuple(points)))
        title = protocol_title(baseline.protocol)
        svg = plots.bar_chart(f"{title}: gain over {reference}, {dataset} ({backbone})",
                              f"Accuracy of each test-time method minus {reference}'s, per evaluation domain.",
                              [label for _, label in domains], series, "evaluation domain",
                              "accuracy gain (points)", signed=True)
        figures.append((f"{title}: gain per domain · {dataset}", backbone, svg,
                        f"Accuracy minus {reference}'s on the same images, mean over seeds."))
    return figures


def _dice_per_set(rows: list[Group], page: _Page) -> list[tuple[str, str, str, str]]:
    """Per segmentation model: one bar group per dataset (its own test set; the average over datasets) and,
    with a single source dataset, per target; one bar per method, variant and training-image count."""
    figures = []
    for (backbone, targets), members in _by(rows, "backbone", "targets").items():
        sources = list(dict.fromkeys(g.dataset for g in members))
        sets = [(name, "test") for name in sources] + ([(t, t) for t in targets] if len(sources) == 1 else [])
        labels = _legend_labels(members)
        series = []
        for runs in _by(members, "method", "variant", "shots").values():
            by_dataset = {g.dataset: g for g in runs}
            points = []
            for name, eval_set in sets:
                g = by_dataset.get(name if eval_set == "test" else sources[0])
                stat = g.get(eval_set, DICE) if g else None
                if stat:
                    points.append(plots.Point(name, stat.mean, ci95(stat), _tip(g, stat, f"{name} Dice")))
            if points:
                series.append(plots.Series(labels[id(runs[0])], page.colour(runs[0]), tuple(points)))
        if not series:
            continue
        svg = plots.bar_chart(f"Dice per segmentation set ({backbone})",
                              "Dice (%) of each segmentation method on each evaluation set; whiskers: 95% CI.",
                              [name for name, _ in sets], series, "segmentation set", "Dice (%)", cap=100.0)
        figures.append(("Dice per segmentation set", backbone, svg, "Whiskers: 95% CI over seeds."))
    return figures


#: the plots a protocol's facts file may name (``plot:``)
PLOTS = {
    "accuracy_vs_shots": _accuracy_vs_shots,
    "base_vs_novel": _base_vs_novel,
    "test_time_gain": _test_time_gain,
    "dice_per_set": _dice_per_set,
}


def _plot_of(protocol: str):
    """The plot drawer the protocol's facts name, None for none."""
    facts = known_protocol(protocol)
    return PLOTS.get(facts.plot) if facts and facts.plot else None


# ---------------------------------------------------------------- page


def _published_section(page: _Page) -> str:
    if not page.published:
        return ""
    rows = []
    for method, r in page.published:
        dataset = f"mean of {len(r.dataset)} datasets" if r.is_average else r.dataset
        title = f' title="{escape(", ".join(r.dataset))}"' if r.is_average else ""
        flag = ' <span class="unverified" title="recalled, not read from the paper">[unverified]</span>' \
            if r.unverified else ""
        rows.append(
            f"<tr><td>{escape(method)}</td><td>{escape(r.variant or 'any')}</td><td>{escape(r.protocol)}</td>"
            f"<td>{escape(r.backbone)}</td><td{title}>{escape(dataset)}</td><td class=\"num\">{r.shots}</td>"
            f"<td>{escape(r.eval_set)}</td><td class=\"num\">{format_value(r)}{flag}</td>"
            f"<td>{page.cite(r.reference)}</td></tr>"
        )
    refs = "".join(f'<li id="ref-{i}">{escape(ref)}</li>' for i, ref in enumerate(page.references, start=1))
    return "\n".join([
        '<section class="published" id="published">',
        "<h2>Published numbers</h2>",
        '<p class="section-sub">The figures the methods\' papers report (the data file '
        "<code>vlpt/results/published.yaml</code>). The Paper column shows one only where the backbone (open_clip "
        "model name), protocol, dataset (or the same set of datasets, for an average), shots and evaluation set "
        "all match the row.</p>",
        f"<details><summary>All {len(page.published)} published figures of the methods on this board</summary>",
        '<div class="table-wrap"><table class="board"><thead><tr><th>Method</th><th>Variant</th>'
        "<th>Protocol</th><th>Backbone</th><th>Dataset</th><th class=\"num\">Shots</th><th>Set</th>"
        '<th class="num">Value</th><th>Ref.</th></tr></thead><tbody>',
        "\n".join(rows),
        "</tbody></table></div></details>",
        f'<ol class="refs">{refs}</ol>',
        "</section>",
    ])


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def render_site(groups: list[Group], n_records: int, source: str, curves: dict[str, str] | None = None) -> str:
    """The whole page for the aggregated ``groups`` (from ``n_records`` records in ``source``), its runs linked
    to their training ``curves`` (relative paths by run id)."""
    averages = dataset_averages(groups)
    page = _Page(groups, curves)
    by_protocol: dict[str, list[Group]] = defaultdict(list)
    for g in groups:  # already in protocol order
        by_protocol[g.protocol].append(g)
    plural = "record" if n_records == 1 else "records"
    toc = '<a href="#plots">Plots</a>' if any(_plot_of(g.protocol) for g in groups) else ""
    toc += "".join(f'<a href="#{escape(p)}">{escape(protocol_title(p))}<span class="n">{len(m)}</span></a>'
                  for p, m in by_protocol.items())
    if page.published:
        toc += '<a href="#published">Published numbers</a>'
    sections, figures = [], []
    for protocol, members in by_protocol.items():
        protocol_averages = [a for a in averages if a.protocol == protocol]
        draw = _plot_of(protocol)
        figures += [_figure(protocol, *parts) for parts in (draw(members + protocol_averages, page) if draw else [])]
        backbones = sorted({model_name(g.backbone) for g in members})
        sections.append("\n".join([
            f'<section class="protocol" id="{escape(protocol)}">',
            f"<h2>{escape(protocol_title(protocol))}<code>{escape(protocol)}</code></h2>",
            f'<p class="section-sub">{_count(len(members), "row")} · '
            f'{_count(len({g.method for g in members}), "method")} · '
            f'{_count(len({g.dataset for g in members}), "dataset")} · '
            f"{'backbones' if len(backbones) > 1 else 'backbone'} {escape(', '.join(backbones))}</p>",
            _table(protocol, members, protocol_averages, page),
            "</section>",
        ]))
    if not groups:
        sections.append(f'<section class="protocol"><p>No run records found in <code>{escape(source)}</code>.'
                        "</p></section>")
    css = (_ASSETS / "site.css").read_text(encoding="utf-8")
    js = (_ASSETS / "site.js").read_text(encoding="utf-8")
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        _GENERATOR_TAG,
        "<title>vlpt leaderboard</title>",
        f"<style>\n{css}</style>",
        "</head>",
        "<body>",
        '<header class="top"><div class="wrap">',
        "<h1>vlpt leaderboard</h1>",
        f'<p class="lede">Vision-language prompt tuning methods on shared splits, seeds and protocols. Generated by '
        f"<code>vlpt leaderboard --html</code> from {n_records} {plural} in <code>{escape(source)}</code>; "
        f'also as <a href="LEADERBOARD.md">Markdown</a> and <a href="leaderboard.csv">CSV</a>. Accuracies, Dice '
        "and IoU in %.</p>",
        f'<nav class="toc">{toc}</nav>',
        "</div></header>",
        '<main class="wrap">',
        *([f'<section class="glance" id="plots"><h2>At a glance</h2>\n<div class="plots">\n{chr(10).join(figures)}'
           "\n</div></section>"] if figures else []),
        *sections,
        _published_section(page),
        "</main>",
        '<footer class="wrap">Rebuilt from the run records alone by <code>vlpt leaderboard --html</code>; '
        "do not edit by hand.</footer>",
        f"<script>\n{js}</script>",
        "</body>",
        "</html>",
        "",
    ])


__all__ = ["GENERATOR", "SITE_NAME", "is_site", "method_label", "render_site"]
