"""The one table renderer: a :class:`Table` as markdown, LaTeX, HTML or CSV.

Imports: :mod:`bnn_priors.errors`, pandas and tabulate; nothing of the suite.

A table module (:mod:`~bnn_priors.suite.tables`, :mod:`~bnn_priors.suite.protocols`)
decides what a table says: its columns, its rows of cells, its caption and, for
CSV, its tidy data; this module alone decides how each format writes it.
:data:`FORMATS` is the registry of formats (the command line's ``--format``
choices): a new format is one function here and one line in it.

A cell is a string (text) or an :class:`Estimate` (mean ± standard error with its
decimals; a NaN mean is a missing figure). A column's kind sets its alignment:
``label`` and ``text`` left, ``count`` and ``estimate`` right (LaTeX: ``l``,
``l``, ``r``, ``c``). A summary row (the average rank) is set off by a rule in
LaTeX.
"""

from __future__ import annotations

import html
import io
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import pandas as pd
from tabulate import tabulate

from bnn_priors.errors import lookup

#: What a missing figure shows (LaTeX: ``--``).
MISSING = "–"


@dataclass(frozen=True)
class Estimate:
    """``mean ± se`` to ``decimals`` places, the ``se`` to ``se_decimals`` where given (no ``± se``
    when ``se`` is NaN; a NaN mean is missing)."""

    mean: float
    se: float
    decimals: int
    bold: bool = False
    se_decimals: int | None = None

    def text(self, pm: str) -> str:
        if not math.isfinite(self.mean):
            return MISSING
        text = f"{self.mean:.{self.decimals}f}"
        if math.isfinite(self.se):
            text += f"{pm}{self.se:.{self.decimals if self.se_decimals is None else self.se_decimals}f}"
        return text


Cell = str | Estimate


@dataclass(frozen=True)
class Column:
    """A column: its title, its kind (``label``, ``text``, ``count`` or ``estimate``) and, where it
    differs, its LaTeX title."""

    title: str
    kind: str = "estimate"
    latex_title: str | None = None


@dataclass(frozen=True)
class Row:
    cells: Sequence[Cell]
    summary: bool = False


@dataclass
class Table:
    """What a table says, in no format yet; ``data`` is its tidy form (what CSV writes)."""

    columns: Sequence[Column]
    rows: Sequence[Row]
    caption: str
    data: pd.DataFrame = field(default_factory=pd.DataFrame)


def decimals_for(values: Iterable[float]) -> int:
    """Enough decimals for three significant digits of the smallest non-zero magnitude (0 to 4)."""
    mags = [abs(v) for v in values if math.isfinite(v) and v != 0]
    if not mags:
        return 2
    return int(min(4, max(0, 2 - math.floor(math.log10(min(mags))))))


def latex_escape(text: str) -> str:
    out = []
    for ch in text:
        if ch in "&%$#_{}":
            out.append("\\" + ch)
        elif ch == "~":
            out.append("\\textasciitilde{}")
        elif ch == "^":
            out.append("\\textasciicircum{}")
        elif ch == "\\":
            out.append("\\textbackslash{}")
        else:
            out.append(ch)
    return "".join(out)


def _plain(cell: Cell, pm: str) -> str:
    return cell if isinstance(cell, str) else cell.text(pm)


def _bold(cell: Cell) -> bool:
    return isinstance(cell, Estimate) and cell.bold


def to_markdown(table: Table) -> str:
    """A GitHub pipe table (tabulate's ``github`` format), bold as ``**...**``, the caption below it."""
    align = {"label": "left", "text": "left", "count": "right", "estimate": "right"}
    body = [[f"**{_plain(c, ' ± ')}**" if _bold(c) else _plain(c, " ± ") for c in row.cells] for row in table.rows]
    text = tabulate(body, headers=[c.title for c in table.columns], tablefmt="github", disable_numparse=True,
                    colalign=tuple(align[c.kind] for c in table.columns))
    return f"{text}\n\n{table.caption}\n"


def to_latex(table: Table) -> str:
    """A booktabs ``tabular``, the caption as a comment above it, figures in math mode."""
    spec = {"label": "l", "text": "l", "count": "r", "estimate": "c"}
    titles = [c.latex_title if c.latex_title is not None else c.title for c in table.columns]
    lines = [
        f"% {table.caption}",
        "\\begin{tabular}{" + "".join(spec[c.kind] for c in table.columns) + "}",
        "\\toprule",
        " & ".join(latex_escape(t) for t in titles) + " \\\\",
        "\\midrule",
    ]
    for row in table.rows:
        if row.summary:
            lines.append("\\midrule")
        cells = []
        for i, cell in enumerate(row.cells):
            if isinstance(cell, str):
                text = cell[0].upper() + cell[1:] if row.summary and i == 0 and cell else cell
                cells.append(latex_escape(text))
            elif not math.isfinite(cell.mean):
                cells.append("--")
            else:
                text = cell.text(" \\pm ")
                cells.append(f"$\\mathbf{{{text}}}$" if cell.bold else f"${text}$")
        lines.append(" & ".join(cells) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


def to_html(table: Table) -> str:
    """An HTML table with a caption, bold as ``<b>``, every text escaped."""
    out = ["<table>", f"<caption>{html.escape(table.caption)}</caption>", "<thead><tr>"]
    out += [f"<th>{html.escape(c.title)}</th>" for c in table.columns]
    out.append("</tr></thead>\n<tbody>")
    for row in table.rows:
        cells = "".join(
            f"<td><b>{html.escape(_plain(c, ' ± '))}</b></td>" if _bold(c) else f"<td>{html.escape(_plain(c, ' ± '))}</td>"
            for c in row.cells
        )
        out.append(f"<tr>{cells}</tr>")
    out.append("</tbody>\n</table>")
    return "\n".join(out) + "\n"


def to_csv(table: Table) -> str:
    """The tidy data (:attr:`Table.data`), one line per record."""
    buf = io.StringIO()
    table.data.to_csv(buf, index=False, lineterminator="\n")
    return buf.getvalue()


#: Every table format by name.
FORMATS: dict[str, Callable[[Table], str]] = {
    "markdown": to_markdown,
    "latex": to_latex,
    "csv": to_csv,
    "html": to_html,
}


def check_format(fmt: str) -> str:
    """The registered name of a table format (:class:`~bnn_priors.UnknownNameError` for an unknown one)."""
    return lookup("table format", fmt, FORMATS)


def render(table: Table, fmt: str = "markdown") -> str:
    """``table`` written in format ``fmt`` (a key of :data:`FORMATS`)."""
    return FORMATS[check_format(fmt)](table)
