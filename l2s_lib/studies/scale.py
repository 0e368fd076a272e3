"""Scale effects (Tables 2-5): how merging behaves as the model pair grows.

The paper's finding: at 1.5B merges fail on hard problems; at 14B/32B they keep accuracy but shorten little.
Here the same methods run on every size of the organism ladder (or on one real pair per papermill config),
and the figure puts accuracy gap and length change against model size, the organisms beside the paper's
1.5B/7B/14B/32B numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd

from l2s_lib import show
from l2s_lib.report import claims, paper
from l2s_lib.report import tables as report_tables
from l2s_lib.checkpoints import parameter_count
from l2s_lib.errors import ConfigError
from l2s_lib.report.figures import set_style
from l2s_lib.pipeline import catalog, executors, grid
from l2s_lib.studies import folder

#: The paper's model sizes in billions of parameters, by the scale keys of ``catalog.SCALES``.
PAPER_SIZES_B = {"1.5B": 1.54, "7B": 7.62, "14B": 14.77, "32B": 32.76}


def paper_average_tables() -> pd.DataFrame:
    """Tables 1-4 reduced to one row per (scale, method): mean accuracy, length change vs the scale's System 2,
    and the accuracy gap to System 2 (points); only the benchmarks every scale shares (GSM8K, MATH500, AIME24)."""
    rows = []
    shared = ["GSM8K", "MATH500", "AIME24"]
    for scale in paper.SCALE_TABLES:
        t = paper.per_benchmark(scale)
        t = t[t["benchmark"].isin(shared)]
        s2 = t[t.role == "system2"]["method"].iloc[0]
        summary = pd.DataFrame({"model": t["method"], "benchmark": t["benchmark"], "level": "all",
                                "accuracy": t["accuracy"], "mean_tokens": t["mean_length"],
                                "reflective_pct": 0.0, "truncated_pct": 0.0})
        avg = report_tables.average_table(summary, s2)
        acc2 = avg.set_index("model").loc[s2, "avg_accuracy"]
        avg["accuracy_gap"] = avg["avg_accuracy"] - acc2
        avg["scale"] = scale
        avg["size_b"] = PAPER_SIZES_B[scale]
        avg["role"] = [t.set_index("method")["role"].to_dict()[m] for m in avg["model"]]
        rows.append(avg)
    return pd.concat(rows, ignore_index=True)


def ladder_pairs(sizes: Sequence[str] = (), system1: str = "", system2: str = "", calibration: str = "",
                 scale: str = "7b") -> dict[str, catalog.Pair]:
    """The pairs of a scale study: one per organism size (``sizes``; empty = every shipped size), or, when
    ``system1``/``system2`` are given, the one real pair under its paper scale key."""
    if system1 or system2:
        return {scale: catalog.resolve_pair(system1=system1, system2=system2, calibration=calibration)}
    from l2s_lib import organisms

    if isinstance(sizes, str):
        raise ConfigError(f"sizes must be a list of organism sizes (e.g. ['1m', '6m']), got the string {sizes!r}")
    names = list(sizes) or list(organisms.SHIPPED_SIZES)
    return {size: catalog.resolve_pair(size, calibration=calibration) for size in names}


def run_ladder(pairs: Mapping[str, catalog.Pair], methods: Sequence[str] | str, scale_of_size: Mapping[str, str],
               benchmarks: Sequence[str] | str, seed: int = 0, system1_eval: Mapping | None = None,
               system2_eval: Mapping | None = None, **eval_kw) -> pd.DataFrame:
    """Evaluate System 1, System 2 and the merges for every pair; one summary with ``size``, ``n_params`` and
    ``scale_settings`` columns. Each size takes the paper's hyper-parameters of the scale it is mapped to
    (default 7B). Models are labelled System 1 / System 2 at every size so rows line up across sizes."""
    parts = []
    for size, pair in pairs.items():
        pair = catalog.Pair(pair.system1, pair.system2, pair.dpo, pair.calibration, world=pair.world)
        settings = scale_of_size.get(size, "7b")
        entries = catalog.pair_entries(pair, system1_eval, system2_eval)[:2] + catalog.method_entries(
            pair, methods, scale=settings, seed=seed, **dict(system2_eval or {}))
        res = grid.evaluate(entries, benchmarks, **eval_kw)
        n_params = parameter_count(pair.system2)  # a hub id resolves through the hub cache
        parts.append(res.summary.assign(size=size, n_params=n_params, scale_settings=settings))
    return pd.concat(parts, ignore_index=True)


def ladder_average(summary: pd.DataFrame, system2: str = "System 2") -> pd.DataFrame:
    """Per size and model: mean accuracy, length change vs that size's System 2, accuracy gap, reflection."""
    rows = []
    for size, part in summary.groupby("size", sort=False):
        avg = report_tables.average_table(part, system2)
        acc2 = avg.set_index("model").loc[system2, "avg_accuracy"]
        avg["accuracy_gap"] = avg["avg_accuracy"] - acc2
        avg["size"] = size
        avg["n_params"] = int(part["n_params"].iloc[0])
        avg["role"] = [part.set_index("model")["role"].to_dict()[m] for m in avg["model"]]
        rows.append(avg)
    return pd.concat(rows, ignore_index=True)


def reflection_counts(summary: pd.DataFrame) -> pd.DataFrame:
    """Tables 2-4's reflection columns: reflective responses (count) and keyword frequency, per size, model and
    benchmark (level "all")."""
    top = report_tables.overall(summary).copy()
    top["reflective_responses"] = (top["reflective_pct"] * top["n"] / 100).round().astype(int)
    cols = [c for c in ("size", "model", "benchmark", "n", "reflective_responses", "keyword_freq") if c in top]
    return top[cols].reset_index(drop=True)


def fig_scale(ours: pd.DataFrame, theirs: pd.DataFrame, methods: Sequence[str]) -> plt.Figure:
    """Accuracy gap to System 2 and length change against model size: organisms (left) beside the paper (right)."""
    set_style()
    fig, axes = plt.subplots(2, 2, figsize=(11, 6.5), sharex="col")
    panels = [(ours, "n_params", 1.0, "organism parameters", "This run: organism ladder"),
              (theirs, "size_b", 1e9, "model parameters", "Paper: Tables 1-4 (GSM8K, MATH500, AIME24)")]
    for col, (df, xcol, mult, xlabel, title) in enumerate(panels):
        for m in methods:
            part = df[df["model"] == m].copy()
            if part.empty:
                continue
            x = part[xcol] * mult
            axes[0, col].plot(x, part["accuracy_gap"], marker="o", label=m)
            axes[1, col].plot(x, part["length_change_vs_system2_pct"], marker="o", label=m)
        sizes = sorted(set((df[xcol] * mult).dropna()))
        for row in range(2):
            axes[row, col].axhline(0, color="black", lw=0.7)
            axes[row, col].set_xscale("log")
            # label the sizes that were run, not powers of ten
            axes[row, col].set_xticks(sizes, [_size_label(v) for v in sizes])
            axes[row, col].minorticks_off()
        axes[0, col].set_title(title)
        axes[0, col].set_ylabel("accuracy - System 2 (points)")
        axes[1, col].set_ylabel("length change vs System 2 (%)")
        axes[1, col].set_xlabel(xlabel)
        axes[0, col].legend(fontsize=7)
    return fig


def _size_label(n: float) -> str:
    return f"{n / 1e9:.3g}B" if n >= 1e9 else f"{n / 1e6:.3g}M"


def scale_conclusion(ours: pd.DataFrame, methods: Sequence[str], acc_tol: float = claims.ACC_TOL) -> str:
    """Markdown: does the paper's scale pattern (small pairs lose accuracy; large ones keep it but shorten less)
    appear along the organism ladder? Computed from ``ladder_average`` rows."""
    sizes = list(dict.fromkeys(ours["size"]))
    if len(sizes) < 2:
        return f"Only one size ({sizes[0]}) was run: the scale question needs at least two."
    first, last = sizes[0], sizes[-1]
    merges = ours[ours["model"].isin(methods)]
    g = merges.groupby("size", sort=False).agg(gap=("accuracy_gap", "mean"),
                                               change=("length_change_vs_system2_pct", "mean"))
    gain = g.loc[last, "gap"] - g.loc[first, "gap"]
    less_short = g.loc[last, "change"] - g.loc[first, "change"]
    acc_part = (f"accuracy gap to System 2 {'narrows' if gain > 0 else 'widens'} from {g.loc[first, 'gap']:+.1f} to "
                f"{g.loc[last, 'gap']:+.1f} points")
    len_part = (f"length change goes from {g.loc[first, 'change']:+.1f}% to {g.loc[last, 'change']:+.1f}%, i.e. "
                f"the larger organism is shortened {'less' if less_short > 0 else 'more'}")
    paper_like = gain > 0 and less_short > 0
    return (f"**Verdict: the paper's scale pattern {'appears' if paper_like else 'does not appear (fully)'} along "
            f"the organism ladder.** Averaged over {', '.join(methods)}, from {first} to {last} the {acc_part}, and "
            f"the {len_part}. (The paper: merges lose accuracy at 1.5B; at 14B/32B they keep it but shorten only "
            f"5-28%.)")


def three_model_entries(pair_models: Mapping[str, str], seed: int = 0) -> list[grid.Entry]:
    """Table 5: average merges of every pair and of all three of three related models (label -> path).

    The first model is the shared base for config and tokenizer; averages include every listed model.
    """
    names = list(pair_models)
    if len(names) != 3:
        raise ConfigError(f"Table 5 needs three models, got {len(names)}: {names}")
    base = pair_models[names[0]]
    combos = [(names[0], names[1]), (names[0], names[2]), (names[1], names[2]), tuple(names)]
    return [grid.merge(" + ".join(c), "average", base, [pair_models[n] for n in c], seed=seed) for c in combos]


# ---------------------------------------------------------------------------------------------------------------
# The study: compute writes the result files; tables, figures and verdict read them
# ---------------------------------------------------------------------------------------------------------------

STUDY = "02_scale_effects"
INPUTS: tuple[str, ...] = ()
FIGURES = ("fig3_scale_effects",)


def compute(params: Mapping[str, Any]) -> list[Path]:
    """Evaluate the ladder (and Table 5's three-model averages) of ``params`` and write ``summary`` (with
    ``size``, ``n_params``, ``scale_settings``), ``average`` (``ladder_average``), ``reflection``
    (``reflection_counts``), ``three_model`` (when it ran) and ``settings``."""
    p = dict(params)
    out = folder.of(STUDY, p)
    pairs = ladder_pairs(p["SIZES"], p["SYSTEM1"], p["SYSTEM2"], p["CALIBRATION"], p["SCALE"])
    mapping = dict(p["SCALE_OF_SIZE"]) | ({p["SCALE"]: p["SCALE"]} if p["SYSTEM1"] else {})
    eval_kw = dict(device=p["DEVICE"], backend=p["BACKEND"], batch_size=p["BATCH_SIZE"], limit=p["LIMIT"] or None,
                   **executors.from_params(p))
    summary = run_ladder(pairs, p["METHODS"], mapping, p["BENCHMARKS"], seed=p["SEED"],
                         system1_eval=catalog.decoding(p["S1_PROMPT"], p["S1_MAX_NEW_TOKENS"]),
                         system2_eval=catalog.decoding(p["PROMPT"], p["MAX_NEW_TOKENS"]), **eval_kw)
    written = [folder.write(out, summary, "summary", p), folder.write(out, ladder_average(summary), "average", p),
               folder.write(out, reflection_counts(summary), "reflection", p)]
    pair = catalog.resolve_pair(p["SIZES"][0] if p["SIZES"] else "")
    note = None
    if p["THREE_MODEL"] and pair.world == "organism" and pair.dpo:
        trio = {"System 1": pair.system1, "System 2": pair.system2, "DPO": pair.dpo}
        entries = catalog.pair_entries(pair) + three_model_entries(trio, seed=p["SEED"])
        table5 = grid.evaluate(entries, p["BENCHMARKS"], progress=False, **eval_kw).summary
        written.append(folder.write(out, table5, "three_model", p))
    else:
        note = "Table 5 is asked of the organisms only (set THREE_MODEL and use the organism pair)."
    written.append(folder.write_settings(out, p, world=pairs[next(iter(pairs))].world, system2="System 2",
                                         three_model_note=note))
    return written


def tables(d: Path) -> dict[str, show.Table]:
    """``size <S>``: Tables 2-4's accuracy (mean length) per benchmark at each size; ``reflection``: reflective
    responses and keyword frequency per size, model and benchmark; ``ladder``: each merge's accuracy gap and
    length change per size; ``table5``: the three-model averages (when they ran)."""
    summary, ladder = folder.read(d, "summary"), folder.read(d, "average")
    out = {}
    for size, part in summary.groupby("size", sort=False):
        out[f"size {size}"] = show.Table(report_tables.paper_style(part, system2="System 2"),
                                         f"{size}: {int(part['n_params'].iloc[0]):,} parameters, Table 7 row "
                                         f"{part['scale_settings'].iloc[0]}")
    reflection = folder.read(d, "reflection")
    out["reflection"] = show.Table(reflection.pivot_table(index=["size", "model"], columns="benchmark",
                                                          values=["reflective_responses", "keyword_freq"],
                                                          sort=False).round(1))
    cols = ["size", "model", "accuracy_gap", "length_change_vs_system2_pct"]
    out["ladder"] = show.Table(ladder[ladder["role"] == "merge"][cols].round(1), index=False)
    if (Path(d) / "three_model.csv").is_file():
        out["table5"] = show.Table(report_tables.paper_style(folder.read(d, "three_model"), system2="System 2"))
    return out


def _merges(ladder: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(ladder.loc[ladder["role"] == "merge", "model"]))


def figures(d: Path) -> folder.Figures:
    """``fig3_scale_effects``: accuracy gap and length change against model size, ours beside the paper's."""
    def fig3():
        ladder = folder.read(d, "average")
        return fig_scale(ladder, paper_average_tables(), _merges(ladder))

    return folder.Figures({"fig3_scale_effects": fig3})


def verdict(d: Path) -> str:
    """Markdown: does the paper's scale pattern appear along the ladder (``scale_conclusion``)?"""
    ladder = folder.read(d, "average")
    return scale_conclusion(ladder, _merges(ladder))
