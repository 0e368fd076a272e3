"""Merge methods (Table 1, Figure 1): accuracy and response length of every merge method against System 2.

``compute`` evaluates System 1, System 2, the DPO baseline (when there is one) and every method of
``METHODS`` with the paper's settings at ``SCALE`` (``catalog.comparison_entries``) and writes:

- ``summary``: the tidy evaluation summary (model, benchmark, level, accuracy, mean_tokens, ..., role, method_key);
- ``records``: per-sample records without the question and response texts;
- ``average``: the paper's "Avg." columns per model (``tables.average_table``);
- ``merge_verdicts``: per merge, the accuracy gap and length change against System 2 and which long-to-short
  goals it meets (``claims.verdicts``);
- ``settings``: the world and the labels of System 1 and System 2.

``tables``, ``figures`` and ``verdict`` read those files only.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from l2s_lib import show
from l2s_lib.report import claims, paper, plots, tables as report_tables
from l2s_lib.studies import comparison, folder

STUDY = "01_merge_methods"
INPUTS: tuple[str, ...] = ()
FIGURES = ("fig1_merge_methods",)


def compute(params: Mapping[str, Any]) -> list[Path]:
    """Evaluate the Table 1 grid of ``params`` (the notebook's parameters) and write its result files."""
    p = dict(params)
    out = folder.of(STUDY, p)
    pair, entries, run = comparison.evaluate(p)
    avg = report_tables.average_table(run.summary, system2=pair.label2, models=run.labels())
    return [
        folder.write(out, run.summary, "summary", p),
        folder.write(out, run.records.drop(columns=["question", "response"]), "records", p),
        folder.write(out, avg, "average", p),
        folder.write(out, claims.verdicts(avg, pair.label2, run.labels("merge")), "merge_verdicts", p),
        folder.write_settings(out, p, world=pair.world, system1=pair.label1, system2=pair.label2, scale=p["SCALE"]),
    ]


def tables(d: Path) -> dict[str, show.Table]:
    """``table1``: accuracy (mean length) per benchmark, Avg. and length change; ``merge_verdicts``: per merge,
    the gap to System 2 and the goals it meets (rounded to 0.1)."""
    summary, s = folder.read(d, "summary"), folder.settings(d)
    return {
        "table1": show.Table(report_tables.paper_style(summary, system2=s["system2"], models=folder.labels(summary))),
        "merge_verdicts": show.Table(folder.read(d, "merge_verdicts").round(1), index=False),
    }


def figures(d: Path) -> folder.Figures:
    """``fig1_merge_methods``: mean accuracy against length change, the paper's 7B panel beside ours."""
    def fig1():
        s = folder.settings(d)
        return plots.fig_merge_methods(folder.read(d, "average"), s["system2"], folder.roles(folder.read(d, "summary")),
                                       paper.read_table("table1_7b_avg"), ours_title=f"This run ({s['world']} world)")

    return folder.Figures({"fig1_merge_methods": fig1})


def verdict(d: Path) -> str:
    """Markdown: does long-to-short merging hold here, and for which methods (``claims.merge_methods_conclusion``)."""
    return claims.merge_methods_conclusion(folder.read(d, "merge_verdicts"), world=folder.settings(d)["world"])
