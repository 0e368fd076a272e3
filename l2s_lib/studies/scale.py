"""Scale effects (Tables 2-5): how merging behaves as the model pair grows.

The paper's finding: at 1.5B merges fail on hard problems; at 14B/32B they keep accuracy but shorten little.
Here the same methods run on every size of the organism ladder (or on one real pair per papermill config),
and the figure puts accuracy gap and length change against model size, the organisms beside the paper's
1.5B/7B/14B/32B numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import pandas as pd

from l2s_lib import paper
from l2s_lib.checkpoints import parameter_count
from l2s_lib.errors import ConfigError
from l2s_lib.figures import set_style
from l2s_lib.studies import catalog, grid, tables

#: The paper's model sizes in billions of parameters, by the scale keys of ``catalog.SCALES``.
PAPER_SIZES_B = {"1.5B": 1.54, "7B": 7.62, "14B": 14.77, "32B": 32.76}


def parse_mapping(text: str) -> dict[str, str]:
    """``"1m:1p5b,6m:7b"`` -> ``{"1m": "1p5b", "6m": "7b"}`` (notebook literals stay strings)."""
    out = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        if ":" not in item:
            raise ConfigError(f"'{item}' must be KEY:VALUE (e.g. 1m:1p5b)")
        k, v = item.split(":", 1)
        out[k.strip()] = v.strip()
    return out


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
        avg = tables.average_table(summary, s2)
        acc2 = avg.set_index("model").loc[s2, "avg_accuracy"]
        avg["accuracy_gap"] = avg["avg_accuracy"] - acc2
        avg["scale"] = scale
        avg["size_b"] = PAPER_SIZES_B[scale]
        avg["role"] = [t.set_index("method")["role"].to_dict()[m] for m in avg["model"]]
        rows.append(avg)
    return pd.concat(rows, ignore_index=True)


def ladder_pairs(sizes: str = "", system1: str = "", system2: str = "", calibration: str = "",
                 scale: str = "7b") -> dict[str, catalog.Pair]:
    """The pairs of a scale study: one per organism size (``sizes`` comma-separated; "" = every shipped size),
    or, when ``system1``/``system2`` are given, the one real pair under its paper scale key."""
    if system1 or system2:
        return {scale: catalog.resolve_pair(system1=system1, system2=system2, calibration=calibration)}
    from l2s_lib import organisms

    names = [s.strip() for s in sizes.split(",") if s.strip()] or list(organisms.SHIPPED_SIZES)
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
        avg = tables.average_table(part, system2)
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
    top = tables.overall(summary).copy()
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


def scale_conclusion(ours: pd.DataFrame, methods: Sequence[str], acc_tol: float = 5.0) -> str:
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
