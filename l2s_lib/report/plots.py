"""The compendium's figures, drawn from result tables only (never from live models).

Each ``fig_*`` function takes tidy tables (ours and, where the paper has the same quantity, the paper's)
and returns a matplotlib Figure; notebooks pass it to ``l2s_lib.report.figures.save`` under the paper's name.
"""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from l2s_lib.report.figures import ROLE_COLORS, set_style

_MARKERS = {"system1": "s", "system2": "D", "dpo": "P", "merge": "o"}


def _annotate(ax, x, y, text):
    ax.annotate(text, (x, y), xytext=(4, 3), textcoords="offset points", fontsize=7)


def accuracy_vs_length_change(ax: plt.Axes, avg: pd.DataFrame, title: str, system2: str,
                              roles: Mapping[str, str] | None = None) -> None:
    """One panel of Figure 1: mean accuracy against the length change vs System 2 (one point per model).

    ``avg`` has columns ``model, avg_accuracy, length_change_vs_system2_pct`` (``tables.average_table``
    or the paper's ``table1_7b_avg``); ``roles`` maps model -> system1/system2/dpo/merge for colours.
    System 2 is drawn as the reference lines (0% change, its accuracy).
    """
    roles = dict(roles or {})
    s2_acc = float(avg.loc[avg["model"] == system2, "avg_accuracy"].iloc[0])
    ax.axhline(s2_acc, color=ROLE_COLORS["system2"], lw=0.8, ls="--")
    ax.axvline(0, color=ROLE_COLORS["system2"], lw=0.8, ls="--")
    for rec in avg.itertuples(index=False):
        if pd.isna(rec.length_change_vs_system2_pct):
            continue  # the paper gives no length change for System 1 at 7B
        role = roles.get(rec.model, "merge")
        ax.scatter(rec.length_change_vs_system2_pct, rec.avg_accuracy, s=36, color=ROLE_COLORS[role],
                   marker=_MARKERS[role], zorder=3)
        _annotate(ax, rec.length_change_vs_system2_pct, rec.avg_accuracy, rec.model)
    ax.set_xlabel("length change vs System 2 (%)")
    ax.set_ylabel("mean accuracy (%)")
    ax.set_title(title)


def fig_merge_methods(ours: pd.DataFrame, ours_system2: str, ours_roles: Mapping[str, str],
                      paper_avg: pd.DataFrame, paper_system2: str = "DeepSeek-R1-7B",
                      ours_title: str = "Organisms") -> plt.Figure:
    """Figure 1: the paper's 7B panel beside ours."""
    set_style()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    paper_roles = {m: ("system2" if m == paper_system2 else "dpo" if m == "DPO" else
                       "system1" if m.startswith("Qwen") else "merge") for m in paper_avg["method"]}
    accuracy_vs_length_change(axes[0], paper_avg.rename(columns={"method": "model"}),
                              "Paper: Qwen2.5-Math-7B + R1-Distill-7B (Table 1)", paper_system2, paper_roles)
    accuracy_vs_length_change(axes[1], ours, ours_title, ours_system2, ours_roles)
    return fig


def fig_lines(table: pd.DataFrame, x: str, y: str, hue: str, ax: plt.Axes | None = None,
              colors: Mapping[str, str] | None = None, xlabel: str | None = None, ylabel: str | None = None,
              title: str | None = None) -> plt.Axes:
    """Lines of ``y`` against ``x``, one per ``hue`` value, in table order (used by several studies)."""
    if ax is None:
        set_style()
        _, ax = plt.subplots(figsize=(5, 3.6))
    for key, part in table.groupby(hue, sort=False):
        part = part.sort_values(x)
        ax.plot(part[x], part[y], marker="o", ms=3.5, label=str(key), color=(colors or {}).get(key))
    ax.set_xlabel(xlabel or x)
    ax.set_ylabel(ylabel or y)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=7)
    return ax


def heatmap(ax: plt.Axes, table: pd.DataFrame, title: str, fmt: str = ".2f", cmap: str = "viridis") -> None:
    """An annotated heatmap of a small numeric table (rows x columns)."""
    import seaborn as sns

    sns.heatmap(table.astype(float), ax=ax, annot=table.size <= 120, fmt=fmt, cmap=cmap, cbar=True,
                annot_kws={"fontsize": 6})
    ax.set_title(title)


def rank_correlation(x, y) -> float:
    """Spearman's rho between two sequences (ties get average ranks)."""
    rx = pd.Series(np.asarray(x, dtype=float)).rank().to_numpy()
    ry = pd.Series(np.asarray(y, dtype=float)).rank().to_numpy()
    if np.std(rx) == 0 or np.std(ry) == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])
