"""Result tables in the paper's shape, computed from tidy evaluation summaries.

A *summary* is the table ``l2s_lib.eval.evaluate`` returns (columns ``metrics.SUMMARY_COLUMNS``: model,
benchmark, level, n, accuracy, mean_tokens, reflective_pct, keyword_freq, truncated_pct), possibly stacked
over several models. These helpers only reshape it and apply ``l2s_lib.metrics``; they compute nothing new.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from l2s_lib import metrics


def overall(summary: pd.DataFrame) -> pd.DataFrame:
    """The ``level == "all"`` rows (one per model and benchmark)."""
    return summary[summary["level"].astype(str) == "all"].copy()


def average_table(summary: pd.DataFrame, system2: str, models: Sequence[str] | None = None) -> pd.DataFrame:
    """The paper's "Avg." columns: mean accuracy over benchmarks and the length change vs ``system2``.

    Columns ``model, avg_accuracy, mean_tokens, length_change_vs_system2_pct, reflective_pct,
    truncated_pct`` (reflective and truncated: mean over benchmarks). ``models`` fixes the row order.
    """
    top = overall(summary)
    if system2 not in set(top["model"]):
        raise ValueError(f"System 2 model '{system2}' is not in the summary (models: {sorted(set(top['model']))})")
    s2 = top[top["model"] == system2].set_index("benchmark")["mean_tokens"].to_dict()
    rows = []
    for model in models or list(dict.fromkeys(top["model"])):
        part = top[top["model"] == model]
        lengths = part.set_index("benchmark")["mean_tokens"].to_dict()
        rows.append({
            "model": model,
            "avg_accuracy": part["accuracy"].mean(),
            "mean_tokens": part["mean_tokens"].mean(),
            "length_change_vs_system2_pct": metrics.length_change(lengths, s2),
            "reflective_pct": part["reflective_pct"].mean(),
            "truncated_pct": part["truncated_pct"].mean(),
        })
    return pd.DataFrame(rows)


def paper_style(summary: pd.DataFrame, system2: str, models: Sequence[str] | None = None,
                benchmarks: Sequence[str] | None = None, digits: int = 1) -> pd.DataFrame:
    """Table 1's layout: one row per model, ``accuracy (mean length)`` per benchmark, then Avg. and length change."""
    top = overall(summary)
    models = list(models or dict.fromkeys(top["model"]))
    benchmarks = list(benchmarks or dict.fromkeys(top["benchmark"]))
    cell = top.set_index(["model", "benchmark"])
    avg = average_table(summary, system2, models).set_index("model")
    rows = []
    for m in models:
        row = {"model": m}
        for b in benchmarks:
            r = cell.loc[(m, b)]
            row[b] = f"{r['accuracy']:.{digits}f} ({r['mean_tokens']:.0f})"
        row["Avg."] = f"{avg.loc[m, 'avg_accuracy']:.{digits}f}"
        change = avg.loc[m, "length_change_vs_system2_pct"]
        row["length change"] = "-" if m == system2 else f"{change:+.{digits}f}%"
        rows.append(row)
    return pd.DataFrame(rows).set_index("model")


def by_level(summary: pd.DataFrame, benchmark: str, value: str = "accuracy", models: Sequence[str] | None = None,
             digits: int = 1) -> pd.DataFrame:
    """A model x level table of one summary column for one benchmark (levels in numeric order, then ``all``)."""
    part = summary[summary["benchmark"] == benchmark]
    if part.empty:
        raise ValueError(f"benchmark '{benchmark}' is not in the summary")
    table = part.pivot(index="model", columns="level", values=value)
    levels = sorted((c for c in table.columns if c != "all"), key=lambda c: float(c)) + (["all"] if "all" in table else [])
    table = table[levels]
    if models is not None:
        table = table.loc[list(models)]
    else:
        table = table.loc[list(dict.fromkeys(part["model"]))]
    return table.round(digits)
