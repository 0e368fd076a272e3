"""Anatomy of the task vector tau = System 2 - System 1, and what it predicts for the SVD merge methods.

Section 4.3 of the paper explains the weaker showing of the SVD methods (LoRE-Merging, Twin-Merging) by the
task vector of a long-CoT fine-tune not being low-rank. ``l2s_lib.analysis.task_vectors`` measures tau per
tensor (norms, sparsity, effective rank); this module adds what a reader needs to judge the hypothesis:

- the singular values of every 2-D tau (one SVD per tensor, on any device), from which the task-vector
  module's spectrum statistics are taken, and a **noise reference**: the same statistics for a Gaussian matrix
  of the same shape (a full-rank matrix with no structure: "low-rank" means well below it);
- what each SVD method's spectral step does to tau, computed from its singular values ``s`` (one model to
  merge, base = System 1, settings from the paper configs at the study's scale):

  * **Twin** (``M = TA(lambda) + (1 - lambda) P_r(tau)``, ``r = floor(rank_ratio * min(m, n))``): the share of
    tau's energy in its top ``r`` directions, ``sum_{i<r} s_i^2 / sum s_i^2`` (what is added back at full
    strength; the rest stays at TA's ``lambda``);
  * **LoRE-TA** (``M = (A+B)/2 + (2 alpha - 1) SVT_t(tau/2)``, ``t`` relative to ``sigma_max``): the share of
    energy the soft threshold removes, ``sum min(s_i, t)^2 / sum s_i^2``;
  * **Iso-C** (``M = A + alpha * mean(s) U V^T``): the relative squared error of flattening the spectrum,
    ``sum (s_i - mean s)^2 / sum s_i^2``;

- the SVD methods' results from notebook 01 beside Task Arithmetic's, and a generated conclusion.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from l2s_lib.analysis import task_vectors as tv
from l2s_lib.pipeline import catalog
from l2s_lib import show
from l2s_lib.report import claims, plots
from l2s_lib.studies import folder
from l2s_lib.report.figures import set_style

#: The SVD methods of the compendium and the data-free method they are compared with.
SVD_METHODS = ("lore", "twin", "iso_c")
REFERENCE_METHOD = "task_arithmetic"


def singular_values(system1: str | Path, system2: str | Path, device: str = "cpu",
                    progress: bool = True) -> dict[str, torch.Tensor]:
    """The singular values (descending, fp32, on CPU) of tau for every 2-D tensor the two checkpoints share.

    Streams one tensor pair at a time (``checkpoints.open_model``), so it runs on checkpoints larger than memory.
    """
    from l2s_lib.checkpoints import open_model

    a_ck, b_ck = open_model(system1), open_model(system2)
    shared = set(b_ck.tensor_names())
    names = [n for n in a_ck.tensor_names() if n in shared and len(a_ck.info(n).shape) == 2]
    out = {}
    for name in tqdm(names, desc="spectra", disable=not progress):
        a = a_ck.get_tensor(name).to(device, torch.float32)
        b = b_ck.get_tensor(name).to(device, torch.float32)
        if a.shape != b.shape:
            raise ValueError(f"{name}: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")
        out[name] = torch.linalg.svdvals(b - a).cpu()
    return out


def svd_settings(scale: str = "7b") -> dict[str, float]:
    """The SVD methods' spectral settings in the paper configs at ``scale``: LoRE's relative threshold and
    Twin's rank ratio (``catalog.paper_config``; defaults of the method where a config leaves them out)."""
    from l2s_lib.merge.registry import get_method

    def value(key: str, param: str) -> float:
        cfg = catalog.paper_config(key, scale)
        given = (cfg.get("parameters") or {}).get(param)
        if given is not None:
            return float(given)
        return float(next(p.default for p in get_method(key).params if p.name == param))

    if (catalog.paper_config("lore", scale).get("parameters") or {}).get("threshold_mode", "relative") != "relative":
        raise ValueError("the LoRE config uses an absolute threshold; this analysis reads relative thresholds only")
    return {"lore_threshold": value("lore", "threshold"), "twin_rank_ratio": value("twin", "rank_ratio")}


def spectral_effects(s: torch.Tensor, lore_threshold: float, twin_rank_ratio: float) -> dict[str, float]:
    """What the SVD methods' spectral steps do to a tau with singular values ``s`` (see the module docstring).

    Returns ``twin_topr_energy``, ``lore_removed_energy``, ``iso_c_error`` (fractions of ``sum s^2``) and
    ``twin_rank`` (the rank Twin keeps).
    """
    s = s.double()
    energy = float(s.pow(2).sum())
    r = int(twin_rank_ratio * len(s))  # floor, as methods_lowrank.twin_rank
    if energy <= 0:
        return {"twin_rank": r, "twin_topr_energy": 0.0, "lore_removed_energy": 0.0, "iso_c_error": 0.0}
    t = lore_threshold * float(s[0])
    return {
        "twin_rank": r,
        "twin_topr_energy": float(s[:r].pow(2).sum()) / energy,
        "lore_removed_energy": float(s.clamp_max(t).pow(2).sum()) / energy,
        "iso_c_error": float((s - s.mean()).pow(2).sum()) / energy,
    }


def spectral_table(svals: Mapping[str, torch.Tensor], scale: str = "7b") -> pd.DataFrame:
    """One row per 2-D tensor: kind, layer, the task-vector module's spectrum statistics and the SVD methods'
    spectral effects (settings of ``scale``)."""
    cfg = svd_settings(scale)
    rows = []
    for name, s in svals.items():
        # spectrum_stats takes a matrix; diag(s) has exactly the singular values s, so the statistics are the
        # task-vector module's own definitions without a second SVD of tau.
        stats = tv.spectrum_stats(torch.diag(s))
        rows.append({"tensor": name, "kind": tv.tensor_kind(name), "layer": tv.layer_index(name), **stats,
                     "effective_rank_frac": stats["effective_rank"] / stats["full_rank"],
                     **spectral_effects(s, cfg["lore_threshold"], cfg["twin_rank_ratio"])})
    return pd.DataFrame(rows)


def noise_reference(shapes: Sequence[tuple[int, int]], seed: int = 0) -> pd.DataFrame:
    """Spectrum statistics of one seeded Gaussian matrix per distinct shape (the full-rank, structure-free
    reference), columns ``rows, cols, effective_rank_frac, rank_frac_50, rank_frac_90``."""
    rows = []
    for shape in sorted(set(tuple(int(x) for x in sh) for sh in shapes)):
        g = torch.Generator().manual_seed(seed)
        stats = tv.spectrum_stats(torch.randn(shape, generator=g))
        rows.append({"rows": shape[0], "cols": shape[1],
                     "effective_rank_frac": stats["effective_rank"] / stats["full_rank"],
                     "rank_frac_50": stats["rank_frac_50"], "rank_frac_90": stats["rank_frac_90"]})
    return pd.DataFrame(rows)


def tensor_shapes(model: str | Path, names: Sequence[str]) -> list[tuple[int, int]]:
    """Shapes of ``names`` in a checkpoint (headers only)."""
    from l2s_lib.checkpoints import open_model

    ck = open_model(model)
    return [tuple(ck.info(n).shape) for n in names]


def kind_summary(tensors: pd.DataFrame, spectra: pd.DataFrame, noise: pd.DataFrame,
                 shapes: Mapping[str, tuple[int, int]]) -> pd.DataFrame:
    """Per tensor kind: relative norm of tau (sqrt of summed squares), top-20% mass (numel-weighted), and for
    matrices the median effective-rank fraction, rank fraction for 90% energy, the noise reference of the same
    shapes, and the SVD methods' median spectral effects. Last row ``all 2-D``: medians over every matrix."""
    t = tensors.assign(tau_sq=tensors["tau_norm"] ** 2, base_sq=tensors["base_norm"] ** 2,
                       mass=tensors["top20_mass"] * tensors["numel"])
    g = t.groupby("kind", sort=False).agg(n_tensors=("tensor", "size"), tau_sq=("tau_sq", "sum"),
                                          base_sq=("base_sq", "sum"), mass=("mass", "sum"), numel=("numel", "sum"))
    out = pd.DataFrame({"n_tensors": g["n_tensors"], "relative_norm": np.sqrt(g["tau_sq"] / g["base_sq"]),
                        "top20_mass": g["mass"] / g["numel"]})
    ref = noise.set_index(["rows", "cols"])
    sp = spectra.assign(noise_rank_frac_90=[ref.loc[shapes[n], "rank_frac_90"] for n in spectra["tensor"]],
                        noise_effective_rank_frac=[ref.loc[shapes[n], "effective_rank_frac"] for n in spectra["tensor"]])
    cols = ["effective_rank_frac", "noise_effective_rank_frac", "rank_frac_90", "noise_rank_frac_90",
            "twin_topr_energy", "lore_removed_energy", "iso_c_error"]
    med = sp.groupby("kind", sort=False)[cols].median()
    out = out.join(med, how="left")
    allrow = pd.DataFrame([sp[cols].median()], index=["all 2-D"])
    allrow["n_tensors"] = len(sp)
    mats = t[t["ndim"] == 2]
    allrow["relative_norm"] = float(np.sqrt(mats["tau_sq"].sum() / mats["base_sq"].sum()))
    allrow["top20_mass"] = float(mats["mass"].sum() / mats["numel"].sum())
    out = pd.concat([out, allrow[out.columns]])
    out.index.name = "kind"
    return out.reset_index()


def spectrum_curves(svals: Mapping[str, torch.Tensor], kinds: Sequence[str] | None = None) -> pd.DataFrame:
    """Normalised spectra for plotting: per tensor, ``rank_frac`` = (i+1)/n and ``cum_energy`` (share of sum s^2
    in the top i+1 directions); ``kinds`` restricts to some tensor kinds."""
    rows = []
    for name, s in svals.items():
        kind = tv.tensor_kind(name)
        if kinds is not None and kind not in kinds:
            continue
        e = s.double().pow(2)
        cum = (torch.cumsum(e, 0) / e.sum()).numpy() if e.sum() > 0 else np.zeros(len(s))
        rows.append(pd.DataFrame({"tensor": name, "kind": kind, "layer": tv.layer_index(name),
                                  "rank_frac": np.arange(1, len(s) + 1) / len(s), "cum_energy": cum}))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(
        columns=["tensor", "kind", "layer", "rank_frac", "cum_energy"])


def fig_anatomy(layers: pd.DataFrame, curves: pd.DataFrame, spectra: pd.DataFrame, noise_curve: pd.DataFrame,
                twin_rank_ratio: float, title: str = "This run") -> plt.Figure:
    """Three panels: tau's relative norm per layer and kind (heatmap), cumulative spectral energy of every
    matrix (median per kind, with a Gaussian matrix for reference and Twin's kept rank marked), and the
    effective-rank fraction per layer and kind."""
    set_style()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.3), width_ratios=[1.1, 1, 1.1])
    heat = layers.pivot(index="kind", columns="layer", values="relative_norm")
    plots.heatmap(axes[0], heat, f"{title}: ||tau|| / ||W_S1|| per layer", fmt=".2f")
    ax = axes[1]
    grid = np.linspace(0, 1, 101)[1:]
    for kind, part in curves.groupby("kind", sort=False):
        interp = np.stack([np.interp(grid, t["rank_frac"], t["cum_energy"]) for _, t in part.groupby("tensor")])
        ax.plot(grid, np.median(interp, 0), label=kind)
    ax.plot(noise_curve["rank_frac"], noise_curve["cum_energy"], "k--", lw=1, label="Gaussian (reference)")
    ax.axvline(twin_rank_ratio, color="grey", lw=0.8, ls=":")
    ax.text(twin_rank_ratio, 0.03, " Twin rank", fontsize=7, color="grey")
    ax.set_xlabel("fraction of singular directions")
    ax.set_ylabel("share of ||tau||^2 (median per kind)")
    ax.set_title("cumulative spectral energy")
    ax.legend(fontsize=6)
    eff = spectra.dropna(subset=["layer"]).pivot_table(index="kind", columns="layer", values="effective_rank_frac")
    eff.columns = [int(c) for c in eff.columns]
    plots.heatmap(axes[2], eff, "effective rank / full rank", fmt=".2f", cmap="mako")
    return fig


def noise_curve(shape: tuple[int, int], seed: int = 0) -> pd.DataFrame:
    """Cumulative spectral energy of one seeded Gaussian matrix of ``shape`` (``rank_frac``, ``cum_energy``)."""
    g = torch.Generator().manual_seed(seed)
    return spectrum_curves({"gaussian": torch.linalg.svdvals(torch.randn(shape, generator=g))})


#: Columns of ``svd_methods_vs_ta``.
VERSUS_COLUMNS = ["method", "key", "accuracy_gap", "length_change_pct", "accuracy_vs_ta", "length_vs_ta_points"]


def svd_methods_vs_ta(average: pd.DataFrame, system2: str = "System 2") -> pd.DataFrame:
    """Notebook 01's ``average`` table reduced to the SVD methods and Task Arithmetic: accuracy gap to System 2
    (points), length change vs System 2 (%), and the differences to Task Arithmetic."""
    a = average.set_index("model")
    label = {k: catalog.METHODS[k].label for k in (REFERENCE_METHOD, *SVD_METHODS)}
    if label[REFERENCE_METHOD] not in a.index or system2 not in a.index:
        raise ValueError(f"notebook 01's table lacks {label[REFERENCE_METHOD]!r} or {system2!r}")
    s2 = a.loc[system2, "avg_accuracy"]
    ta = a.loc[label[REFERENCE_METHOD]]
    rows = []
    for key, name in label.items():
        if name not in a.index:
            continue
        r = a.loc[name]
        rows.append({"method": name, "key": key, "accuracy_gap": r["avg_accuracy"] - s2,
                     "length_change_pct": r["length_change_vs_system2_pct"],
                     "accuracy_vs_ta": r["avg_accuracy"] - ta["avg_accuracy"],
                     "length_vs_ta_points": r["length_change_vs_system2_pct"] - ta["length_change_vs_system2_pct"]})
    return pd.DataFrame(rows, columns=VERSUS_COLUMNS)


def versus_text(versus: pd.DataFrame | None, digits: int = 1) -> str:
    """``svd_methods_vs_ta`` as a rounded text table, or a line saying there is nothing to compare."""
    if versus is None:
        return "no comparison"
    return versus.round(digits).to_string(index=False)


def conclusion(kinds: pd.DataFrame, versus: pd.DataFrame | None, settings: Mapping[str, float],
               world: str = "organism", low_rank_frac90: float = claims.LOW_RANK_FRAC90,
               acc_tol: float = claims.SVD_ACC_TOL) -> str:
    """Markdown: is tau low-rank here, and do the SVD methods fare as the paper's hypothesis predicts?

    The hypothesis (Section 4.3): tau is not low-rank, so methods that keep or reshape a low-rank part of it
    (LoRE, Twin, Iso-C) lose to plain task arithmetic. ``kinds``: ``kind_summary``; ``versus``:
    ``svd_methods_vs_ta`` (None when notebook 01 has not been run).
    """
    k = kinds.set_index("kind").loc["all 2-D"]
    low_rank = k["rank_frac_90"] <= low_rank_frac90
    text = (f"**Task vector ({world} world): tau is {'low-rank' if low_rank else 'not low-rank'}**: the median matrix "
            f"needs {100 * k['rank_frac_90']:.0f}% of its singular directions for 90% of its energy (a Gaussian "
            f"matrix of the same shape: {100 * k['noise_rank_frac_90']:.0f}%; criterion for low-rank: at most "
            f"{100 * low_rank_frac90:.0f}%), effective rank {100 * k['effective_rank_frac']:.0f}% of full "
            f"(Gaussian: {100 * k['noise_effective_rank_frac']:.0f}%), and its largest 20% entries hold "
            f"{100 * k['top20_mass']:.0f}% of its L1 mass. ")
    text += (f"At the paper's settings Twin keeps the top {100 * settings['twin_rank_ratio']:.0f}% of directions, "
             f"which carry {100 * k['twin_topr_energy']:.0f}% of tau's energy; LoRE's threshold "
             f"({settings['lore_threshold']:g} of sigma_max) removes {100 * k['lore_removed_energy']:.1f}% of it "
             f"(so LoRE-TA stays close to TA); flattening the spectrum (Iso-C) changes tau by "
             f"{100 * k['iso_c_error']:.0f}% of its energy (median matrix). ")
    if versus is None or len(versus) <= 1:
        text += ("Notebook 01's results for the SVD methods and Task Arithmetic were not found (run "
                 "`01_merge_methods` with the same CONFIG first), so whether the SVD methods fare worse than task "
                 "arithmetic is not judged here.")
        return text.strip()
    svd = versus[versus["key"] != REFERENCE_METHOD]
    worse = svd[svd["accuracy_vs_ta"] < -acc_tol]
    text += ("Against Task Arithmetic (notebook 01): " + ", ".join(
        f"{r.method} {r.accuracy_vs_ta:+.1f} points, {r.length_vs_ta_points:+.1f} length points"
        for r in svd.itertuples()) + ". ")
    if not low_rank and len(worse):
        verdict = (f"consistent with the paper's hypothesis: tau is not low-rank and {len(worse)} of {len(svd)} SVD "
                   f"methods lose more than {acc_tol:g} points to TA ({', '.join(worse['method'])})")
    elif not low_rank:
        verdict = (f"not supported here: tau is not low-rank, yet no SVD method loses more than {acc_tol:g} points "
                   f"to TA")
    elif len(worse):
        verdict = (f"not supported here: tau is low-rank, yet {len(worse)} of {len(svd)} SVD methods lose more than "
                   f"{acc_tol:g} points to TA ({', '.join(worse['method'])}), so something other than rank explains "
                   f"their loss")
    else:
        verdict = (f"consistent with the paper's hypothesis read the other way: tau is low-rank and the SVD methods "
                   f"stay within {acc_tol:g} points of TA")
    return (text + f"**Verdict: {verdict}.**").strip()


@dataclass
class Anatomy:
    """Everything notebook 06 draws: per-tensor norms and sparsity (``tensors``, from the task-vector module),
    per-matrix spectra statistics and SVD-method effects (``spectra``), the Gaussian reference per shape
    (``noise``), each matrix's shape, its singular values, and the SVD methods' settings."""

    tensors: pd.DataFrame
    spectra: pd.DataFrame
    noise: pd.DataFrame
    shapes: dict
    svals: dict
    settings: dict

    def kinds(self) -> pd.DataFrame:
        """``kind_summary`` of this anatomy."""
        return kind_summary(self.tensors, self.spectra, self.noise, self.shapes)

    def typical_shape(self) -> tuple[int, int]:
        """The most frequent matrix shape (ties: the first seen), for the Gaussian reference curve."""
        return Counter(self.shapes.values()).most_common(1)[0][0]


def measure(system1: str | Path, system2: str | Path, scale: str = "7b", device: str = "cpu", seed: int = 0,
            progress: bool = True) -> Anatomy:
    """Measure tau = ``system2`` - ``system1``: one streaming pass for norms and sparsity
    (``task_vectors.anatomy`` without spectra), one for the singular values (on ``device``)."""
    tensors = tv.anatomy(system1, system2, spectra=False, progress=progress)
    svals = singular_values(system1, system2, device=device, progress=progress)
    spectra = spectral_table(svals, scale)
    shapes = dict(zip(spectra["tensor"], tensor_shapes(system1, list(spectra["tensor"]))))
    return Anatomy(tensors, spectra, noise_reference(list(shapes.values()), seed=seed), shapes, svals,
                   svd_settings(scale))


def svd_comparison(inputs: Path, system2: str = "System 2") -> tuple[pd.DataFrame, str]:
    """``svd_methods_vs_ta`` of notebook 01's ``average`` table in the results folder ``inputs`` (this study's
    declared input), and a line saying where it came from. ``FileNotFoundError`` (naming the run to make first)
    when notebook 01 has not run; a table without Task Arithmetic or ``system2`` gives no rows and says why."""
    average = folder.read(inputs, "average")
    note = f"read notebook 01's results (config '{Path(inputs).name}')"
    try:
        return svd_methods_vs_ta(average, system2), note
    except ValueError as exc:
        return pd.DataFrame(columns=VERSUS_COLUMNS), f"{note}, but they cannot be compared: {exc}"


# ---------------------------------------------------------------------------------------------------------------
# The study: compute writes the result files; tables, figures and verdict read them
# ---------------------------------------------------------------------------------------------------------------

STUDY = "06_task_vectors"
#: Notebook 01's results (its run of the same CONFIG) give the SVD methods' accuracy against Task Arithmetic.
INPUTS: tuple[str, ...] = ("01_merge_methods",)
FIGURES = ("fig6_task_vectors",)


def compute(params: Mapping[str, Any]) -> list[Path]:
    """Measure tau of the pair of ``params`` and compare the SVD methods with TA on notebook 01's results; write
    ``tensors``, ``spectra``, ``kinds`` (``kind_summary``), ``curves`` (every matrix's cumulative spectral
    energy), ``noise_curve`` (the Gaussian reference), ``svd_versus_ta`` and ``settings`` (the SVD settings).

    Notebook 01's results are read first, so a missing input fails before the SVDs run."""
    from l2s_lib.report import results

    p = dict(params)
    out = folder.of(STUDY, p)
    pair = catalog.resolve_pair(p["SIZE"], p["SYSTEM1"], p["SYSTEM2"])
    versus, note = svd_comparison(results.result_dir(INPUTS[0], p["CONFIG"]), pair.label2)
    tau = measure(pair.system1, pair.system2, scale=p["SCALE"], device=p["DEVICE"], seed=p["SEED"])
    files = {"tensors": tau.tensors, "spectra": tau.spectra, "kinds": tau.kinds(),
             "curves": spectrum_curves(tau.svals), "noise_curve": noise_curve(tau.typical_shape()),
             "svd_versus_ta": versus}
    return [folder.write(out, df, name, p) for name, df in files.items()] + [
        folder.write_settings(out, p, world=pair.world, scale=p["SCALE"], versus_note=note, **tau.settings)]


def _settings(d: Path) -> dict:
    s = folder.settings(d)
    return s | {"svd": {k: float(s[k]) for k in ("lore_threshold", "twin_rank_ratio")}}


def tables(d: Path) -> dict[str, show.Table]:
    """``kinds``: the anatomy of tau per tensor kind (captioned with the SVD settings); ``svd_versus_ta``: the
    SVD methods against Task Arithmetic on notebook 01's results (captioned with where they came from)."""
    s = _settings(d)
    return {"kinds": show.Table(folder.read(d, "kinds").round(3), f"SVD settings at scale {s['scale']}: {s['svd']}",
                                index=False),
            "svd_versus_ta": show.Table(folder.read(d, "svd_versus_ta").round(1), s["versus_note"], index=False)}


def figures(d: Path) -> folder.Figures:
    """``fig6_task_vectors``: tau's norm per layer, its cumulative spectral energy, its effective rank per layer."""
    def fig6():
        s = _settings(d)
        return fig_anatomy(tv.by_layer(folder.read(d, "tensors")), folder.read(d, "curves"), folder.read(d, "spectra"),
                           folder.read(d, "noise_curve"), s["svd"]["twin_rank_ratio"], title=f"This run ({s['world']})")

    return folder.Figures({"fig6_task_vectors": fig6})


def verdict(d: Path) -> str:
    """Markdown: is tau low-rank here, and do the SVD methods fare as the paper's hypothesis predicts?"""
    s = _settings(d)
    return conclusion(folder.read(d, "kinds"), folder.read(d, "svd_versus_ta"), s["svd"], world=s["world"])
