"""Static SVG charts drawn in Python for the leaderboard site: lines over categories, a scatter, grouped bars.

Each chart is one ``<svg>`` string with a ``<title>``, axes with labelled ticks, a legend, and its data
marks (class ``mark``, each with a tooltip ``<title>``). Coordinates are printed with fixed decimals, so
the same data always gives the same bytes. Text inherits the page's font (the SVG is inline).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

#: distinct categorical colours (Okabe-Ito's colour-blind-safe set, then Tableau's)
PALETTE = (
    "#0072b2", "#e69f00", "#009e73", "#cc79a7", "#d55e00", "#56b4e9",
    "#7f7f7f", "#f0c808", "#8c564b", "#6a3d9a", "#17becf", "#b22222",
)
_CHAR_PX = 7.2  # a generous advance of a 12 px sans-serif character, for sizing the legend
_PLOT_W, _PLOT_H = 500, 260
_MARGIN = {"left": 58, "right": 24, "top": 16, "bottom": 52}


@dataclass(frozen=True)
class Point:
    """A value with an optional error half-width (``err``: the 95% CI) and a tooltip."""

    x: float | str
    y: float
    err: float | None = None
    tip: str = ""
    x_err: float | None = None


@dataclass(frozen=True)
class Series:
    """One legend entry: its label, colour and points; ``reference`` draws it as a dashed level line."""

    label: str
    colour: str
    points: tuple[Point, ...]
    reference: bool = False


def _f(value: float) -> str:
    text = f"{value:.2f}"
    return "0.00" if text == "-0.00" else text


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values (steps of 1, 2, 2.5 or 5 times a power of ten) covering [low, high]."""
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"axis range must be finite, got [{low}, {high}]")
    if high - low < 1e-9:
        pad = abs(high) * 0.05 or 1.0
        low, high = low - pad, high + pad
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if (high - low) / (m * magnitude) <= count)
    start, end = math.floor(low / step + 1e-9) * step, math.ceil(high / step - 1e-9) * step
    return [round(start + i * step, 10) for i in range(int(round((end - start) / step)) + 1)]


def _tick_label(value: float, ticks: list[float]) -> str:
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    decimals = 0 if abs(step - round(step)) < 1e-9 else max(0, -math.floor(math.log10(step)) + 1)
    text = f"{value:.{decimals}f}"
    return "0" if text.strip("-0.") == "" else text


class _Frame:
    """The plot area, its value-to-pixel scales and the shared SVG parts (axes, grid, legend)."""

    def __init__(self, y_ticks: list[float], legend: list[Series], x_ticks: list[float] | None = None):
        self.y_ticks, self.x_ticks = y_ticks, x_ticks
        self.legend = legend
        self.left, self.top = _MARGIN["left"], _MARGIN["top"]
        # the legend sits under the plot, in as many columns as fit its width, filled top to bottom
        longest = max((len(s.label) for s in legend), default=0)
        self.item_w = int(46 + longest * _CHAR_PX)
        columns = max(1, min(len(legend), (_PLOT_W + _MARGIN["right"]) // self.item_w))
        self.legend_rows = math.ceil(len(legend) / columns)
        self.width = self.left + _PLOT_W + _MARGIN["right"]
        self.legend_top = self.top + _PLOT_H + _MARGIN["bottom"] + 4
        self.height = self.legend_top + 20 * self.legend_rows + 4

    def y(self, value: float) -> float:
        low, high = self.y_ticks[0], self.y_ticks[-1]
        return self.top + _PLOT_H * (1 - (value - low) / (high - low))

    def x(self, value: float) -> float:
        low, high = self.x_ticks[0], self.x_ticks[-1]
        return self.left + _PLOT_W * (value - low) / (high - low)

    def open(self, title: str, description: str) -> list[str]:
        return [
            f'<svg class="chart" role="img" width="{self.width}" '
            f'height="{self.height}" viewBox="0 0 {self.width} {self.height}">',
            f"<title>{escape(title)}</title>",
            f"<desc>{escape(description)}</desc>",
        ]

    def y_axis(self, label: str) -> list[str]:
        parts = []
        for tick in self.y_ticks:
            y = _f(self.y(tick))
            parts.append(f'<line class="grid" x1="{self.left}" x2="{self.left + _PLOT_W}" y1="{y}" y2="{y}"/>')
            parts.append(f'<text class="tick" x="{self.left - 8}" y="{y}" text-anchor="end" '
                         f'dominant-baseline="middle">{_tick_label(tick, self.y_ticks)}</text>')
        cx, cy = 14, self.top + _PLOT_H / 2
        parts.append(f'<text class="axis-label" x="{cx}" y="{_f(cy)}" text-anchor="middle" '
                     f'transform="rotate(-90 {cx} {_f(cy)})">{escape(label)}</text>')
        return parts

    def x_axis(self, label: str, ticks: list[tuple[float, str]]) -> list[str]:
        bottom = self.top + _PLOT_H
        parts = [f'<line class="axis" x1="{self.left}" x2="{self.left + _PLOT_W}" y1="{bottom}" y2="{bottom}"/>']
        for x, text in ticks:
            parts.append(f'<text class="tick" x="{_f(x)}" y="{bottom + 18}" text-anchor="middle">{escape(text)}</text>')
        parts.append(f'<text class="axis-label" x="{_f(self.left + _PLOT_W / 2)}" y="{bottom + 42}" '
                     f'text-anchor="middle">{escape(label)}</text>')
        return parts

    def legend_parts(self) -> list[str]:
        parts = ['<g class="legend">']
        for i, series in enumerate(self.legend):
            x0 = self.left + self.item_w * (i // self.legend_rows)
            y = self.legend_top + 10 + 20 * (i % self.legend_rows)
            dash = ' stroke-dasharray="5 3"' if series.reference else ""
            parts.append(f'<line x1="{x0}" x2="{x0 + 22}" y1="{y}" y2="{y}" stroke="{series.colour}" '
                         f'stroke-width="2"{dash}/>')
            parts.append(f'<circle cx="{x0 + 11}" cy="{y}" r="4" fill="{series.colour}"/>')
            parts.append(f'<text x="{x0 + 30}" y="{y}" dominant-baseline="middle">{escape(series.label)}</text>')
        parts.append("</g>")
        return parts


def _clip(frame: "_Frame", value: float) -> float:
    return min(max(value, frame.y_ticks[0]), frame.y_ticks[-1])


def _whisker(x1: float, y1: float, x2: float, y2: float, colour_: str) -> str:
    return (f'<line class="whisker" x1="{_f(x1)}" y1="{_f(y1)}" x2="{_f(x2)}" y2="{_f(y2)}" '
            f'stroke="{colour_}"/>')


def _tip(text: str) -> str:
    return f"<title>{escape(text)}</title>" if text else ""


def _value_range(series: list[Series], include: tuple[float, ...] = (), cap: float | None = None
                 ) -> tuple[float, float]:
    values = list(include)
    for s in series:
        for p in s.points:
            values += [p.y - (p.err or 0.0), p.y + (p.err or 0.0)]
    low, high = min(values), max(values)
    return low, high if cap is None else min(high, cap)


def _capped_ticks(low: float, high: float, cap: float | None, count: int = 5) -> list[float]:
    """nice_ticks, the top tick no higher than ``cap`` (100 for percentages) when the data allow."""
    ticks = nice_ticks(low, high, count)
    if cap is not None and ticks[-1] > cap >= high:
        ticks = [t for t in ticks if t < cap] + [cap]
    return ticks


def line_chart(title: str, description: str, categories: list[str], series: list[Series],
               x_label: str, y_label: str, cap: float | None = None) -> str:
    """Lines over evenly spaced categories (shot counts), CI whiskers; reference series as dashed levels.

    Points sharing a category are dodged sideways so that none hides another; ``cap`` bounds the axis
    (and the whiskers) above.
    """
    low, high = _value_range(series, cap=cap)
    frame = _Frame(_capped_ticks(low, high, cap), series)
    slot = _PLOT_W / len(categories)
    dodge = min(8.0, slot * 0.6 / max(1, len(series)))

    def x_of(category: str, index: int) -> float:
        centre = frame.left + slot * (categories.index(category) + 0.5)
        return centre + (index - (len(series) - 1) / 2) * dodge

    parts = frame.open(title, description) + frame.y_axis(y_label)
    parts += frame.x_axis(x_label, [(x_of(c, (len(series) - 1) / 2), c) for c in categories])
    for i, s in enumerate(series):
        centred = (len(series) - 1) / 2 if s.reference else i  # a level is not dodged
        points = [(x_of(str(p.x), centred), frame.y(p.y), p) for p in s.points]
        if s.reference:
            for _, y, p in points:
                parts.append(f'<line class="mark level" x1="{frame.left}" x2="{frame.left + _PLOT_W}" y1="{_f(y)}" '
                             f'y2="{_f(y)}" stroke="{s.colour}" stroke-width="1.5" stroke-dasharray="5 3">'
                             f"{_tip(p.tip)}</line>")
        elif len(points) > 1:
            path = " ".join(f"{'M' if j == 0 else 'L'}{_f(x)},{_f(y)}" for j, (x, y, _) in enumerate(points))
            parts.append(f'<path class="mark line" d="{path}" fill="none" stroke="{s.colour}" stroke-width="2"/>')
        for x, y, p in points:
            if p.err:
                parts.append(_whisker(x, frame.y(_clip(frame, p.y - p.err)), x, frame.y(_clip(frame, p.y + p.err)),
                                      s.colour))
            parts.append(f'<circle class="mark point" cx="{_f(x)}" cy="{_f(y)}" r="4.5" fill="{s.colour}">'
                         f"{_tip(p.tip)}</circle>")
    return "\n".join(parts + frame.legend_parts() + ["</svg>"])


def scatter_chart(title: str, description: str, series: list[Series], x_label: str, y_label: str,
                  harmonic_means: bool = False, cap: float | None = None) -> str:
    """Points with 95% CI whiskers on both axes; ``harmonic_means`` adds dashed curves of equal
    harmonic mean of x and y (base-to-novel's HM); ``cap`` bounds both axes above."""
    xs = [v for s in series for p in s.points for v in (p.x - (p.x_err or 0.0), p.x + (p.x_err or 0.0))]
    low, high = _value_range(series, cap=cap)
    x_high = max(xs) if cap is None else min(max(xs), cap)
    frame = _Frame(_capped_ticks(low, high, cap), series, x_ticks=_capped_ticks(min(xs), x_high, cap))
    parts = frame.open(title, description) + frame.y_axis(y_label)
    for tick in frame.x_ticks:
        x = _f(frame.x(tick))
        parts.append(f'<line class="grid" x1="{x}" x2="{x}" y1="{frame.top}" y2="{frame.top + _PLOT_H}"/>')
    parts += frame.x_axis(x_label, [(frame.x(t), _tick_label(t, frame.x_ticks)) for t in frame.x_ticks])
    if harmonic_means:
        parts += _harmonic_mean_curves(frame)
    for s in series:
        for p in s.points:
            x, y = frame.x(p.x), frame.y(p.y)
            if p.err:
                parts.append(_whisker(x, frame.y(_clip(frame, p.y - p.err)), x, frame.y(_clip(frame, p.y + p.err)),
                                      s.colour))
            if p.x_err:
                x_low, x_high = frame.x_ticks[0], frame.x_ticks[-1]
                parts.append(_whisker(frame.x(max(p.x - p.x_err, x_low)), y, frame.x(min(p.x + p.x_err, x_high)), y,
                                      s.colour))
            parts.append(f'<circle class="mark point" cx="{_f(x)}" cy="{_f(y)}" r="5.5" fill="{s.colour}" '
                         f'fill-opacity="0.9" stroke="#fff" stroke-width="1">{_tip(p.tip)}</circle>')
    return "\n".join(parts + frame.legend_parts() + ["</svg>"])


def _harmonic_mean_curves(frame: _Frame) -> list[str]:
    """Dashed curves y = c·x / (2x - c) for round values c of the harmonic mean inside the plot."""
    x_low, x_high = frame.x_ticks[0], frame.x_ticks[-1]
    y_low, y_high = frame.y_ticks[0], frame.y_ticks[-1]
    lowest, highest = 2 * x_low * y_low / (x_low + y_low), 2 * x_high * y_high / (x_high + y_high)
    parts = []
    for level in nice_ticks(lowest, highest, count=6)[1:-1]:
        points = []
        for i in range(81):
            x = x_low + (x_high - x_low) * i / 80
            if 2 * x - level <= 0:
                continue
            y = level * x / (2 * x - level)
            if y_low <= y <= y_high:
                points.append((frame.x(x), frame.y(y)))
        if len(points) < 2:
            continue
        path = " ".join(f"{'M' if j == 0 else 'L'}{_f(x)},{_f(y)}" for j, (x, y) in enumerate(points))
        parts.append(f'<path class="iso" d="{path}" fill="none"/>')
        end_x, end_y = points[-1]
        if abs(end_x - frame.x(x_high)) < 1:  # leaves through the right edge: label it there
            x, y, anchor = end_x - 4, end_y - 5, "end"
        else:  # leaves through the bottom: label where it enters, at the top or left edge
            x, y, anchor = points[0][0] + 4, points[0][1] + 12, "start"
        parts.append(f'<text class="iso-label" x="{_f(x)}" y="{_f(y)}" '
                     f'text-anchor="{anchor}">HM {_tick_label(level, [0, 1])}</text>')
    return parts


def bar_chart(title: str, description: str, categories: list[str], series: list[Series],
              x_label: str, y_label: str, signed: bool = False, cap: float | None = None) -> str:
    """Grouped bars from zero: one group per category, one bar per series, CI whiskers, value labels
    (``signed``: with a + for gains); ``cap`` bounds the axis (and the whiskers) above."""
    low, high = _value_range(series, include=(0.0,), cap=cap)
    pad = (high - low) * 0.08  # room for the value labels
    top = high + pad if high > 0 else 0.0
    frame = _Frame(_capped_ticks(low - (pad if low < 0 else 0.0), top if cap is None else min(top, cap), cap), series)
    slot = _PLOT_W / len(categories)
    bar_w = min(34.0, slot * 0.8 / max(1, len(series)))
    parts = frame.open(title, description) + frame.y_axis(y_label)
    parts += frame.x_axis(x_label, [(frame.left + slot * (i + 0.5), c) for i, c in enumerate(categories)])
    zero = frame.y(0.0)
    for i, s in enumerate(series):
        for p in s.points:
            centre = frame.left + slot * (categories.index(str(p.x)) + 0.5) + (i - (len(series) - 1) / 2) * bar_w
            top, bottom = sorted((frame.y(p.y), zero))
            parts.append(f'<rect class="mark bar" x="{_f(centre - bar_w / 2 + 1)}" y="{_f(top)}" '
                         f'width="{_f(bar_w - 2)}" height="{_f(max(bottom - top, 0.5))}" fill="{s.colour}">'
                         f"{_tip(p.tip)}</rect>")
            if p.err:
                parts.append(_whisker(centre, frame.y(_clip(frame, p.y - p.err)), centre,
                                      frame.y(_clip(frame, p.y + p.err)), "#333"))
            label = f"{p.y:+.2f}" if signed else f"{p.y:.1f}"
            above = p.y >= 0
            edge = frame.y(_clip(frame, p.y + (p.err or 0.0) if above else p.y - (p.err or 0.0)))
            parts.append(f'<text class="value" x="{_f(centre)}" y="{_f(edge - 5 if above else edge + 13)}" '
                         f'text-anchor="middle">{label}</text>')
    parts.append(f'<line class="axis zero" x1="{frame.left}" x2="{frame.left + _PLOT_W}" y1="{_f(zero)}" '
                 f'y2="{_f(zero)}"/>')
    return "\n".join(parts + frame.legend_parts() + ["</svg>"])


__all__ = ["PALETTE", "Point", "Series", "bar_chart", "line_chart", "nice_ticks", "scatter_chart"]
