"""HTML building blocks of the report: escaped tables, sections, and the text forms of figures.

Every string from a run (tag labels, notes, settings, field values, stage names) is escaped here or in
:mod:`~pipeline_check.reporting.svg`; only :class:`Raw` fragments, which the report builds itself from
escaped parts, pass as they are.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from html import escape

from pipeline_check.verdict.results import format_value


@dataclass(frozen=True, slots=True)
class Raw:
    """Markup the report built itself from escaped parts."""

    html: str


@dataclass(frozen=True, slots=True)
class Classed:
    """A cell's text with a CSS class on the cell (a status in colour; the text still says it)."""

    text: str
    css: str


Cell = str | Raw | Classed


def _cell(tag: str, value: Cell, extra: str = "") -> str:
    if isinstance(value, Classed):
        return f'<{tag}{extra} class="{escape(value.css)}">{escape(value.text)}</{tag}>'
    inner = value.html if isinstance(value, Raw) else escape(value)
    return f"<{tag}{extra}>{inner}</{tag}>"


def latency(value: float | None) -> str:
    """A latency for a table cell: ``12.3ms``, ``1.250s``, ``never`` (a canary that never arrived)."""
    if value is None or math.isnan(value):
        return "—"
    if math.isinf(value):
        return "never"
    return format_value(value, "latency")


def count(value: float) -> str:
    return f"{int(value):,}"


def table(
    head: Sequence[str],
    rows: Iterable[Sequence[Cell]],
    *,
    caption: str = "",
    data_for: str | None = None,
    row_attrs: Sequence[Mapping[str, str]] | None = None,
    id_: str | None = None,
) -> str:
    """A ``<table>`` whose first column heads its rows; ``data_for`` names the chart it holds the data of."""
    attrs = "".join(
        f' {name}="{escape(value)}"' for name, value in (("id", id_), ("data-for", data_for)) if value is not None
    )
    parts = [f'<table class="data"{attrs}>']
    if caption:
        parts.append(f"<caption>{escape(caption)}</caption>")
    parts.append("<thead><tr>" + "".join(f'<th scope="col">{escape(h)}</th>' for h in head) + "</tr></thead><tbody>")
    for i, row in enumerate(rows):
        extra = "".join(f' {k}="{escape(v)}"' for k, v in (row_attrs[i] if row_attrs else {}).items())
        first, *rest = row
        cells = _cell("th", first, ' scope="row"') + "".join(_cell("td", c) for c in rest)
        parts.append(f"<tr{extra}>{cells}</tr>")
    parts.append("</tbody></table>")
    return "".join(parts)


def scroll(name: str, content: str) -> str:
    """A scrollable region for a long table; focusable, so a keyboard can scroll it too."""
    return f'<div class="scroll" tabindex="0" role="region" aria-label="{escape(name)}">{content}</div>'


def figure(name: str, svg: str, caption: str, data: str) -> str:
    """A chart beside its data table; ``caption`` says what is drawn and how it was thinned."""
    return (
        f'<div class="pair"><figure data-figure="{escape(name)}">{svg}'
        f"<figcaption>{escape(caption)}</figcaption></figure>{scroll(f'{name} data', data)}</div>"
    )


def section(id_: str, title: str, *body: str) -> str:
    return (
        f'<section id="{escape(id_)}" aria-labelledby="{escape(id_)}-h">'
        f'<h2 id="{escape(id_)}-h">{escape(title)}</h2>{"".join(body)}</section>'
    )


def paragraph(text: str) -> str:
    return f"<p>{escape(text)}</p>"
