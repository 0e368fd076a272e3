"""Hyper-parameter and calibration sensitivity (the paper's Section 6).

Sweeps re-target the paper's configs (``catalog.paper_config``) at a pair and vary one knob at a time:
Task Arithmetic's alpha (small alphas are "short-to-long": System 1 with a little of System 2 added), TIES's
trim ratio k (fraction removed; density = 1 - k), DARE's drop rate p (density = 1 - p), and the calibration
data of AIM and Sens (which answers: short, long or both; how many samples). Each entry carries ``family`` and
``value`` in its meta, so one tidy table holds every sweep.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from l2s_lib.report.figures import ROLE_COLORS, set_style
from l2s_lib.pipeline import catalog, grid


def floats(text: str) -> list[float]:
    """``"0.1,0.2"`` -> ``[0.1, 0.2]`` (notebook literals stay strings)."""
    return [float(x) for x in text.split(",") if x.strip()]


def _entry(pair, key, label, family, value, scale, seed, params=None, model_params=None, **eval_kw) -> grid.Entry:
    cfg = catalog.retarget(catalog.paper_config(key, scale), pair, params, model_params)
    cfg["seed"] = seed
    meta = {"family": family, "value": value}
    return grid.Entry(label=label, role="merge", config=cfg, eval=eval_kw, meta=meta)


def alpha_sweep(pair: catalog.Pair, alphas: Sequence[float], scale: str = "7b", seed: int = 0, **eval_kw):
    """Task Arithmetic ``M = S1 + alpha (S2 - S1)`` at every alpha."""
    return [_entry(pair, "task_arithmetic", f"TA a={a:.2f}", "ta_alpha", a, scale, seed,
                   model_params={"weight": a}, **eval_kw) for a in alphas]


def trim_sweep(pair: catalog.Pair, ks: Sequence[float], scale: str = "7b", seed: int = 0, **eval_kw):
    """TIES with the paper's alpha at every trim ratio k (fraction of task-vector entries removed)."""
    return [_entry(pair, "ties", f"TIES k={k:.2f}", "ties_k", k, scale, seed,
                   model_params={"density": round(1 - k, 6)}, **eval_kw) for k in ks]


def drop_sweep(pair: catalog.Pair, ps: Sequence[float], scale: str = "7b", seed: int = 0, **eval_kw):
    """DARE (the paper's averaging form, weight 0.5) at every drop rate p."""
    return [_entry(pair, "dare", f"DARE p={p:.2f}", "dare_p", p, scale, seed,
                   model_params={"density": round(1 - p, 6)}, **eval_kw) for p in ps]


def calibration_sweep(pair: catalog.Pair, sides: Sequence[str], ns: Sequence[int], scale: str = "7b",
                      seed: int = 0, **eval_kw):
    """AIM-Ties and Sens with each calibration side at the largest n, and each smaller n with the paper's side.

    Two one-knob sweeps rather than the full grid: the paper varies the side (short / long / both answers) and the
    sample count (10 / 20 / 100) separately, and every (side, n) costs its own calibration pass.
    """
    top = max(ns)
    paper_side = {"aim_ties": str(catalog.paper_config("aim_ties", scale)["parameters"].get("calibration_side", "short")),
                  "sens": "short"}  # Sens: System 2 on short answers, System 1 on long ones (paper, section 4.4)
    cells = [(side, top) for side in sides] + [(None, n) for n in sorted(ns) if n != top]
    out = []
    for side, n in cells:
        a_side, s_side = side or paper_side["aim_ties"], side or paper_side["sens"]
        out.append(_entry(pair, "aim_ties", f"AIM {a_side} n={n}", f"aim_{a_side}", n, scale, seed,
                          params={"calibration_side": a_side, "calibration_n": n}, **eval_kw))
        out.append(_entry(pair, "sens", f"Sens {s_side} n={n}", f"sens_{s_side}", n, scale, seed,
                          params={"calibration_n": n}, model_params={"calibration_side": s_side}, **eval_kw))
    return out


def sweep_table(avg: pd.DataFrame, entries: Sequence[grid.Entry]) -> pd.DataFrame:
    """``tables.average_table`` rows of the sweep entries with their ``family`` and ``value``."""
    meta = pd.DataFrame([{"model": e.label, "family": e.meta["family"], "value": e.meta["value"]} for e in entries])
    return meta.merge(avg, on="model", how="left")


def fig_alpha(sweep: pd.DataFrame, s1: pd.Series, s2: pd.Series) -> plt.Figure:
    """Accuracy and length change against alpha, and the accuracy-length frontier, with System 1 / 2 marked."""
    set_style()
    ta = sweep[sweep.family == "ta_alpha"].sort_values("value")
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    axes[0].plot(ta["value"], ta["avg_accuracy"], marker="o", color=ROLE_COLORS["merge"])
    axes[0].axhline(s2["avg_accuracy"], ls="--", color=ROLE_COLORS["system2"], label="System 2")
    axes[0].axhline(s1["avg_accuracy"], ls="--", color=ROLE_COLORS["system1"], label="System 1")
    axes[0].set(xlabel="alpha (TA weight of System 2)", ylabel="mean accuracy (%)", title="Accuracy vs alpha")
    axes[0].legend(fontsize=7)
    axes[1].plot(ta["value"], ta["length_change_vs_system2_pct"], marker="o", color=ROLE_COLORS["merge"])
    axes[1].axhline(0, ls="--", color=ROLE_COLORS["system2"])
    axes[1].axhline(s1["length_change_vs_system2_pct"], ls="--", color=ROLE_COLORS["system1"])
    axes[1].set(xlabel="alpha", ylabel="length change vs System 2 (%)", title="Length vs alpha")
    axes[2].plot(ta["length_change_vs_system2_pct"], ta["avg_accuracy"], marker="o", color=ROLE_COLORS["merge"])
    for rec in ta.itertuples():
        axes[2].annotate(f"{rec.value:.2f}", (rec.length_change_vs_system2_pct, rec.avg_accuracy), fontsize=6,
                         xytext=(3, 2), textcoords="offset points")
    axes[2].scatter([0, s1["length_change_vs_system2_pct"]], [s2["avg_accuracy"], s1["avg_accuracy"]],
                    color=[ROLE_COLORS["system2"], ROLE_COLORS["system1"]], marker="D", zorder=3)
    axes[2].set(xlabel="length change vs System 2 (%)", ylabel="mean accuracy (%)",
                title="Accuracy-length frontier (labels: alpha)")
    return fig


def fig_trim_drop(sweep: pd.DataFrame, s2: pd.Series) -> plt.Figure:
    """Accuracy and length change against TIES's k and DARE's p."""
    set_style()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, family, xlabel in ((axes[0], "ties_k", "TIES trim ratio k (fraction removed)"),
                               (axes[1], "dare_p", "DARE drop rate p")):
        part = sweep[sweep.family == family].sort_values("value")
        ax.plot(part["value"], part["avg_accuracy"], marker="o", label="accuracy (%)", color=ROLE_COLORS["merge"])
        ax.axhline(s2["avg_accuracy"], ls="--", color=ROLE_COLORS["system2"], label="System 2 accuracy")
        twin = ax.twinx()
        twin.plot(part["value"], part["length_change_vs_system2_pct"], marker="s", ls=":", color="#937860",
                  label="length change (%)")
        twin.set_ylabel("length change vs System 2 (%)")
        twin.grid(False)
        ax.set(xlabel=xlabel, ylabel="mean accuracy (%)")
        ax.legend(loc="lower left", fontsize=7)
    return fig


def fig_calibration(sweep: pd.DataFrame) -> plt.Figure:
    """AIM and Sens: accuracy and length change by calibration side and sample count."""
    set_style()
    part = sweep[sweep.family.str.startswith(("aim_", "sens_"))].copy()
    part["method"] = np.where(part.family.str.startswith("aim"), "AIM-Ties", "Sens")
    part["side"] = part.family.str.split("_").str[1]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, col, ylabel in ((axes[0], "avg_accuracy", "mean accuracy (%)"),
                            (axes[1], "length_change_vs_system2_pct", "length change vs System 2 (%)")):
        for (method, side), g in part.groupby(["method", "side"], sort=False):
            g = g.sort_values("value")
            ax.plot(g["value"], g[col], marker="o" if method == "AIM-Ties" else "s",
                    ls="-" if method == "AIM-Ties" else "--", label=f"{method}, {side}")
        ax.set(xlabel="calibration samples", ylabel=ylabel)
        ax.set_xscale("log")
    axes[0].legend(fontsize=7)
    return fig


def sensitivity_conclusion(sweep: pd.DataFrame, s2_acc: float, acc_tol: float = 5.0,
                           min_shortening: float = 30.0) -> str:
    """Markdown: the useful alpha window (accuracy within ``acc_tol`` of System 2 and at least
    ``min_shortening``% shorter), whether accuracy is monotone in alpha, and the best trim and drop settings."""
    ta = sweep[sweep.family == "ta_alpha"].sort_values("value")
    ok = ta[(ta.avg_accuracy >= s2_acc - acc_tol) & (ta.length_change_vs_system2_pct <= -min_shortening)]
    window = (f"alpha in {{{', '.join(f'{v:.2f}' for v in ok.value)}}}" if len(ok) else "no alpha")
    diffs = np.diff(ta.avg_accuracy.to_numpy())
    monotone = bool(np.all(diffs >= -1.0))  # within one point of noise
    text = (f"**Useful TA window: {window}** (accuracy within {acc_tol:g} points of System 2 and at least "
            f"{min_shortening:g}% shorter). Accuracy is {'monotone' if monotone else 'not monotone'} in alpha "
            f"(largest drop between neighbours: {min(diffs.min(), 0):.1f} points). ")
    small = ta[ta.value < 0.5]
    if len(small):
        text += (f"Short-to-long (alpha < 0.5): mean accuracy {small.avg_accuracy.min():.1f}-"
                 f"{small.avg_accuracy.max():.1f}%, length change {small.length_change_vs_system2_pct.min():+.0f}% to "
                 f"{small.length_change_vs_system2_pct.max():+.0f}% vs System 2. ")
    for family, name in (("ties_k", "TIES k"), ("dare_p", "DARE p")):
        part = sweep[sweep.family == family]
        if len(part):
            best = part.sort_values("avg_accuracy", ascending=False).iloc[0]
            text += (f"Best {name} = {best.value:.2f} ({best.avg_accuracy:.1f}%, "
                     f"{best.length_change_vs_system2_pct:+.1f}% length). ")
    return text.strip()
