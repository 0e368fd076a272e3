"""Adaptive length (Figure 2a): does response length follow problem difficulty?

The paper (Section 5, Figure 2a) reports that the merged models, like System 2, write longer answers for
harder MATH500 levels: they adapt their length to the problem instead of shortening every answer alike.
Here that is measured per model in two ways:

- **by level** on a benchmark with difficulty levels (``org_levels`` for the organisms, ``math500`` for real
  models): mean length per level, Spearman's rho between per-sample length and level, and whether the
  per-level means rise at every step;
- **by benchmark**, as the paper's dataset-level ordering: Table 1's mean length per benchmark against the
  benchmark's difficulty rank. Difficulty is computed, not typed: benchmarks are ranked by the mean accuracy
  of all models in the table (easiest first), which for Table 1 gives GSM8K < MATH500 < OlympiadBench <
  College Math < Minerva Math < AIME24. Our organism benchmarks are ranked by the mean level of their problems
  (the organisms' difficulty is the number of operations); benchmarks without levels by mean accuracy as above.

Everything here reshapes tidy tables (``tables``'s summaries, ``eval`` records, ``paper``'s tables) and draws
them; the conclusion sentence is generated from the numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd

from l2s_lib import show
from l2s_lib.report import claims, paper, plots
from l2s_lib.report import tables as report_tables
from l2s_lib.studies import comparison, folder
from l2s_lib.report.figures import ROLE_COLORS, set_style


#: Colours for merges (System 1 / System 2 / DPO keep the house role colours): a qualitative palette without
#: the role colours' blue, red and purple, so a merge never looks like a reference model.
_MERGE_PALETTE = ("#55A868", "#DD8452", "#937860", "#DA8BC3", "#8C8C8C", "#CCB974", "#64B5CD", "#2F4F4F",
                  "#B8860B", "#006400", "#8B4513", "#708090")


def model_colors(roles: Mapping[str, str]) -> dict[str, str]:
    """One colour per model: role colours for System 1 / System 2 / DPO, a fixed palette for merges in order."""
    out, k = {}, 0
    for label, role in roles.items():
        if role == "merge":
            out[label] = _MERGE_PALETTE[k % len(_MERGE_PALETTE)]
            k += 1
        else:
            out[label] = ROLE_COLORS.get(role, ROLE_COLORS["paper"])
    return out


def level_lengths(summary: pd.DataFrame, benchmark: str, models: Sequence[str] | None = None) -> pd.DataFrame:
    """Per model and difficulty level of ``benchmark``: n, mean length, accuracy and reflective share.

    Columns ``model, level, n, mean_tokens, accuracy, reflective_pct`` (``level`` as int), models in the order
    given (default: summary order). ``ValueError`` when the benchmark is missing or has no levels.
    """
    part = summary[summary["benchmark"] == benchmark]
    if part.empty:
        raise ValueError(f"benchmark '{benchmark}' is not in the summary (have: {sorted(set(summary['benchmark']))})")
    part = part[part["level"].astype(str) != "all"].copy()
    if part.empty:
        raise ValueError(f"benchmark '{benchmark}' has no difficulty levels; use one that has (org_levels, math500)")
    part["level"] = part["level"].astype(float).astype(int)
    order = list(models) if models is not None else list(dict.fromkeys(part["model"]))
    part = part[part["model"].isin(order)]
    part["model"] = pd.Categorical(part["model"], categories=order, ordered=True)
    part = part.sort_values(["model", "level"])
    part["model"] = part["model"].astype(str)
    return part[["model", "level", "n", "mean_tokens", "accuracy", "reflective_pct"]].reset_index(drop=True)


def level_correlations(records: pd.DataFrame, benchmark: str, models: Sequence[str] | None = None,
                       length: str = "n_tokens") -> pd.DataFrame:
    """Per model: how strongly response length follows the difficulty level of ``benchmark``.

    Columns: ``rho`` (Spearman's rho between per-sample ``length`` and level, ties ranked by their average),
    ``rho_of_means`` (the same over the per-level means), ``rising_steps`` (fraction of consecutive levels whose
    mean length is higher than the previous one: 1.0 = monotone), ``first_level_tokens`` / ``last_level_tokens``
    (mean length at the easiest and hardest level) and ``growth`` (their ratio).
    """
    part = records[(records["benchmark"] == benchmark) & records["level"].notna()]
    if part.empty:
        raise ValueError(f"no records with levels for benchmark '{benchmark}'")
    rows = []
    for model in models if models is not None else list(dict.fromkeys(part["model"])):
        m = part[part["model"] == model]
        if m.empty:
            raise ValueError(f"model '{model}' has no records on '{benchmark}'")
        lv = m["level"].astype(float)
        means = m.assign(level=lv).groupby("level")[length].mean().sort_index()
        rows.append({
            "model": model,
            "n": len(m),
            "rho": plots.rank_correlation(lv, m[length]),
            "rho_of_means": plots.rank_correlation(means.index, means.values),
            "rising_steps": claims.monotonic_trend(means.values, increasing=True),
            "first_level_tokens": float(means.iloc[0]),
            "last_level_tokens": float(means.iloc[-1]),
            "growth": float(means.iloc[-1] / means.iloc[0]) if means.iloc[0] > 0 else float("nan"),
        })
    return pd.DataFrame(rows)


def shortening_by_level(levels: pd.DataFrame, system2: str) -> pd.DataFrame:
    """Model x level table of the length change against System 2 at the same level (percent).

    ``levels``: ``level_lengths`` output. Negative = shorter than System 2; System 2's own row is 0.
    """
    table = levels.pivot(index="model", columns="level", values="mean_tokens")
    if system2 not in table.index:
        raise ValueError(f"System 2 model '{system2}' is not in the table (models: {list(table.index)})")
    out = (table / table.loc[system2] - 1) * 100
    return out.loc[list(dict.fromkeys(levels["model"]))]


def difficulty_order(table: pd.DataFrame, benchmark: str = "benchmark", accuracy: str = "accuracy") -> list[str]:
    """Benchmarks from easiest to hardest: sorted by the mean accuracy over every model in ``table``."""
    means = table.groupby(benchmark)[accuracy].mean()
    return list(means.sort_values(ascending=False, kind="stable").index)


def mean_level_order(summary: pd.DataFrame) -> list[str] | None:
    """Benchmarks from easiest to hardest by the mean difficulty level of their problems (sample-weighted), when
    every benchmark of ``summary`` has levels (the organisms: level = number of operations); else None."""
    rows = summary[summary["level"].astype(str) != "all"]
    benches = list(dict.fromkeys(summary["benchmark"]))
    if rows.empty or set(rows["benchmark"]) != set(benches):
        return None
    first = rows[rows["model"] == rows["model"].iloc[0]]
    lv = first["level"].astype(float)
    mean = (lv * first["n"]).groupby(first["benchmark"]).sum() / first["n"].groupby(first["benchmark"]).sum()
    return list(mean.sort_values(kind="stable").index)


def order_of(lengths: pd.DataFrame) -> list[str]:
    """The benchmarks of a ``benchmark_lengths`` table from easiest to hardest."""
    return lengths.drop_duplicates("benchmark").sort_values("difficulty_rank")["benchmark"].tolist()


def benchmark_lengths(table: pd.DataFrame, models: Sequence[str] | None = None, model: str = "model",
                      length: str = "mean_tokens", order: Sequence[str] | None = None) -> pd.DataFrame:
    """Per model and benchmark: mean length and the benchmark's difficulty rank (1 = easiest).

    The ranks follow ``order`` when given (e.g. ``mean_level_order``), else ``difficulty_order`` (mean accuracy).

    ``table``: the ``level == "all"`` rows of a summary, or any table with model, benchmark, accuracy and
    length columns (the paper's Table 1 with ``model="method", length="mean_length"``). Columns ``model,
    benchmark, difficulty_rank, accuracy, mean_tokens``.
    """
    order = list(order) if order is not None else difficulty_order(table)
    if set(order) != set(table["benchmark"]):
        raise ValueError(f"order {list(order)} does not list the table's benchmarks {sorted(set(table['benchmark']))}")
    rank = {b: i + 1 for i, b in enumerate(order)}
    keep = list(models) if models is not None else list(dict.fromkeys(table[model]))
    missing = sorted(set(keep) - set(table[model]))
    if missing:
        raise ValueError(f"models not in the table: {missing}")
    out = table[table[model].isin(keep)].rename(columns={model: "model", length: "mean_tokens"})
    out = out.assign(difficulty_rank=out["benchmark"].map(rank))
    out["model"] = pd.Categorical(out["model"], categories=keep, ordered=True)
    out = out.sort_values(["model", "difficulty_rank"])
    out["model"] = out["model"].astype(str)
    return out[["model", "benchmark", "difficulty_rank", "accuracy", "mean_tokens"]].reset_index(drop=True)


#: ``catalog.SCALES`` keys -> the paper's scale labels (``paper.SCALE_TABLES``).
PAPER_SCALES = {"1p5b": "1.5B", "7b": "7B", "14b": "14B", "32b": "32B"}


def paper_benchmark_lengths(scale: str = "7B", methods: Sequence[str] | None = None) -> pd.DataFrame:
    """The paper's mean length per benchmark at ``scale`` (``7B`` or ``7b``: Table 1) with difficulty ranks and
    ``role``. At 1.5B, 14B and 32B the paper reports three benchmarks (GSM8K, MATH500, AIME24).

    ``methods``: the paper's row labels to keep (System 1, System 2 and DPO rows are always kept); labels the
    paper does not have (SLERP, Iso-C) are ignored.
    """
    t = paper.per_benchmark(PAPER_SCALES.get(scale, scale))
    refs = [m for m in dict.fromkeys(t["method"]) if paper.role_of(m) != "merge"]
    merges = [m for m in (methods or []) if m in set(t["method"])] if methods is not None else \
        [m for m in dict.fromkeys(t["method"]) if paper.role_of(m) == "merge"]
    out = benchmark_lengths(t, refs + merges, model="method", length="mean_length")
    out["role"] = out["model"].map(paper.role_of)
    return out


def benchmark_correlations(lengths: pd.DataFrame) -> pd.DataFrame:
    """Per model of a ``benchmark_lengths`` table: Spearman's rho of mean length with difficulty rank, and the
    fraction of consecutive (easier -> harder) benchmarks whose mean length rises."""
    rows = []
    for model, part in lengths.groupby("model", sort=False):
        part = part.sort_values("difficulty_rank")
        rows.append({"model": model, "n_benchmarks": len(part),
                     "rho": plots.rank_correlation(part["difficulty_rank"], part["mean_tokens"]),
                     "rising_steps": claims.monotonic_trend(part["mean_tokens"].to_numpy(), increasing=True)})
    return pd.DataFrame(rows)


def fig_adaptive_length(levels: pd.DataFrame, ours_benchmarks: pd.DataFrame, paper_benchmarks: pd.DataFrame,
                        roles: Mapping[str, str], level_benchmark: str, paper_title: str = "Paper: 7B (Table 1)",
                        ours_title: str = "This run") -> plt.Figure:
    """Figure 2a: mean length by benchmark (paper, ours; benchmarks ordered easiest -> hardest) and by level (ours).

    Log length axis, so that equal vertical steps are equal relative growth in every panel.
    """
    set_style()
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    paper_roles = dict(zip(paper_benchmarks["model"], paper_benchmarks["role"]))
    panels = (
        (axes[0], paper_benchmarks, paper_roles, f"{paper_title}: by benchmark"),
        (axes[1], ours_benchmarks, roles, f"{ours_title}: by benchmark"),
    )
    for ax, table, rl, title in panels:
        order = order_of(table)
        plots.fig_lines(table, "difficulty_rank", "mean_tokens", "model", ax=ax, colors=model_colors(rl),
                        xlabel="benchmark (easiest -> hardest)", ylabel="mean length (tokens)",
                        title=title)
        ax.set_xticks(range(1, len(order) + 1), order, rotation=30, ha="right", fontsize=7)
        _log_lengths(ax)
    plots.fig_lines(levels, "level", "mean_tokens", "model", ax=axes[2], colors=model_colors(roles),
                    xlabel=f"difficulty level ({level_benchmark})", ylabel="mean length (tokens)",
                    title=f"{ours_title}: by level")
    axes[2].set_xticks(sorted(levels["level"].unique()))
    _log_lengths(axes[2])
    return fig


def _log_lengths(ax: plt.Axes) -> None:
    """Log length axis with plain numbers (``40``, ``100``), not powers of ten."""
    from matplotlib.ticker import LogLocator, ScalarFormatter

    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(plt.NullFormatter())


def _rho_list(table: pd.DataFrame, models: Sequence[str]) -> str:
    t = table.set_index("model")
    return ", ".join(f"{m} {t.loc[m, 'rho']:.2f}" for m in models if m in t.index)


def conclusion(level_corr: pd.DataFrame, shortening: pd.DataFrame, paper_corr: pd.DataFrame, system1: str,
               system2: str, merges: Sequence[str], world: str = "organism", min_rho: float = claims.MIN_RHO,
               ours_corr: pd.DataFrame | None = None) -> str:
    """Markdown: does each merge adapt its length to difficulty (rho >= ``min_rho`` and rising at every level)?

    ``level_corr``: ``level_correlations``; ``shortening``: ``shortening_by_level``; ``paper_corr``:
    ``benchmark_correlations`` of the paper's table; ``ours_corr``: the same of ours (optional).
    """
    c = level_corr.set_index("model")
    merges = [m for m in merges if m in c.index]
    if not merges:
        raise ValueError("no merge of the list is in the correlation table")
    n_levels = len(shortening.columns)
    undefined = [m for m in [system1, system2] + merges if m in c.index and pd.isna(c.loc[m, "rho"])]
    if n_levels < claims.MIN_LEVELS or undefined:
        # A quick look (LIMIT) can leave too few levels for a correlation: say so instead of "holds for none".
        why = (f"the run has {n_levels} difficulty level{'s' if n_levels != 1 else ''} (at least {claims.MIN_LEVELS} are "
               "needed)" if n_levels < claims.MIN_LEVELS else
               f"the rank correlation is undefined for {claims.names(undefined)}")
        return (f"**Verdict ({world} world): inconclusive**: the adaptive-length claim cannot be judged from this run: "
                f"{why}. Run more problems per benchmark (LIMIT = 0 evaluates them all).")
    adapts = [m for m in merges if c.loc[m, "rho"] >= min_rho and c.loc[m, "rising_steps"] == 1.0]
    head = (f"**Verdict ({world} world): the paper's adaptive-length claim holds for {len(adapts)} of {len(merges)} "
            f"merges**" if adapts else
            f"**Verdict ({world} world): the paper's adaptive-length claim holds for none of the {len(merges)} merges**")
    text = head + (f" (criterion: Spearman's rho between response length and level at least {min_rho:g}, and mean "
                   f"length rising at every level). ")
    if adapts and len(adapts) < len(merges):
        text += f"Merges that adapt: {claims.names(adapts)}. "
    text += (f"Rank correlation of length with level: System 1 {c.loc[system1, 'rho']:.2f}, System 2 "
             f"{c.loc[system2, 'rho']:.2f}; merges {_rho_list(level_corr, merges)}. ")
    grow = {m: c.loc[m, "growth"] for m in [system1, system2] + merges}
    text += ("From the easiest to the hardest level the mean length grows "
             + ", ".join(f"{g:.1f}x ({m})" for m, g in grow.items()) + ". ")
    levels = list(shortening.columns)
    first, last = levels[0], levels[-1]
    cut_first = shortening.loc[merges, first].mean()
    cut_last = shortening.loc[merges, last].mean()
    text += (f"Against System 2 at the same level, the merges change length by {cut_first:+.1f}% on level {first} "
             f"and {cut_last:+.1f}% on level {last} (mean over merges). ")
    if ours_corr is not None:
        om = ours_corr[ours_corr["model"].isin(merges)]
        text += (f"Across our {int(om['n_benchmarks'].max())} benchmarks ranked by difficulty, the merges' mean length "
                 f"correlates with the rank at rho {om['rho'].min():.2f} to {om['rho'].max():.2f}. ")
    pm = paper_corr[paper_corr["model"].map(paper.role_of) == "merge"]
    if len(pm):
        text += (f"In the paper (Table 1, benchmarks ranked by difficulty), the merges' mean length correlates with "
                 f"difficulty rank at rho {pm['rho'].min():.2f} to {pm['rho'].max():.2f} "
                 f"(System 2: {_rho_list(paper_corr, [m for m in paper_corr['model'] if paper.role_of(m) == 'system2'])}).")
    return text.strip()


def level_table(levels: pd.DataFrame, value: str = "mean_tokens", digits: int = 1) -> pd.DataFrame:
    """Model x level table of one ``level_lengths`` column, rounded (for the checked notebook cell)."""
    out = levels.pivot(index="model", columns="level", values=value)
    return out.loc[list(dict.fromkeys(levels["model"]))].round(digits)


def rounded(df: pd.DataFrame, digits: int = 2) -> pd.DataFrame:
    """``df`` with float columns rounded (NaN kept), for compact checked outputs."""
    return df.apply(lambda s: s.round(digits) if pd.api.types.is_float_dtype(s.dtype) else s)




# ---------------------------------------------------------------------------------------------------------------
# The study: compute writes the result files; tables, figures and verdict read them
# ---------------------------------------------------------------------------------------------------------------

STUDY = "03_adaptive_length"
INPUTS: tuple[str, ...] = ()
FIGURES = ("fig2a_adaptive_length",)


def compute(params: Mapping[str, Any]) -> list[Path]:
    """Evaluate the comparison grid of ``params`` and write ``summary``, ``length_by_level``
    (``level_lengths``), ``length_by_benchmark`` (ours, ``benchmark_lengths``), ``paper_length_by_benchmark``
    (the paper's Table 1 lengths with difficulty ranks), ``level_correlations`` (from the per-sample records),
    ``benchmark_correlations``, ``paper_benchmark_correlations``, ``length_change_by_level`` and ``settings``."""
    p = dict(params)
    out = folder.of(STUDY, p)
    pair, entries, run = comparison.evaluate(p)
    bench = p["LEVEL_BENCHMARK"]
    levels = level_lengths(run.summary, bench, run.labels())
    ours = benchmark_lengths(report_tables.overall(run.summary), run.labels(), order=mean_level_order(run.summary))
    theirs = paper_benchmark_lengths(p["SCALE"], run.labels("merge"))
    tables_ = {
        "summary": run.summary, "length_by_level": levels, "length_by_benchmark": ours,
        "paper_length_by_benchmark": theirs,
        "level_correlations": level_correlations(run.records, bench, run.labels()),
        "benchmark_correlations": benchmark_correlations(ours),
        "paper_benchmark_correlations": benchmark_correlations(theirs),
        "length_change_by_level": shortening_by_level(levels, pair.label2).reset_index(),
    }
    return [folder.write(out, df, name, p) for name, df in tables_.items()] + [
        folder.write_settings(out, p, world=pair.world, system1=pair.label1, system2=pair.label2,
                              level_benchmark=bench, paper_scale=PAPER_SCALES.get(p["SCALE"], p["SCALE"]))]


def _shortening(d: Path) -> pd.DataFrame:
    return shortening_by_level(folder.read(d, "length_by_level"), folder.settings(d)["system2"])


def tables(d: Path) -> dict[str, show.Table]:
    """``length_by_level``: mean length per model and level; ``level_correlations``, ``benchmark_correlations``,
    ``paper_benchmark_correlations``: how length follows difficulty; ``length_change_by_level``: % vs System 2."""
    order = {name: " < ".join(order_of(folder.read(d, name)))
             for name in ("length_by_benchmark", "paper_length_by_benchmark")}
    return {
        "length_by_level": show.Table(level_table(folder.read(d, "length_by_level"))),
        "level_correlations": show.Table(rounded(folder.read(d, "level_correlations")), "by difficulty level",
                                         index=False),
        "benchmark_correlations": show.Table(rounded(folder.read(d, "benchmark_correlations")), index=False,
                                             caption=f"by benchmark, ours (easiest -> hardest: "
                                                     f"{order['length_by_benchmark']})"),
        "paper_benchmark_correlations": show.Table(rounded(folder.read(d, "paper_benchmark_correlations")),
                                                   index=False, caption=f"by benchmark, paper (easiest -> hardest: "
                                                                        f"{order['paper_length_by_benchmark']})"),
        "length_change_by_level": show.Table(_shortening(d).round(1)),
    }


def figures(d: Path) -> folder.Figures:
    """``fig2a_adaptive_length``: the paper's lengths by benchmark beside ours by benchmark and by level."""
    def fig2a():
        s = folder.settings(d)
        return fig_adaptive_length(folder.read(d, "length_by_level"), folder.read(d, "length_by_benchmark"),
                                   folder.read(d, "paper_length_by_benchmark"), folder.roles(folder.read(d, "summary")),
                                   s["level_benchmark"], paper_title=f"Paper {s['paper_scale']}",
                                   ours_title=f"This run ({s['world']})")

    return folder.Figures({"fig2a_adaptive_length": fig2a})


def verdict(d: Path) -> str:
    """Markdown: does each merge adapt its length to difficulty (``conclusion``)?"""
    s = folder.settings(d)
    return conclusion(folder.read(d, "level_correlations"), _shortening(d), folder.read(d, "paper_benchmark_correlations"),
                      s["system1"], s["system2"], folder.labels(folder.read(d, "summary"), "merge"), world=s["world"],
                      ours_corr=folder.read(d, "benchmark_correlations"))
