"""What a reader sees in a notebook: figures shown inline (and saved), tables rendered (and checkable as text).

A notebook calls ``show.figure`` where the paper's figure belongs and ``show.table`` for every table. In
JupyterLab a table renders as HTML; nbval compares the ``text/plain`` form too, which is the fixed-width
``DataFrame.to_string`` of the same rounded numbers, so a checked cell stays stable across machines. Outside
IPython (a script, the CLI) both print text and figures are only saved.
"""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from l2s_lib.report import figures


def _ipython():
    try:
        from IPython import get_ipython
    except ImportError:  # IPython is in the notebooks extra; the library works without it
        return None
    return get_ipython()


class Table:
    """A DataFrame shown as a rendered table in a notebook and as fixed-width text everywhere else.

    ``caption`` is a short line above the table (what it is; the markdown cell above says what the columns mean).
    """

    def __init__(self, df: pd.DataFrame, caption: str | None = None, index: bool = True):
        self.df, self.caption, self.index = df, caption, index

    def __repr__(self) -> str:
        body = self.df.to_string(index=self.index)
        return f"{self.caption}\n{body}" if self.caption else body

    def _repr_html_(self) -> str:
        # Fixed float rendering: the HTML is compared by nbval too, so it must not depend on display options.
        table = self.df.to_html(index=self.index, float_format=lambda v: f"{v:g}", na_rep="", border=0,
                                classes="l2s-table", notebook=True)
        cap = f"<p><b>{html.escape(self.caption)}</b></p>" if self.caption else ""
        return cap + table


def table(df: pd.DataFrame | Table, caption: str | None = None, index: bool = True) -> None:
    """Display ``df`` (already rounded by the caller) as a rendered table; print it as text outside IPython.

    ``df`` may be a ``Table`` already (what a study's ``tables(folder)`` returns): it is shown as it is. Returns
    nothing, so a call that ends a cell is not displayed a second time as the cell's result.
    """
    shown = df if isinstance(df, Table) else Table(df, caption, index)
    if _ipython() is None:
        print(repr(shown))
    else:
        from IPython.display import display

        display(shown)


def figure(fig, name: str, directory: str | Path | None = None) -> list[Path]:
    """Save ``fig`` under its paper name (``figures.save``) and show it inline; returns the saved paths.

    The figure is closed after it is shown, so the inline backend does not draw it a second time at the end of
    the cell, and notebooks that make many figures do not keep them all in memory.
    """
    saved = figures.save(fig, name, directory)
    if _ipython() is not None:
        import matplotlib.pyplot as plt
        from IPython.display import display

        display(fig)
        plt.close(fig)
    return saved
