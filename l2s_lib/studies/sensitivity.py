"""Hyper-parameter and calibration sensitivity (the paper's Section 6).

Sweeps re-target the paper's configs (``catalog.paper_config``) at a pair and vary one knob at a time:
Task Arithmetic's alpha (small alphas are "short-to-long": System 1 with a little of System 2 added), TIES's
trim ratio k (fraction removed; density = 1 - k), DARE's drop rate p (density = 1 - p), and the calibration
data of AIM and Sens (which answers: short, long or both; how many samples). Each entry carries ``family`` and
``value`` in its meta, so one tidy table holds every sweep.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from l2s_lib.report.figures import ROLE_COLORS, set_style
from l2s_lib import show
from l2s_lib.pipeline import catalog, executors, grid
from l2s_lib.report import claims
from l2s_lib.report import tables as report_tables
from l2s_lib.studies import folder


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


def sensitivity_conclusion(sweep: pd.DataFrame, s2_acc: float, acc_tol: float = claims.ACC_TOL,
                           min_shortening: float = claims.MIN_SHORTENING) -> str:
    """Markdown: the useful alpha window (accuracy within ``acc_tol`` of System 2 and at least
    ``min_shortening``% shorter), whether accuracy is monotone in alpha, and the best trim and drop settings."""
    ta = sweep[sweep.family == "ta_alpha"].sort_values("value")
    ok = ta[(ta.avg_accuracy >= s2_acc - acc_tol) & (ta.length_change_vs_system2_pct <= -min_shortening)]
    window = (f"alpha in {{{', '.join(f'{v:.2f}' for v in ok.value)}}}" if len(ok) else "no alpha")
    diffs = np.diff(ta.avg_accuracy.to_numpy())
    monotone = bool(np.all(diffs >= -claims.MONOTONE_SLACK))
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


# ---------------------------------------------------------------------------------------------------------------
# The study: compute writes the result files; tables, figures and verdict read them
# ---------------------------------------------------------------------------------------------------------------

STUDY = "05_sensitivity"
INPUTS: tuple[str, ...] = ()
FIGURES = ("fig5a_alpha_sweep", "fig5b_trim_drop", "fig5c_calibration")
#: The columns of the sweep tables a notebook shows.
SHOWN = ["value", "avg_accuracy", "length_change_vs_system2_pct", "reflective_pct"]


def compute(params: Mapping[str, Any]) -> list[Path]:
    """Evaluate System 1, System 2 and every sweep of ``params``; write ``summary``, ``average`` (every model's
    Avg. columns), ``sweep`` (``sweep_table``: each sweep entry with its ``family`` and ``value``) and
    ``settings``."""
    p = dict(params)
    out = folder.of(STUDY, p)
    pair = catalog.resolve_pair(p["SIZE"], p["SYSTEM1"], p["SYSTEM2"], "", p["CALIBRATION"])
    dec = catalog.decoding(p["PROMPT"], p["MAX_NEW_TOKENS"])
    scale, seed = p["SCALE"], p["SEED"]
    sweeps = (alpha_sweep(pair, p["ALPHAS"], scale, seed, **dec) + trim_sweep(pair, p["TIES_KS"], scale, seed, **dec)
              + drop_sweep(pair, p["DARE_PS"], scale, seed, **dec)
              + calibration_sweep(pair, p["CALIBRATION_SIDES"], p["CALIBRATION_NS"], scale, seed, **dec))
    entries = catalog.pair_entries(pair, catalog.decoding(p["S1_PROMPT"], p["S1_MAX_NEW_TOKENS"]), dec)[:2] + sweeps
    run = grid.evaluate(entries, p["BENCHMARKS"], device=p["DEVICE"], backend=p["BACKEND"],
                        batch_size=p["BATCH_SIZE"], limit=p["LIMIT"] or None,
                        **executors.from_params(p))
    avg = report_tables.average_table(run.summary, system2=pair.label2, models=run.labels())
    return [folder.write(out, run.summary, "summary", p), folder.write(out, avg, "average", p),
            folder.write(out, sweep_table(avg, sweeps), "sweep", p),
            folder.write_settings(out, p, world=pair.world, system1=pair.label1, system2=pair.label2)]


def _references(d: Path) -> tuple[pd.DataFrame, dict]:
    return folder.read(d, "average").set_index("model"), folder.settings(d)


def tables(d: Path) -> dict[str, show.Table]:
    """``references``: System 1's and System 2's Avg. columns; ``alpha``, ``trim_drop``, ``calibration``: the
    sweeps (value of the knob, mean accuracy, length change vs System 2, reflective share)."""
    avg, s = _references(d)
    sweep = folder.read(d, "sweep")
    return {
        "references": show.Table(avg.loc[[s["system1"], s["system2"]], SHOWN[1:]].round(1)),
        "alpha": show.Table(sweep[sweep.family == "ta_alpha"][SHOWN].round(2), index=False),
        "trim_drop": show.Table(sweep[sweep.family.isin(["ties_k", "dare_p"])][["family"] + SHOWN].round(2),
                                index=False),
        "calibration": show.Table(sweep[sweep.family.str.startswith(("aim_", "sens_"))][["family"] + SHOWN].round(2),
                                  index=False),
    }


def figures(d: Path) -> folder.Figures:
    """``fig5a_alpha_sweep``, ``fig5b_trim_drop``, ``fig5c_calibration`` from the ``sweep`` and ``average`` files."""
    def fig5a():
        avg, s = _references(d)
        return fig_alpha(folder.read(d, "sweep"), avg.loc[s["system1"]], avg.loc[s["system2"]])

    def fig5b():
        avg, s = _references(d)
        return fig_trim_drop(folder.read(d, "sweep"), avg.loc[s["system2"]])

    return folder.Figures({"fig5a_alpha_sweep": fig5a, "fig5b_trim_drop": fig5b,
                           "fig5c_calibration": lambda: fig_calibration(folder.read(d, "sweep"))})


def verdict(d: Path) -> str:
    """Markdown: the useful alpha window and the best trim and drop settings (``sensitivity_conclusion``)."""
    avg, s = _references(d)
    return sensitivity_conclusion(folder.read(d, "sweep"), avg.loc[s["system2"], "avg_accuracy"])
