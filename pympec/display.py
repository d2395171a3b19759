"""How results and errors look in Jupyter: the HTML pieces of ResultList, CompositeError,
TaskResult and PendingResult, and engine ids written as ranges.

Every text that comes from the engines or from the user is escaped here, so output can
never inject HTML.  The colours are IPython 0.10's Results List ones: engine ids green,
inputs blue, stderr and errors red.  Styles are inline, so they survive wherever the
notebook is rendered.
"""
from __future__ import annotations

import html
from typing import Iterable

GREEN, BLUE, RED, GREY = "#1a7f37", "#0550ae", "#cf222e", "#6e7781"
_CELL = "text-align:left;vertical-align:top;padding:2px 8px"


def id_ranges(ids: Iterable[int]) -> str:
    """Engine ids as ranges, in order: ``[0, 1, 2, 3, 5, 7, 8]`` gives ``'0-3, 5, 7-8'``."""
    spans: list[list[int]] = []
    for i in sorted(set(ids)):
        if spans and i == spans[-1][1] + 1:
            spans[-1][1] = i
        else:
            spans.append([i, i])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def engines_label(ids: list[int]) -> str:
    """``engine 3`` or ``engines 0-63``."""
    return f"engine {ids[0]}" if len(ids) == 1 else f"engines {id_ranges(ids)}"


def pre(text: str | None, colour: str | None = None) -> str:
    """``text`` escaped and preformatted, in ``colour``; empty for no text."""
    if not text:
        return ""
    style = "margin:0;padding:0;text-align:left;white-space:pre-wrap;background:none"
    if colour:
        style += f";color:{colour}"
    return f'<pre style="{style}">{html.escape(text)}</pre>'


def span(text: str, colour: str | None = None, bold: bool = False) -> str:
    """``text`` escaped, inline, in ``colour`` (bold if asked)."""
    style = (f"color:{colour};" if colour else "") + ("font-weight:bold;" if bold else "")
    return f'<span style="{style}">{html.escape(text)}</span>' if style else html.escape(text)


def table(header: list[str], rows: list[list[str]], title: str = "") -> str:
    """A table: ``header`` words (escaped here), ``rows`` of cells that are HTML already
    (built with :func:`pre` and :func:`span`), and a bold ``title`` line above it."""
    head = "".join(f'<th style="{_CELL}">{html.escape(h)}</th>' for h in header)
    body = "".join("<tr>" + "".join(f'<td style="{_CELL}">{c}</td>' for c in row) + "</tr>"
                   for row in rows)
    caption = f"<div>{span(title, bold=True)}</div>" if title else ""
    return (f'<div class="pympec">{caption}<table style="border-collapse:collapse">'
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>")
