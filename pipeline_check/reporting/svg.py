"""Inline SVG charts for the HTML report: scales, axes and series, as plain strings.

Every chart is one ``<svg role="img">`` with a ``<title>`` and ``<desc>`` (its text alternative), a
``data-chart`` name, and one ``<g class="series" data-series=...>`` per series, so a reader, a screen
reader and a test find the same things. Points are drawn as path commands (one ``M`` per point), which
keeps a chart of thousands of points a few kilobytes. Every text that goes in is escaped here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from html import escape

WIDTH = 640
HEIGHT = 300
LEFT, RIGHT, TOP, BOTTOM = 64, 20, 16, 44

Format = Callable[[float], str]


def short_duration(seconds: float) -> str:
    """Compact tick label: ``500µs``, ``20ms``, ``1.5s``, ``2m``."""
    if seconds == 0:
        return "0"
    if seconds < 1e-3:
        return f"{seconds * 1e6:g}µs"
    if seconds < 1:
        return f"{seconds * 1e3:g}ms"
    if seconds < 600:
        return f"{seconds:g}s"
    return f"{seconds / 60:g}m"


def plain(value: float) -> str:
    return f"{value:g}"


def _num(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def nice_step(span: float, parts: int = 5) -> float:
    """A 1, 2 or 5 x 10^k step that cuts ``span`` into about ``parts``."""
    rough = max(span, 1e-9) / parts
    decade = 10 ** math.floor(math.log10(rough))
    return float(next(s * decade for s in (1, 2, 5, 10) if s * decade >= rough * 0.999))


@dataclass(frozen=True, slots=True)
class Scale:
    """Maps values in ``[lo, hi]`` to pixels in ``[px_lo, px_hi]``, linearly or by decades; values out
    of range are clamped to the edge."""

    lo: float
    hi: float
    px_lo: float
    px_hi: float
    log: bool = False

    @classmethod
    def linear(cls, lo: float, hi: float, px_lo: float, px_hi: float) -> Scale:
        """A linear scale over ``[lo, hi]`` widened to whole steps, the tightest of 5 to 8 steps (never empty)."""
        if hi <= lo:
            hi = lo + 1
        steps = (nice_step(hi - lo, parts) for parts in (5, 6, 7, 8))
        lo_, hi_ = min(
            ((math.floor(lo / st) * st, math.ceil(hi / st - 1e-9) * st) for st in steps), key=lambda b: b[1] - b[0]
        )
        return cls(lo_, hi_, px_lo, px_hi)

    @classmethod
    def decades(cls, lo: float, hi: float, px_lo: float, px_hi: float) -> Scale:
        """A log scale from the decade at or below ``lo`` to the one at or above ``hi`` (both > 0)."""
        lo_exp = math.floor(math.log10(lo))
        hi_exp = max(lo_exp + 1, math.ceil(math.log10(hi) - 1e-9))
        return cls(10.0**lo_exp, 10.0**hi_exp, px_lo, px_hi, log=True)

    def __call__(self, value: float) -> float:
        value = min(max(value, self.lo), self.hi)
        if self.log:
            share = (math.log10(value) - math.log10(self.lo)) / (math.log10(self.hi) - math.log10(self.lo))
        else:
            share = (value - self.lo) / (self.hi - self.lo)
        return self.px_lo + share * (self.px_hi - self.px_lo)

    def ticks(self) -> list[float]:
        """Round values to label: decades (and 2, 5 between few of them), or 5 to 8 even steps."""
        if self.log:
            first, last = round(math.log10(self.lo)), round(math.log10(self.hi))
            steps = (1, 2, 5) if last - first <= 3 else (1,)
            return [m * 10.0**e for e in range(first, last + 1) for m in steps if m * 10.0**e <= self.hi * 1.0001]
        span = self.hi - self.lo
        step = next(st for st in (nice_step(span, parts) for parts in (5, 6, 7, 8)) if _whole(span / st))
        count = round(span / step)
        return [self.lo + i * step for i in range(count + 1)]


def _whole(value: float) -> bool:
    return abs(value - round(value)) < 1e-6


def plot_area(height: int = HEIGHT) -> tuple[tuple[float, float], tuple[float, float]]:
    """The pixel ranges of the x and y axes (y grows upwards)."""
    return (LEFT, WIDTH - RIGHT), (height - BOTTOM, TOP)


def polyline(points: Iterable[tuple[float, float]]) -> str:
    """Path data joining ``points`` (pixels)."""
    return "".join(f"{'M' if i == 0 else 'L'}{_num(x)} {_num(y)}" for i, (x, y) in enumerate(points))


def marks(points: Iterable[tuple[float, float]]) -> str:
    """Path data with one dot per point (a zero-length segment drawn with round caps)."""
    return "".join(f"M{_num(x)} {_num(y)}h0" for x, y in points)


def steps(points: Iterable[tuple[float, float]], x0: float, y0: float) -> str:
    """Path data of a step function from ``(x0, y0)``: across to each point, then up (or down) to it."""
    return f"M{_num(x0)} {_num(y0)}" + "".join(f"H{_num(x)}V{_num(y)}" for x, y in points)


def rects(boxes: Iterable[tuple[float, float, float, float]]) -> str:
    """Path data with one closed rectangle per ``(x, y, width, height)``."""
    return "".join(f"M{_num(x)} {_num(y)}h{_num(w)}v{_num(h)}h{_num(-w)}z" for x, y, w, h in boxes)


def series(name: str, css: str, d: str, count: int, *, label: str | None = None) -> str:
    """One series: a group named ``name`` holding ``count`` points drawn by path data ``d``."""
    return (
        f'<g class="series {css}" data-series="{escape(name)}" data-points="{count}">'
        f'<title>{escape(label or name)}</title><path d="{d}"/></g>'
    )


def vline(x: float, y0: float, y1: float, css: str, label: str, *, mark_y: float | None = None, row: int = 0) -> str:
    """A labelled vertical marker line (a threshold), with a short cross-bar at ``mark_y`` (the share a
    percentile threshold names); ``row`` moves the label down so neighbouring labels do not overlap.
    Past the middle of the chart the label sits left of the line, so it stays inside."""
    bar = "" if mark_y is None else f"M{_num(x - 6)} {_num(mark_y)}H{_num(x + 6)}"
    left = x > WIDTH / 2
    anchor = ' text-anchor="end"' if left else ""
    return (
        f'<g class="marker {css}"><title>{escape(label)}</title>'
        f'<path d="M{_num(x)} {_num(y0)}V{_num(y1)}{bar}"/>'
        f'<text x="{_num(x - 3 if left else x + 3)}" y="{_num(y1 + 10 + 12 * row)}"{anchor}>{escape(label)}</text></g>'
    )


def band(x0: float, x1: float, y0: float, y1: float, css: str, label: str) -> str:
    """A shaded span across the plot (a fault window) with its label as a tooltip and text."""
    return (
        f'<g class="band {css}"><title>{escape(label)}</title>'
        f'<rect x="{_num(x0)}" y="{_num(y1)}" width="{_num(max(x1 - x0, 1))}" height="{_num(y0 - y1)}"/>'
        f'<text x="{_num(x0 + 2)}" y="{_num(y1 + 10)}">{escape(label)}</text></g>'
    )


def x_axis(x: Scale, y_lo: float, y_hi: float, fmt: Format, label: str, height: int) -> str:
    """Vertical grid lines at ``x``'s ticks, their labels, the baseline and the axis title."""
    parts = ['<g class="axes">']
    for t in x.ticks():
        px = _num(x(t))
        parts.append(f'<path class="grid" d="M{px} {_num(y_lo)}V{_num(y_hi)}"/>')
        parts.append(f'<text x="{px}" y="{_num(y_lo + 14)}" text-anchor="middle">{escape(fmt(t))}</text>')
    parts.append(
        f'<path class="frame" d="M{_num(x.px_lo)} {_num(y_lo)}H{_num(x.px_hi)}"/>'
        f'<text class="label" x="{_num((x.px_lo + x.px_hi) / 2)}" y="{height - 6}" text-anchor="middle">'
        f"{escape(label)}</text></g>"
    )
    return "".join(parts)


def y_axis(y: Scale, x_lo: float, x_hi: float, fmt: Format, label: str) -> str:
    """Horizontal grid lines at ``y``'s ticks, their labels, the left edge and the axis title."""
    parts = ['<g class="axes">']
    for t in y.ticks():
        py = _num(y(t))
        parts.append(f'<path class="grid" d="M{_num(x_lo)} {py}H{_num(x_hi)}"/>')
        parts.append(f'<text x="{_num(x_lo - 4)}" y="{py}" dy="4" text-anchor="end">{escape(fmt(t))}</text>')
    parts.append(
        f'<path class="frame" d="M{_num(x_lo)} {_num(y.px_hi)}V{_num(y.px_lo)}"/>'
        f'<text class="label" transform="rotate(-90)" x="{_num(-(y.px_lo + y.px_hi) / 2)}" y="14" '
        f'text-anchor="middle">{escape(label)}</text></g>'
    )
    return "".join(parts)


def chart(name: str, title: str, desc: str, body: Sequence[str], height: int = HEIGHT) -> str:
    """The ``<svg>`` of one chart: its text alternative (``title``, ``desc``) first, then ``body``."""
    return (
        f'<svg class="chart" data-chart="{escape(name)}" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" '
        f'height="{height}" role="img" aria-labelledby="{escape(name)}-title {escape(name)}-desc">'
        f'<title id="{escape(name)}-title">{escape(title)}</title>'
        f'<desc id="{escape(name)}-desc">{escape(desc)}</desc>{"".join(body)}</svg>'
    )
