"""Markdown tables of a merge-study CSV (``sweep.FIELDS`` columns), for ``data/organisms/README.md``."""

from __future__ import annotations

from pathlib import Path

from l2s_lib.report.claims import ACC_TOL, MIN_SHORTENING

#: The headline bar of issue 5, in the units of the study CSV (fractions): the compendium's reading of "keeps
#: accuracy" and "much shorter", shared with the notebooks' verdicts (``report.claims``).
BAR_ACC_TOL = ACC_TOL / 100
BAR_SHORTER = MIN_SHORTENING / 100


def meets_bar(rows, s2, acc_tol: float = BAR_ACC_TOL, shorter: float = BAR_SHORTER):
    """Boolean mask of the ``rows`` (study-CSV rows) within ``acc_tol`` of System 2's accuracy and at least
    ``shorter`` shorter than System 2 (``s2``: its row)."""
    return (rows.correct >= s2.correct - acc_tol) & (rows.length <= (1 - shorter) * s2.length)


def load(csv_path: str | Path):
    import pandas as pd

    df = pd.read_csv(csv_path)
    df = df[df["style"] != "style"]  # concurrent writers may each have written a header
    for c in ("correct", "first_correct", "flip", "length", "reflect", "alpha", "k"):
        df[c] = pd.to_numeric(df[c], errors="coerce")
    df["seed"] = df["seed"].astype(int)
    return df


def label(r) -> str:
    if r["model"] in ("ta", "ta_equal"):
        return f"{r['model']} {r['alpha']:.2f}"
    if r["model"] == "ties":
        return f"ties k={r['k']:.2f} a={r['alpha']:.2f}"
    return r["model"]


def overall_table(df) -> str:
    """One row per (style, size, seed, model): overall accuracy, length change vs System 2, reflection."""
    d = df[df.level == "all"].copy()
    out = ["| style | size | seed | model | acc | first-pass | flip | length | vs S2 length | reflective |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for (style, size, seed), g in d.groupby(["style", "size", "seed"], sort=True):
        s2 = g[g.model == "system2"].iloc[0]
        for _, r in g.iterrows():
            out.append(f"| {style} | {size} | {seed} | {label(r)} | {r.correct:.3f} | {r.first_correct:.3f} | "
                       f"{r.flip:.3f} | {r.length:.1f} | {100 * (r.length / s2.length - 1):+.0f}% | {r.reflect:.2f} |")
    return "\n".join(out)


def level_table(df, models: list[str]) -> str:
    """Per-level accuracy / length / reflection of selected rows (labels as in ``label``), mean over seeds."""
    d = df[df.level != "all"].copy()
    d["label"] = d.apply(label, axis=1)
    d = d[d.label.isin(models)]
    g = d.groupby(["style", "label", "level"])[["correct", "first_correct", "flip", "length", "reflect"]].mean()
    seeds = d.groupby(["style", "label"]).seed.nunique()
    out = ["| style | model (seeds) | level | acc | first-pass | flip | length | reflective |",
           "|---|---|---|---|---|---|---|---|"]
    for (style, lab, lv), r in g.iterrows():
        out.append(f"| {style} | {lab} ({seeds[(style, lab)]}) | {lv} | {r.correct:.2f} | {r.first_correct:.2f} | "
                   f"{r.flip:.2f} | {r.length:.1f} | {r.reflect:.2f} |")
    return "\n".join(out)


def bar_check(df, acc_tol: float = BAR_ACC_TOL, shorter: float = BAR_SHORTER) -> str:
    """For each (style, size, seed): merges within ``acc_tol`` of System 2 that are ``shorter`` shorter."""
    d = df[df.level == "all"]
    lines = []
    for (style, size, seed), g in d.groupby(["style", "size", "seed"]):
        s2 = g[g.model == "system2"].iloc[0]
        m = g[g.model.isin(["ta", "ties"])]
        ok = m[meets_bar(m, s2, acc_tol, shorter)]
        short = m[m.length <= (1 - shorter) * s2.length]
        best = short.sort_values("correct").iloc[-1] if len(short) else None
        lines.append(f"- {style} {size} seed {seed}: {len(ok)} merge(s) meet the bar; best merge >= "
                     f"{int(shorter * 100)}% shorter: "
                     + (f"{label(best)} at {best.correct:.3f} vs System 2 {s2.correct:.3f}" if best is not None
                        else "none"))
    return "\n".join(lines)


# ---- design 2: the ladder sweep (data/organisms/results/design2/) ----

def _per_level(df, size, seed, model, level, col="correct") -> float:
    sel = df[(df["size"] == size) & (df.seed == seed) & (df.model == model) & (df.level == str(level))]
    return float(sel[col].iloc[0])


def _sizes(df) -> list[str]:
    from l2s_lib.organisms import configs

    return [s for s in configs.SIZES if s in set(df["size"])]


def bars_table(df, acc_tol: float = BAR_ACC_TOL, shorter: float = BAR_SHORTER) -> str:
    """Issue 5's bars per (size, seed): System 1 level-1 accuracy (>= 0.90), the level-5 gap (>= 25 points), the
    length ratio (>= 3x), System 2's reflection rate (>= 0.90), repair of forced errors, and how many TA/TIES
    merges keep System 2's accuracy within ``acc_tol`` with answers ``shorter`` shorter (the headline bar)."""
    out = ["| size | seed | S1 L1 | S1 / S2 L5 (gap) | S2 / S1 length | S2 reflective | repair | merges meeting "
           "the headline bar (of those tried) | best of them (picked after the fact) |", "|---|---|---|---|---|---|---|---|---|"]
    d = df[df.level == "all"]
    for size in _sizes(df):
        for seed, g in d[d["size"] == size].groupby("seed"):
            s1, s2 = (g[g.model == m].iloc[0] for m in ("system1", "system2"))
            forced = g[g.model == "system2_forced"].iloc[0]
            l5 = [_per_level(df, size, seed, m, 5) for m in ("system1", "system2")]
            m = g[g.model.isin(["ta", "ties"])]
            ok = m[meets_bar(m, s2, acc_tol, shorter)]
            best = ok.sort_values(["correct", "length"], ascending=[False, True]).iloc[0] if len(ok) else None
            out.append(f"| {size} | {seed} | {_per_level(df, size, seed, 'system1', 1):.2f} | {l5[0]:.2f} / "
                       f"{l5[1]:.2f} ({100 * (l5[1] - l5[0]):+.0f}) | {s2.length / s1.length:.2f}x | "
                       f"{s2.reflect:.2f} | {forced.correct:.3f} | {len(ok)} of {len(m)} | "
                       + (f"{label(best)}: {best.correct:.3f} at {100 * (best.length / s2.length - 1):+.0f}%"
                          if best is not None else "-") + " |")
    return "\n".join(out)


def spread_table(df, acc_tol: float = BAR_ACC_TOL, shorter: float = BAR_SHORTER) -> str:
    """Per size and fixed model or merge setting, over training seeds: accuracy and length change against each
    seed's System 2 as mean (min to max), and in how many seeds that one setting meets the headline bar. A setting
    fixed in advance is what a reader can reuse; the best of many settings per seed (``bars_table``) is not."""
    d = df[df.level == "all"].copy()
    s2 = d[d.model == "system2"].set_index(["size", "seed"])[["correct", "length"]]
    d = d.join(s2.rename(columns={"correct": "s2_acc", "length": "s2_len"}), on=["size", "seed"])
    d["label"] = d.apply(label, axis=1)
    d["dlen"] = 100 * (d.length / d.s2_len - 1)
    d["ok"] = (d.correct >= d.s2_acc - acc_tol) & (d.length <= (1 - shorter) * d.s2_len)
    out = ["| size | model | seeds | accuracy (%) mean (min to max) | length vs System 2 (%) mean (min to max) | "
           "reflective (%) mean | seeds meeting the headline bar |", "|---|---|---|---|---|---|---|"]
    order = {m: i for i, m in enumerate(("system1", "system2", "dpo", "system2_equal", "system2_forced", "ta",
                                         "ties", "ta_equal"))}
    for size in _sizes(d):
        g = d[d["size"] == size]
        keys = g.drop_duplicates("label").sort_values(["model", "alpha", "k"], key=lambda c: c.map(order)
                                                        if c.name == "model" else c)
        for lab in keys.label:
            x = g[g.label == lab]
            f = lambda c, k=1: f"{k * x[c].mean():.1f} ({k * x[c].min():.1f} to {k * x[c].max():.1f})"  # noqa: E731
            bar = f"{int(x.ok.sum())} of {len(x)}" if x.model.iloc[0] in ("ta", "ties") else "-"
            out.append(f"| {size} | {lab} | {len(x)} | {f('correct', 100)} | {f('dlen')} | {100 * x.reflect.mean():.1f} "
                       f"| {bar} |")
    return "\n".join(out)


def zone_summary(df, acc_tol: float = BAR_ACC_TOL, shorter: float = BAR_SHORTER):
    """Per (size, seed) over the TA sweep (alpha 0.5-1.0): the lowest accuracy, the largest accuracy change between
    neighbouring alphas, the flip rate at the lowest point, and the number of alphas meeting the headline bar."""
    import pandas as pd

    d = df[(df.level == "all")]
    rows = []
    for (size, seed), g in d.groupby(["size", "seed"]):
        s2 = g[g.model == "system2"].iloc[0]
        ta = g[g.model == "ta"].sort_values("alpha")
        worst = ta.loc[ta.correct.idxmin()]
        rows.append({"size": size, "seed": seed, "min_acc": ta.correct.min(), "alpha_at_min": worst.alpha,
                     "flip_at_min": worst.flip, "max_step_change": ta.correct.diff().abs().max(),
                     "window": int(meets_bar(ta, s2, acc_tol, shorter).sum())})
    return pd.DataFrame(rows)


def zone_table(df) -> str:
    """``zone_summary`` as mean (min-max) over seeds per size."""
    z = zone_summary(df)
    out = ["| size | seeds | lowest TA accuracy over alpha 0.5-1.0 | at alpha | flip rate there | largest change "
           "between neighbouring alphas (points) | alphas meeting the headline bar (of 11) |",
           "|---|---|---|---|---|---|---|"]
    for size in _sizes(df):
        g = z[z["size"] == size]
        f = lambda c, k=100: f"{k * g[c].mean():.1f} ({k * g[c].min():.1f}-{k * g[c].max():.1f})"  # noqa: E731
        out.append(f"| {size} | {len(g)} | {f('min_acc')} | {', '.join(f'{a:.2f}' for a in g.alpha_at_min)} | "
                   f"{f('flip_at_min')} | {f('max_step_change')} | {f('window', 1)} |")
    return "\n".join(out)


def control_table(df, alphas=(0.7, 0.8, 0.9)) -> str:
    """Reflection rate per level of TA merges toward System 2 (adaptive world) and toward the equal-rate control
    System 2, mean over seeds: level-dependent reflection that survives only with the adaptive System 2 is inherited
    from its habit, not produced by merging."""
    d = df[(df.level != "all") & df.model.isin(["ta", "ta_equal"]) & df.alpha.isin(alphas)]
    g = d.groupby(["size", "model", "alpha", "level"])[["reflect", "correct"]].mean()
    out = ["| size | merge toward | alpha | reflective L1 / L2 / L3 / L4 / L5 | accuracy L1 / L2 / L3 / L4 / L5 |",
           "|---|---|---|---|---|"]
    for size in _sizes(d):
        for model, name in (("ta", "System 2 (adaptive)"), ("ta_equal", "control System 2 (equal)")):
            for a in alphas:
                if (size, model, a, "1") not in g.index:
                    continue
                r = [g.loc[(size, model, a, str(lv))] for lv in range(1, 6)]
                out.append(f"| {size} | {name} | {a:.2f} | {' / '.join(f'{x.reflect:.2f}' for x in r)} | "
                           f"{' / '.join(f'{x.correct:.2f}' for x in r)} |")
    return "\n".join(out)


def ladder_figure(df, path: str | Path) -> Path:
    """TA accuracy and length change against alpha, TIES against its trim ratio k, one line per size (mean over
    seeds, shaded min-max), System 2's accuracy band of 5 points and the 30%-shorter line marked."""
    import matplotlib.pyplot as plt

    from l2s_lib.report import figures  # headless backend and house style

    figures.set_style()
    d = df[df.level == "all"].copy()
    s2 = d[d.model == "system2"].set_index(["size", "seed"])
    d = d.join(s2[["correct", "length"]].rename(columns={"correct": "s2_acc", "length": "s2_len"}), on=["size", "seed"])
    d["acc"] = 100 * d.correct
    d["dlen"] = 100 * (d.length / d.s2_len - 1)
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharey="row")
    colors = dict(zip(_sizes(df), ["#9ecae1", "#4292c6", "#08519c", "#08306b"]))
    for col, (model, x, xlabel) in enumerate((("ta", "alpha", "TA alpha"), ("ties", "k", "TIES trim ratio k (alpha 1)"))):
        sel = d[(d.model == model) & ((d.alpha == 1.0) if model == "ties" else True)]
        for size in _sizes(df):
            g = sel[sel["size"] == size].groupby(x)
            for row, y in enumerate(("acc", "dlen")):
                ax = axes[row, col]
                m = g[y].mean()
                ax.plot(m.index, m.values, marker="o", ms=3, color=colors[size], label=f"{size} ({g.seed.nunique().max()} seeds)")
                ax.fill_between(m.index, g[y].min().values, g[y].max().values, color=colors[size], alpha=0.15, lw=0)
        axes[0, col].axhline(100 * d.s2_acc.mean() - 5, color="grey", ls=":", lw=1)
        axes[1, col].axhline(-30, color="grey", ls=":", lw=1)
        axes[1, col].set_xlabel(xlabel)
    axes[0, 0].set_ylabel("accuracy (%)")
    axes[1, 0].set_ylabel("length vs System 2 (%)")
    axes[0, 0].set_title("Task arithmetic")
    axes[0, 1].set_title("TIES")
    axes[0, 0].legend(loc="lower right", fontsize=8)
    fig.suptitle("Organism ladder, design 2: merges of System 1 and System 2 (held-out 5 x 100, greedy)")
    path = figures.save_png(fig, path)
    plt.close(fig)
    return path


def shipped_table(sizes=None, bench: str = "org_levels") -> str:
    """Per-level accuracy, mean length and reflection of every shipped checkpoint, from its model card
    (``eval_org.json``, measured by ``cards.measure`` through the eval harness on CPU)."""
    import json

    from l2s_lib.organisms import ROLES, SHIPPED_SIZES, organism_path

    out = ["| size | model | L1 | L2 | L3 | L4 | L5 | all | mean length | reflective |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for size in sizes or SHIPPED_SIZES:
        for role in ROLES:
            card = json.loads((organism_path(size, role) / "eval_org.json").read_text())
            rows = {str(r["level"]): r for r in card["benchmarks"][bench]}
            out.append(f"| {size} | {role} | " + " | ".join(f"{rows[str(lv)]['correct']:.2f}" for lv in range(1, 6))
                       + f" | {rows['all']['correct']:.3f} | {rows['all']['length']:.1f} | {rows['all']['reflect']:.2f} |")
    return "\n".join(out)


def jobs_table(jobs_files: dict[str, str | Path]) -> str:
    """One row per job record of ``sweep.run_job`` (``jobs.jsonl``; ``jobs_files``: run name -> file): kernels,
    device, library versions, training seconds (per stage) and the first 12 hex digits of each stage's sha256."""
    import json

    out = ["| run | job | kernels | device, torch, transformers | training s (base / S1 / S2 / DPO / control) "
           "| sha256: base / system1 / system2 / dpo / system2_equal |", "|---|---|---|---|---|---|"]
    for run, path in jobs_files.items():
        for line in Path(path).read_text().splitlines():
            j = json.loads(line)
            env, st = j["environment"], j["stage_seconds"]
            roles = ("base", "system1", "system2", "dpo", "system2_equal")
            out.append(f"| {run} | {j['job']} | {'deterministic' if j['deterministic'] else 'default'} | "
                       f"{env['device_name']}, {env['versions'].get('torch')}, {env['versions'].get('transformers')} | "
                       f"{j['train_seconds']:.0f} ({' / '.join(f'{st[r]:.0f}' for r in roles if r in st)}) | "
                       + " / ".join(f"`{j['sha256'][r][:12]}`" for r in roles if r in j["sha256"]) + " |")
    return "\n".join(out)


def write_report(study_csv: str | Path, out_md: str | Path, title: str | None = None) -> Path:
    """The generated tables of a ladder sweep (bars, broken zone, control, per-level) and its figure, beside
    ``out_md``; ``title`` names the sweep (default: the CSV's folder)."""
    df = load(study_csv)
    out_md = Path(out_md)
    fig = ladder_figure(df, out_md.with_name("ladder_sweep.png"))
    models = ["system1", "system2", "dpo", "system2_forced", "ta 0.70", "ta 0.80", "ta 0.90",
              "ties k=0.65 a=1.00", "ties k=0.80 a=1.00"]
    parts = [f"# {title or 'Ladder sweep ' + Path(study_csv).parent.name}: generated tables", "",
             f"Generated by `python -m l2s_lib.organisms.report {study_csv}` from `study.csv` (rows of "
             "`sweep.FIELDS`; held-out study set, 100 problems per level, greedy, bf16 weights merged in fp32 on "
             "an H200). Figure: `" + fig.name + "`.", "",
             "## Fixed settings over training seeds (spreads)", "", spread_table(df), "",
             "## Bars per size and seed", "", bars_table(df), "",
             "## The broken alpha zone across the ladder", "", zone_table(df), "",
             "## Reflection: adaptive System 2 against the equal-rate control", "", control_table(df), "",
             "## Per level, mean over seeds", ""]
    for size in _sizes(df):
        parts += [f"### {size}", "", level_table(df[df["size"] == size], models), ""]
    parts += ["## Overall, every model and merge", "", overall_table(df), ""]
    out_md.write_text("\n".join(parts))
    return out_md


if __name__ == "__main__":  # python -m l2s_lib.organisms.report STUDY_CSV [OUT_MD]
    import sys

    csv_path = Path(sys.argv[1])
    print(write_report(csv_path, Path(sys.argv[2]) if len(sys.argv) > 2 else csv_path.with_name("report.md")))
