"""Adaptive length (notebook 03): level tables, rank correlations, the paper's dataset-level ordering, figure, text."""

import math

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from l2s_lib.report import figures
from l2s_lib.studies import adaptive_length as al


def _records():
    """S2 grows 10 tokens a level, S1 2 tokens, a merge that grows, a merge that shrinks; 4 samples a level."""
    rows = []
    slopes = {"System 1": (8, 2), "System 2": (40, 10), "TA": (20, 6), "Flat": (30, -1)}
    for model, (base, slope) in slopes.items():
        for level in range(1, 6):
            for k in range(4):
                rows.append({"model": model, "benchmark": "org_levels", "level": level, "n_tokens": base + slope * level + k})
    return pd.DataFrame(rows)


def _summary(records):
    from l2s_lib import metrics

    recs = records.assign(correct=True, response="", finish_reason="stop")
    return metrics.summarize(recs)


def test_level_lengths_and_shortening():
    s = _summary(_records())
    lv = al.level_lengths(s, "org_levels", models=["System 2", "TA"])
    assert list(lv["model"].unique()) == ["System 2", "TA"] and lv["level"].tolist()[:5] == [1, 2, 3, 4, 5]
    assert lv.set_index(["model", "level"]).loc[("System 2", 1), "mean_tokens"] == pytest.approx(51.5)
    cut = al.shortening_by_level(lv, "System 2")
    assert (cut.loc["System 2"] == 0).all()
    assert cut.loc["TA", 1] == pytest.approx((27.5 / 51.5 - 1) * 100)
    assert al.level_table(lv).shape == (2, 5)
    with pytest.raises(ValueError, match="not in the summary"):
        al.level_lengths(s, "math500")
    flat = s.assign(level="all")
    with pytest.raises(ValueError, match="no difficulty levels"):
        al.level_lengths(flat, "org_levels")
    with pytest.raises(ValueError, match="System 2 model"):
        al.shortening_by_level(lv, "S2")


def test_level_correlations():
    c = al.level_correlations(_records(), "org_levels").set_index("model")
    assert c.loc["System 2", "rho_of_means"] == pytest.approx(1.0)
    assert c.loc["System 2", "rising_steps"] == 1.0 and c.loc["Flat", "rising_steps"] == 0.0
    assert c.loc["Flat", "rho_of_means"] == pytest.approx(-1.0)
    # per-sample rho is below 1 when the spread inside a level overlaps the next level
    assert 0.5 < c.loc["System 1", "rho"] < c.loc["System 2", "rho"] <= 1.0
    assert c.loc["System 2", "growth"] == pytest.approx((90 + 1.5) / (50 + 1.5))
    with pytest.raises(ValueError, match="no records"):
        al.level_correlations(_records(), "org_easy")


def test_the_papers_difficulty_order_is_computed_from_table1():
    from l2s_lib.report import paper

    order = al.difficulty_order(paper.per_benchmark("7B"))
    assert order[:2] == ["GSM8K", "MATH500"] and order[-1] == "AIME24" and len(order) == 6
    t = al.paper_benchmark_lengths("7B", ["Task Arithmetic", "Iso-C"])
    assert list(t["model"].unique()) == ["Qwen2.5-Math-7B", "DeepSeek-R1-7B", "DPO", "Task Arithmetic"]
    assert set(t["role"]) == {"system1", "system2", "dpo", "merge"}
    ta = t[t["model"] == "Task Arithmetic"]
    assert ta["difficulty_rank"].tolist() == [1, 2, 3, 4, 5, 6]
    assert ta.iloc[0]["mean_tokens"] == pytest.approx(617.5)  # Table 1: TA on GSM8K
    corr = al.benchmark_correlations(t).set_index("model")
    assert -1 <= corr.loc["Task Arithmetic", "rho"] <= 1 and corr.loc["Task Arithmetic", "n_benchmarks"] == 6
    with pytest.raises(ValueError, match="not in the table"):
        al.benchmark_lengths(paper.per_benchmark("7B"), ["nobody"], model="method", length="mean_length")


def test_model_colors_keep_role_colours():
    c = al.model_colors({"System 1": "system1", "System 2": "system2", "A": "merge", "B": "merge"})
    assert c["System 1"] == figures.ROLE_COLORS["system1"] and c["A"] != c["B"]
    assert c["A"] not in (figures.ROLE_COLORS["system1"], figures.ROLE_COLORS["system2"])


def test_conclusion_follows_the_numbers():
    recs = _records()
    s = _summary(recs)
    lv = al.level_lengths(s, "org_levels")
    corr = al.level_correlations(recs, "org_levels")
    paper_corr = al.benchmark_correlations(al.paper_benchmark_lengths("7B"))
    ours_b = al.benchmark_lengths(s[s.level == "all"].assign(benchmark="org_levels"))
    text = al.conclusion(corr, al.shortening_by_level(lv, "System 2"), paper_corr, "System 1", "System 2",
                         ["TA", "Flat"], ours_corr=al.benchmark_correlations(ours_b))
    assert "Across our 1 benchmarks" in text
    assert text.startswith("**Verdict (organism world): the paper's adaptive-length claim holds for 1 of 2 merges**")
    assert "Merges that adapt: TA." in text and "In the paper" in text
    none = al.conclusion(corr, al.shortening_by_level(lv, "System 2"), paper_corr, "System 1", "System 2", ["Flat"])
    assert "holds for none of the 1 merges" in none
    with pytest.raises(ValueError, match="no merge"):
        al.conclusion(corr, al.shortening_by_level(lv, "System 2"), paper_corr, "System 1", "System 2", ["X"])


def test_figure_has_the_paper_panel_beside_ours(tmp_path):
    recs = _records()
    s = _summary(recs)
    ours_b = al.benchmark_lengths(s[s.level == "all"].assign(benchmark="org_levels"))
    fig = al.fig_adaptive_length(al.level_lengths(s, "org_levels"), ours_b, al.paper_benchmark_lengths("7B"),
                                 {"System 1": "system1", "System 2": "system2", "TA": "merge", "Flat": "merge"},
                                 "org_levels")
    assert len(fig.axes) == 3 and "Paper" in fig.axes[0].get_title()
    assert len(fig.axes[0].get_lines()) == 3 + 10  # S1, S2, DPO and the paper's ten merges
    assert len(fig.axes[2].get_lines()) == 4
    out = figures.save(fig, "fig2a_adaptive_length", tmp_path)
    assert all(p.is_file() for p in out)
    plt.close(fig)


def test_rounded_keeps_nan():
    df = al.rounded(pd.DataFrame({"a": [1.23456, math.nan], "b": ["x", "y"]}), 2)
    assert df["a"].iloc[0] == 1.23 and math.isnan(df["a"].iloc[1]) and df["b"].tolist() == ["x", "y"]


def test_organism_benchmarks_are_ranked_by_mean_level():
    s = pd.concat([
        pd.DataFrame({"model": "A", "benchmark": "hard", "level": ["5", "all"], "n": [30, 30],
                      "accuracy": [90.0, 90.0], "mean_tokens": [50.0, 50.0]}),
        pd.DataFrame({"model": "A", "benchmark": "easy", "level": ["1", "2", "all"], "n": [10, 10, 20],
                      "accuracy": [10.0, 10.0, 10.0], "mean_tokens": [5.0, 7.0, 6.0]}),
    ])
    order = al.mean_level_order(s)
    assert order == ["easy", "hard"]  # by level, although "hard" has the higher accuracy
    top = s[s.level == "all"]
    assert al.order_of(al.benchmark_lengths(top, order=order)) == ["easy", "hard"]
    assert al.order_of(al.benchmark_lengths(top)) == ["hard", "easy"]  # by accuracy
    assert al.mean_level_order(pd.concat([s, top.assign(benchmark="gsm8k")])) is None
    with pytest.raises(ValueError, match="does not list"):
        al.benchmark_lengths(top, order=["easy"])


def test_too_few_levels_give_an_inconclusive_verdict_not_a_negative_one():
    recs = _records()
    one_level = recs[recs.level == 1]  # what LIMIT=20 gave on the level-sorted org_levels before spreading
    lv = al.level_lengths(_summary(one_level), "org_levels")
    corr = al.level_correlations(one_level, "org_levels")
    paper_corr = al.benchmark_correlations(al.paper_benchmark_lengths("7B"))
    text = al.conclusion(corr, al.shortening_by_level(lv, "System 2"), paper_corr, "System 1", "System 2", ["TA"])
    assert text.startswith("**Verdict (organism world): inconclusive**")
    assert "1 difficulty level (at least 3" in text and "holds for none" not in text
    two = recs[recs.level <= 3]
    ok = al.conclusion(al.level_correlations(two, "org_levels"),
                       al.shortening_by_level(al.level_lengths(_summary(two), "org_levels"), "System 2"),
                       paper_corr, "System 1", "System 2", ["TA"])
    assert "inconclusive" not in ok
