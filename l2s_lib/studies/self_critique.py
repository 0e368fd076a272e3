"""Self-critique (Table 6, Figure 2b): do the merged models still reflect, and does reflecting repair errors?

Two measurements:

- **Reflection** (the paper's): the share of reflective responses (at least one reflection keyword) per
  benchmark and per difficulty level, and the mean keyword count per reflective response, each under both
  keyword lists of ``l2s_lib.metrics`` (``"paper"``: the footnote as whole words; ``"paper-code"``: the
  substring list of the paper's code). Table 6 gives the paper's 7B shares beside ours.
- **Self-correction probe** (beyond the paper, organisms only): each problem's prompt is prefilled with a
  System 2 style first pass that carries one planted arithmetic error and ends ``So the answer is W.`` (the
  organisms' ``writers.forced_error_prefix``). The model continues greedily; it *notices* the error when its
  continuation contains a reflection keyword, *repairs* it when its final ``\\boxed{}`` answer is the right
  one, and *keeps* it when the final answer is the planted ``W``. Real models have no such fixed solution
  format to plant an error into, so the probe is skipped for them with a stated reason.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from l2s_lib import metrics, paths, show
from l2s_lib.files import atomic_write_text
from l2s_lib.report import claims, paper, plots
from l2s_lib.report.figures import set_style
from l2s_lib.pipeline import grid
from l2s_lib.studies import comparison, folder
from l2s_lib.studies.adaptive_length import model_colors

#: Columns of the probe's per-problem rows.
PROBE_COLUMNS = ["model", "idx", "level", "question", "answer", "planted", "final", "noticed", "repaired",
                 "kept_error", "n_tokens", "continuation"]


# ---------------------------------------------------------------------------------------------------------------
# Reflection ratio and keyword frequency
# ---------------------------------------------------------------------------------------------------------------


def reflection_table(records: pd.DataFrame, keyword_lists: Sequence[str] = metrics.KEYWORD_LISTS) -> pd.DataFrame:
    """Reflection per model, benchmark and level (plus ``level == "all"``), for each keyword list.

    ``records``: per-sample evaluation records with ``model, benchmark, level, response``. Columns ``model,
    benchmark, level, keywords, n, n_reflective, reflective_pct, keyword_freq`` (``keyword_freq``: mean keyword
    count per reflective response, 0 when none is reflective, as in ``metrics.keyword_freq``).
    """
    need = {"model", "benchmark", "level", "response"}
    if not need <= set(records.columns):
        raise ValueError(f"records need columns {sorted(need)}; missing {sorted(need - set(records.columns))}")
    df = records[["model", "benchmark", "level", "response"]].copy()
    df["level"] = df["level"].map(lambda v: "all" if v is None or pd.isna(v) else str(int(float(v))))
    rows = []
    for kw in keyword_lists:
        counts = df["response"].map(lambda t, kw=kw: metrics.count_keywords(t, kw))
        part = df.assign(count=counts, reflective=counts > 0)
        for (model, bench), g in part.groupby(["model", "benchmark"], sort=False):
            groups = [(lv, gl) for lv, gl in g.groupby("level", sort=False) if lv != "all"]
            groups = sorted(groups, key=lambda x: int(x[0])) + [("all", g)]
            for lv, gl in groups:
                refl = gl[gl["reflective"]]
                rows.append({"model": model, "benchmark": bench, "level": lv, "keywords": kw, "n": len(gl),
                             "n_reflective": int(len(refl)), "reflective_pct": 100.0 * len(refl) / len(gl),
                             "keyword_freq": float(refl["count"].mean()) if len(refl) else 0.0})
    return pd.DataFrame(rows)


def by_benchmark(reflection: pd.DataFrame, value: str = "reflective_pct", keywords: str = "paper",
                 models: Sequence[str] | None = None, benchmarks: Sequence[str] | None = None) -> pd.DataFrame:
    """Model x benchmark table of one ``reflection_table`` column (``level == "all"``, one keyword list)."""
    part = reflection[(reflection["level"] == "all") & (reflection["keywords"] == keywords)]
    table = part.pivot(index="model", columns="benchmark", values=value)
    table = table[list(benchmarks or dict.fromkeys(part["benchmark"]))]
    return table.loc[list(models or dict.fromkeys(part["model"]))]


def by_level(reflection: pd.DataFrame, benchmark: str, value: str = "reflective_pct", keywords: str = "paper",
             models: Sequence[str] | None = None) -> pd.DataFrame:
    """Model x level table of one ``reflection_table`` column on ``benchmark`` (levels in numeric order)."""
    part = reflection[(reflection["benchmark"] == benchmark) & (reflection["keywords"] == keywords)
                      & (reflection["level"] != "all")]
    if part.empty:
        raise ValueError(f"benchmark '{benchmark}' has no levels in the reflection table")
    table = part.pivot(index="model", columns="level", values=value)
    table = table[sorted(table.columns, key=int)]
    table.columns = [int(c) for c in table.columns]
    return table.loc[list(models or dict.fromkeys(part["model"]))]


def keyword_lists_side_by_side(reflection: pd.DataFrame, models: Sequence[str] | None = None,
                               digits: int = 1) -> pd.DataFrame:
    """Per model, overall (all benchmarks pooled by sample count): reflective share and keyword frequency
    under each keyword list, side by side."""
    part = reflection[reflection["level"] == "all"].copy()
    part["kw_total"] = part["keyword_freq"] * part["n_reflective"]
    g = part.groupby(["model", "keywords"], sort=False)[["n", "n_reflective", "kw_total"]].sum()
    g["reflective_pct"] = 100 * g["n_reflective"] / g["n"]
    g["keyword_freq"] = (g["kw_total"] / g["n_reflective"]).where(g["n_reflective"] > 0, 0.0)
    wide = g[["reflective_pct", "keyword_freq"]].unstack("keywords")
    wide.columns = [f"{v} [{k}]" for v, k in wide.columns]
    return wide.loc[list(models or dict.fromkeys(part["model"]))].round(digits)


def paper_table6() -> pd.DataFrame:
    """The paper's Table 6 (7B): method x benchmark reflective share (%), in the paper's row and column order."""
    t = paper.read_table("table6_reflection_7b")
    table = t.pivot(index="method", columns="benchmark", values="reflective_pct")
    return table.loc[list(dict.fromkeys(t["method"])), list(dict.fromkeys(t["benchmark"]))]


def fig_table6(ours: pd.DataFrame, paper6: pd.DataFrame, ours_title: str = "This run") -> plt.Figure:
    """Table 6 as two heatmaps: the paper's 7B reflective shares beside ours (model x benchmark, %)."""
    set_style()
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2), width_ratios=[1.4, 1])
    plots.heatmap(axes[0], paper6, "Paper: reflective responses (%), 7B (Table 6)", fmt=".1f", cmap="magma")
    plots.heatmap(axes[1], ours, f"{ours_title}: reflective responses (%)", fmt=".1f", cmap="magma")
    for ax in axes:
        ax.set_xlabel("")
        ax.set_ylabel("")
        ax.tick_params(axis="x", labelrotation=30, labelsize=7)
        ax.tick_params(axis="y", labelsize=7)
    return fig


def fig_reflection_by_level(reflection: pd.DataFrame, benchmark: str, roles: Mapping[str, str],
                            ours_title: str = "This run") -> plt.Figure:
    """Figure 2b: reflective share and keyword frequency per level of ``benchmark`` (paper keyword list solid,
    paper-code list dashed)."""
    set_style()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    colors = model_colors(roles)
    part = reflection[(reflection["benchmark"] == benchmark) & (reflection["level"] != "all")].copy()
    part["level"] = part["level"].astype(int)
    # Keyword frequency is undefined without reflective responses: leave a gap rather than draw a 0.
    part["keyword_freq"] = part["keyword_freq"].where(part["n_reflective"] > 0)
    for ax, value, label in ((axes[0], "reflective_pct", "reflective responses (%)"),
                             (axes[1], "keyword_freq", "keywords per reflective response")):
        for kw, style in (("paper", "-"), ("paper-code", "--")):
            sub = part[part["keywords"] == kw]
            for model in roles:
                m = sub[sub["model"] == model].sort_values("level")
                if len(m):
                    ax.plot(m["level"], m[value], style, marker="o", ms=3.5, color=colors[model],
                            label=model if kw == "paper" else None)
        ax.set_xlabel(f"difficulty level ({benchmark})")
        ax.set_ylabel(label)
        ax.set_xticks(sorted(part["level"].unique()))
    axes[0].set_title(f"{ours_title}: reflective share by level")
    axes[1].set_title("keyword frequency (solid: paper list, dashed: paper-code)")
    axes[0].legend(fontsize=7)
    return fig


# ---------------------------------------------------------------------------------------------------------------
# Self-correction probe
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class ProbeResult:
    """``rows``: one per (model, problem) (columns ``PROBE_COLUMNS``); ``summary``: ``probe_summary(rows)``;
    ``skipped``: why the probe did not run (None when it ran)."""

    rows: pd.DataFrame
    summary: pd.DataFrame
    skipped: str | None = None

    def note(self) -> str:
        """One line for the notebook: what ran, or why nothing did."""
        if self.skipped:
            return f"self-correction probe skipped: {self.skipped}"
        n = self.rows.groupby("model").size()
        return f"self-correction probe: {len(n)} models x {int(n.iloc[0])} problems with a planted first-pass error"


def probe_problems(benchmark="org_levels", per_level: int = 10) -> list:
    """The first ``per_level`` problems of each level of ``benchmark`` (a registered name or an ``eval``
    ``Benchmark``); all when ``per_level`` is 0."""
    from l2s_lib.eval.benchmarks import get_benchmark, load_benchmark

    problems = load_benchmark(get_benchmark(benchmark))
    if per_level <= 0:
        return list(problems)
    seen: dict = {}
    out = []
    for p in problems:
        if seen.get(p.level, 0) < per_level:
            seen[p.level] = seen.get(p.level, 0) + 1
            out.append(p)
    return out


def probe_benchmark(benchmark="org_levels", per_level: int = 10):
    """The probe's problems (``probe_problems``) as an eval ``Benchmark`` read like ``benchmark``, from a file
    written once under the cache (its content names it, so a changed problem set is a new benchmark)."""
    from l2s_lib.eval.benchmarks import get_benchmark
    from l2s_lib.fingerprint import data_fingerprint

    base = get_benchmark(benchmark)
    rows = [{"idx": p.idx, "problem": p.question, "answer": str(p.answer), "level": p.level}
            for p in probe_problems(base, per_level)]
    text = "".join(json.dumps(r) + "\n" for r in rows)
    path = paths.cache_dir() / "probe" / f"{base.name}_probe_{data_fingerprint(text)[:12]}.jsonl"
    if not path.is_file():
        atomic_write_text(path, text)
    # The same benchmark (layout, grader, levels, prompt) on the probe's file.
    return dataclasses.replace(base, name=f"{base.name}_probe", display_name=f"{base.display_name} (probe)",
                               path=path, hub=None)


def correction_probe(entries: Sequence[grid.Entry], world: str, benchmark="org_levels",
                     per_level: int = 10, max_new_tokens: int = 200, batch_size: int = 128,
                     device: str = "cpu", progress: bool = True) -> ProbeResult:
    """Run the planted-error probe on every entry (merges are materialised through the grid's merge cache).

    ``world``: ``catalog.Pair.world``; anything but ``"organism"`` returns a skipped ``ProbeResult``.
    ``per_level``: problems per level of ``benchmark`` (0 = all). Deterministic: greedy decoding, planted errors
    seeded per question (the ``organism_forced`` prompt), so a problem gets the same error in every run.
    """
    if world != "organism":
        return ProbeResult(pd.DataFrame(columns=PROBE_COLUMNS), probe_summary(pd.DataFrame(columns=PROBE_COLUMNS)),
                           skipped=f"it plants an error into the organisms' fixed solution format; the {world} "
                                   f"models here write free-form solutions, so there is no first pass to corrupt")
    from tqdm.auto import tqdm

    from l2s_lib.eval import evaluate
    from l2s_lib.organisms.prompts import forced_answer

    # An evaluation like any other, through eval (its generation cache, decoder and grader): the registered
    # prompt ``organism_forced`` prefills a first pass with one planted error, seeded per question. The response
    # is the continuation; its grade says whether the planted error was repaired.
    bench = probe_benchmark(benchmark, per_level)
    rows = []
    for entry in tqdm(entries, desc="probe", disable=not progress, unit="model"):
        model_dir = grid.materialize(entry, device=device)
        res = evaluate(str(model_dir), [bench], prompt="organism_forced", max_new_tokens=max_new_tokens,
                       batch_size=batch_size, device=device, progress=False, model_name=entry.label)
        for r in res.records.itertuples(index=False):
            wrong = forced_answer(r.question)
            final = int(r.extracted) if str(r.extracted).lstrip("-").isdigit() else None
            rows.append({"model": entry.label, "idx": r.idx, "level": r.level, "question": r.question,
                         "answer": int(r.reference), "planted": wrong, "final": final,
                         "noticed": bool(r.reflective), "repaired": bool(r.correct), "kept_error": final == wrong,
                         "n_tokens": int(r.n_tokens), "continuation": r.response})
    df = pd.DataFrame(rows, columns=PROBE_COLUMNS)
    return ProbeResult(df, probe_summary(df))


def probe_overview(probe: ProbeResult, value: str = "repaired_pct", digits: int = 1) -> pd.DataFrame:
    """Model x level table of one ``probe_summary`` column (``all`` last), rounded; empty when skipped."""
    s = probe.summary
    if s.empty:
        return pd.DataFrame()
    table = s.pivot(index="model", columns="level", values=value)
    levels = sorted((c for c in table.columns if c != "all"), key=int) + ["all"]
    return table.loc[list(dict.fromkeys(s["model"])), levels].round(digits)


def probe_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Per model and level (then ``"all"``): n and the percentages noticed / repaired / kept the planted error,
    ``noticed_repaired_pct`` (share of the noticed errors that end repaired) and mean continuation length."""
    cols = ["model", "level", "n", "noticed_pct", "repaired_pct", "kept_error_pct", "noticed_repaired_pct",
            "mean_tokens"]
    out = []
    for model, g in rows.groupby("model", sort=False):
        parts = [(str(lv), gl) for lv, gl in sorted(g.groupby("level"), key=lambda x: int(x[0]))] + [("all", g)]
        for lv, gl in parts:
            noticed = gl[gl["noticed"].astype(bool)]
            out.append({"model": model, "level": lv, "n": len(gl),
                        "noticed_pct": 100 * gl["noticed"].astype(bool).mean(),
                        "repaired_pct": 100 * gl["repaired"].astype(bool).mean(),
                        "kept_error_pct": 100 * gl["kept_error"].astype(bool).mean(),
                        "noticed_repaired_pct": 100 * noticed["repaired"].astype(bool).mean() if len(noticed)
                        else float("nan"),
                        "mean_tokens": gl["n_tokens"].astype(float).mean()})
    return pd.DataFrame(out, columns=cols)


def fig_probe(probe: ProbeResult, roles: Mapping[str, str]) -> plt.Figure:
    """The probe by level: share of planted errors noticed and repaired, one line per model (a panel that says
    why when the probe was skipped)."""
    set_style()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    if probe.skipped:
        for ax in axes:
            ax.axis("off")
        axes[0].text(0, 0.5, probe.note(), wrap=True, fontsize=9)
        return fig
    summary = probe.summary
    part = summary[summary["level"] != "all"].assign(level=lambda d: d["level"].astype(int))
    colors = model_colors(roles)
    for ax, value, title in ((axes[0], "noticed_pct", "planted error noticed (%)"),
                             (axes[1], "repaired_pct", "planted error repaired (%)")):
        plots.fig_lines(part, "level", value, "model", ax=ax, colors=colors, xlabel="difficulty level",
                        ylabel=title, title=f"Self-correction probe: {title}")
        ax.set_xticks(sorted(part["level"].unique()))
        ax.set_ylim(-3, 103)
    return fig


# ---------------------------------------------------------------------------------------------------------------
# Conclusion
# ---------------------------------------------------------------------------------------------------------------



def conclusion(reflection: pd.DataFrame, probe: ProbeResult, system1: str, system2: str, merges: Sequence[str],
               level_benchmark: str, world: str = "organism") -> str:
    """Markdown: do merges reflect less than System 2 yet more on harder problems (Table 6, Figure 2b), and,
    when the probe ran, how often each model repairs a planted error.

    A merge *matches the paper's pattern* when its reflective share (paper keyword list, all benchmarks pooled)
    is below System 2's and its share on the hardest level of ``level_benchmark`` is above its share on the
    easiest level (the paper: merges keep reflecting on AIME24 but much less on GSM8K).
    """
    pooled = keyword_lists_side_by_side(reflection, digits=6)
    share = pooled["reflective_pct [paper]"]
    lv = by_level(reflection, level_benchmark)
    first, last = lv.columns[0], lv.columns[-1]
    merges = [m for m in merges if m in share.index]
    matches = [m for m in merges if share[m] < share[system2] and lv.loc[m, last] > lv.loc[m, first]]
    head = (f"**Verdict ({world} world): the paper's self-critique pattern holds for {len(matches)} of {len(merges)} "
            f"merges**" if matches else
            f"**Verdict ({world} world): the paper's self-critique pattern holds for none of the {len(merges)} merges**")
    text = head + (f" (criterion: fewer reflective responses than System 2 overall, and more on level {last} than "
                   f"on level {first} of {level_benchmark}). ")
    if matches and len(matches) < len(merges):
        text += f"Merges that match: {claims.names(matches)}. "
    text += (f"Reflective responses (paper keywords): System 1 {share[system1]:.1f}%, System 2 {share[system2]:.1f}%, "
             + ", ".join(f"{m} {share[m]:.1f}%" for m in merges) + "; by level "
             + ", ".join(f"{m} {lv.loc[m, first]:.0f}% -> {lv.loc[m, last]:.0f}%" for m in [system2] + merges) + ". ")
    p6 = paper_table6()
    pm = p6[[paper.role_of(m) == "merge" for m in p6.index]]
    text += (f"In the paper's Table 6 the merges reflect on {pm.iloc[:, 0].min():.0f}-{pm.iloc[:, 0].max():.0f}% "
             f"of {p6.columns[0]} answers and {pm.iloc[:, -1].min():.0f}-{pm.iloc[:, -1].max():.0f}% of "
             f"{p6.columns[-1]} answers, against {p6.iloc[0, 0]:.0f}% and {p6.iloc[0, -1]:.0f}% for System 2. ")
    if probe.skipped:
        text += f"The self-correction probe was skipped ({probe.skipped})."
    else:
        s = probe.summary[probe.summary["level"] == "all"].set_index("model")
        text += ("Self-correction probe (planted first-pass error): repaired by "
                 + ", ".join(f"{m} {s.loc[m, 'repaired_pct']:.0f}%" for m in s.index)
                 + f"; System 2 notices {s.loc[system2, 'noticed_pct']:.0f}% of the planted errors"
                 + (", the merges " + ", ".join(f"{s.loc[m, 'noticed_pct']:.0f}% ({m})" for m in merges if m in s.index)
                    if any(m in s.index for m in merges) else "") + ".")
    return text.strip()


# ---------------------------------------------------------------------------------------------------------------
# The study: compute writes the result files; tables, figures and verdict read them
# ---------------------------------------------------------------------------------------------------------------

STUDY = "04_self_critique"
INPUTS: tuple[str, ...] = ()
FIGURES = ("tab6_reflection", "fig2b_reflection_by_level", "tab6_correction_probe")


def compute(params: Mapping[str, Any]) -> list[Path]:
    """Evaluate the comparison grid of ``params``, count reflection, run the planted-error probe, and write
    ``summary``, ``reflection`` (``reflection_table``), ``correction_probe`` (``probe_summary``),
    ``correction_probe_rows`` (without the continuations) and ``settings`` (with why the probe was skipped)."""
    p = dict(params)
    out = folder.of(STUDY, p)
    pair, entries, run = comparison.evaluate(p)
    probe = correction_probe(entries, pair.world, p["LEVEL_BENCHMARK"], p["PROBE_PER_LEVEL"],
                             p["PROBE_MAX_NEW_TOKENS"], p["BATCH_SIZE"], p["DEVICE"])
    return [folder.write(out, run.summary, "summary", p),
            folder.write(out, reflection_table(run.records), "reflection", p),
            folder.write(out, probe.summary, "correction_probe", p),
            folder.write(out, probe.rows.drop(columns=["continuation"]), "correction_probe_rows", p),
            folder.write_settings(out, p, world=pair.world, system1=pair.label1, system2=pair.label2,
                                  level_benchmark=p["LEVEL_BENCHMARK"], probe_skipped=probe.skipped)]


def probe_result(d: Path) -> ProbeResult:
    """The probe of the run in ``d`` as written by ``compute`` (rows without their continuations)."""
    return ProbeResult(folder.read(d, "correction_probe_rows"), folder.read(d, "correction_probe"),
                       folder.settings(d)["probe_skipped"])


def _read(d: Path) -> tuple[pd.DataFrame, dict, dict]:
    """The reflection table (its ``level`` column reads back as text: "1".."5" and "all"), roles and settings."""
    return folder.read(d, "reflection"), folder.roles(folder.read(d, "summary")), folder.settings(d)


def tables(d: Path) -> dict[str, show.Table]:
    """``table6``: reflective share (%) per model and benchmark, ours and ``paper_table6``; ``keyword_lists``:
    both keyword lists side by side; ``reflective_by_level`` / ``keyword_freq_by_level``: Figure 2b's numbers;
    ``probe_repaired`` / ``probe_noticed``: the probe by level (empty when it was skipped)."""
    reflection, roles, s = _read(d)
    models = list(roles)
    probe = probe_result(d)
    return {
        "table6": show.Table(by_benchmark(reflection, models=models).round(1), "this run"),
        "paper_table6": show.Table(paper_table6(), "paper, 7B (Table 6)"),
        "keyword_lists": show.Table(keyword_lists_side_by_side(reflection, models)),
        "reflective_by_level": show.Table(by_level(reflection, s["level_benchmark"], models=models).round(1),
                                          "reflective responses (%), paper list"),
        "keyword_freq_by_level": show.Table(by_level(reflection, s["level_benchmark"], "keyword_freq",
                                                     models=models).round(2),
                                            "keywords per reflective response, paper list"),
        "probe_repaired": show.Table(probe_overview(probe, "repaired_pct"), "repaired (%) by level"),
        "probe_noticed": show.Table(probe_overview(probe, "noticed_pct"), "noticed (%) by level"),
    }


def figures(d: Path) -> folder.Figures:
    """``tab6_reflection`` (Table 6 as heatmaps), ``fig2b_reflection_by_level``, ``tab6_correction_probe``."""
    def tab6():
        reflection, roles, s = _read(d)
        return fig_table6(by_benchmark(reflection, models=list(roles)), paper_table6(),
                          ours_title=f"This run ({s['world']})")

    def fig2b():
        reflection, roles, s = _read(d)
        return fig_reflection_by_level(reflection, s["level_benchmark"], roles, ours_title=f"This run ({s['world']})")

    return folder.Figures({"tab6_reflection": tab6, "fig2b_reflection_by_level": fig2b,
                           "tab6_correction_probe": lambda: fig_probe(probe_result(d), _read(d)[1])})


def verdict(d: Path) -> str:
    """Markdown: do the merges keep the paper's self-critique pattern (``conclusion``)?"""
    reflection, roles, s = _read(d)
    return conclusion(reflection, probe_result(d), s["system1"], s["system2"],
                      [m for m, r in roles.items() if r == "merge"], s["level_benchmark"], world=s["world"])
