"""The paper's claims, checked against a study's own numbers, and written out as a sentence.

Each notebook ends with a conclusion that must follow from the numbers above it. These functions compute
the verdict from result tables and return Markdown, so that the conclusion text is generated, never typed.
Every threshold a verdict of any study uses is a constant of this module (the study modules take their defaults
from here, so a threshold is changed in one place); the functions take them as parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

# Every threshold a verdict uses, in one place (each fixed before looking at any organism result).

#: Points of mean accuracy below System 2 that still count as "keeps accuracy" (notebooks 01, 02, 05).
ACC_TOL = 5.0
#: % shorter than System 2 that counts as "much shorter" (notebooks 01, 05).
MIN_SHORTENING = 30.0
#: A model "adapts its length" (notebook 03) when Spearman's rho between per-sample length and level is at least
#: this (0.5 = the usual reading of a strong rank correlation) and the per-level mean length rises at every step.
MIN_RHO = 0.5
#: Fewest difficulty levels on which a length-level correlation is judged (notebook 03).
MIN_LEVELS = 3
#: tau counts as low-rank (notebook 06) when, for the median 2-D tensor, 90% of its energy lies in at most this
#: fraction of its singular directions (a square Gaussian matrix needs about half, a 1:4 one about three quarters).
LOW_RANK_FRAC90 = 0.25
#: How far an SVD method's mean accuracy may sit below Task Arithmetic's (points) and still "fare as well" (06).
SVD_ACC_TOL = 2.0
#: A drop in accuracy between neighbouring alphas up to this many points still counts as monotone (notebook 05:
#: one point is within the noise of a few hundred problems).
MONOTONE_SLACK = 1.0


def verdicts(avg: pd.DataFrame, system2: str, merges: Sequence[str], acc_tol: float = ACC_TOL,
             min_shortening: float = MIN_SHORTENING) -> pd.DataFrame:
    """Per merge: accuracy gap to System 2 (points), length change (%) and which of the L2S goals it meets.

    ``avg``: ``tables.average_table`` output. Verdicts: ``L2S`` (keeps accuracy and much shorter), ``shorter,
    less accurate``, ``accurate, not much shorter``, ``neither``.
    """
    a = avg.set_index("model")
    s2 = a.loc[system2, "avg_accuracy"]
    rows = []
    for m in merges:
        gap = a.loc[m, "avg_accuracy"] - s2
        change = a.loc[m, "length_change_vs_system2_pct"]
        keeps, short = gap >= -acc_tol, change <= -min_shortening
        verdict = ("L2S" if keeps and short else "shorter, less accurate" if short else
                   "accurate, not much shorter" if keeps else "neither")
        rows.append({"model": m, "accuracy_gap": gap, "length_change_pct": change, "verdict": verdict})
    return pd.DataFrame(rows)


def names(items: Sequence[str]) -> str:
    """"a, b and c" (or "none"): names joined for generated conclusions."""
    items = list(items)
    if not items:
        return "none"
    return ", ".join(items[:-1]) + (" and " if len(items) > 1 else "") + items[-1]


def merge_methods_conclusion(v: pd.DataFrame, acc_tol: float = ACC_TOL, min_shortening: float = MIN_SHORTENING,
                             world: str = "organism") -> str:
    """Markdown: does long-to-short merging (same accuracy, much shorter) hold here, and for which methods."""
    ok = v[v.verdict == "L2S"]
    best = v.sort_values("accuracy_gap", ascending=False).iloc[0]
    shortest_ok = ok.sort_values("length_change_pct").iloc[0] if len(ok) else None
    head = (f"**Verdict ({world} world): the paper's claim holds for {len(ok)} of {len(v)} merge methods** "
            if len(ok) else f"**Verdict ({world} world): the paper's claim does not hold for any of the {len(v)} "
            f"merge methods** ")
    text = head + (f"(criterion: mean accuracy within {acc_tol:g} points of System 2 and responses at least "
                   f"{min_shortening:g}% shorter). ")
    if len(ok):
        text += (f"Methods that meet it: {names(ok.model)}; the shortest of them is {shortest_ok.model} "
                 f"({shortest_ok.length_change_pct:+.1f}% length, {shortest_ok.accuracy_gap:+.1f} points). ")
    text += (f"The most accurate merge is {best.model} ({best.accuracy_gap:+.1f} points vs System 2, "
             f"{best.length_change_pct:+.1f}% length). ")
    for verdict in ("shorter, less accurate", "accurate, not much shorter", "neither"):
        group = v[v.verdict == verdict].model
        if len(group):
            text += f"{verdict.capitalize()}: {names(group)}. "
    return text.strip()


def monotonic_trend(values: Sequence[float], increasing: bool = True) -> float:
    """Fraction of consecutive steps that move in the stated direction (1.0 = monotone)."""
    d = np.diff(np.asarray(values, dtype=float))
    if len(d) == 0:
        return float("nan")
    return float(np.mean(d > 0 if increasing else d < 0))
