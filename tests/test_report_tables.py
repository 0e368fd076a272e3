import pandas as pd
import pytest

from l2s_lib.report import paper, tables


def _paper_summary(scale="7B"):
    """The paper's own per-benchmark numbers in the shape of an evaluation summary."""
    t = paper.per_benchmark(scale)
    return pd.DataFrame({"model": t["method"], "benchmark": t["benchmark"], "level": "all", "n": 0,
                         "accuracy": t["accuracy"], "mean_tokens": t["mean_length"], "reflective_pct": 0.0,
                         "keyword_freq": 0.0, "truncated_pct": 0.0})


def test_average_table_reproduces_the_papers_avg_column():
    avg = tables.average_table(_paper_summary("7B"), system2="DeepSeek-R1-7B").set_index("model")
    ref = paper.read_table("table1_7b_avg").set_index("method")
    for method in ["Task Arithmetic", "Ties-Merging", "Average Merging", "DARE", "AIM-Ties", "Sens-Merging"]:
        assert avg.loc[method, "length_change_vs_system2_pct"] == pytest.approx(
            ref.loc[method, "length_change_vs_system2_pct"], abs=0.051)
        assert avg.loc[method, "avg_accuracy"] == pytest.approx(ref.loc[method, "avg_accuracy"], abs=0.051)


def test_paper_style_layout():
    t = tables.paper_style(_paper_summary("7B"), system2="DeepSeek-R1-7B",
                           models=["DeepSeek-R1-7B", "Task Arithmetic"], benchmarks=["GSM8K", "AIME24"])
    assert list(t.columns) == ["GSM8K", "AIME24", "Avg.", "length change"]
    assert t.loc["Task Arithmetic", "GSM8K"] == "90.5 (618)"
    assert t.loc["DeepSeek-R1-7B", "length change"] == "-"
    with pytest.raises(ValueError, match="System 2 model 'nope'"):
        tables.average_table(_paper_summary(), system2="nope")


def test_by_level_orders_levels_numerically():
    s = pd.DataFrame({"model": ["m"] * 4, "benchmark": ["b"] * 4, "level": ["10", "2", "1", "all"],
                      "accuracy": [1.0, 2.0, 3.0, 2.0]})
    t = tables.by_level(s, "b")
    assert list(t.columns) == ["1", "2", "10", "all"]
    with pytest.raises(ValueError, match="not in the summary"):
        tables.by_level(s, "x")
