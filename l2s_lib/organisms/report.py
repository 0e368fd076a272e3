"""Markdown tables of a merge-study CSV (``sweep.FIELDS`` columns), for ``data/organisms/README.md``."""

from __future__ import annotations

from pathlib import Path


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


def bar_check(df, acc_tol: float = 0.05, shorter: float = 0.30) -> str:
    """For each (style, size, seed): merges within ``acc_tol`` of System 2 that are ``shorter`` shorter."""
    d = df[df.level == "all"]
    lines = []
    for (style, size, seed), g in d.groupby(["style", "size", "seed"]):
        s2 = g[g.model == "system2"].iloc[0]
        m = g[g.model.isin(["ta", "ties"])]
        ok = m[(m.correct >= s2.correct - acc_tol) & (m.length <= (1 - shorter) * s2.length)]
        short = m[m.length <= (1 - shorter) * s2.length]
        best = short.sort_values("correct").iloc[-1] if len(short) else None
        lines.append(f"- {style} {size} seed {seed}: {len(ok)} merge(s) meet the bar; best merge >= "
                     f"{int(shorter * 100)}% shorter: "
                     + (f"{label(best)} at {best.correct:.3f} vs System 2 {s2.correct:.3f}" if best is not None
                        else "none"))
    return "\n".join(lines)
