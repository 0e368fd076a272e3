import pandas as pd

from l2s_lib.report import claims, paper, tables


def _paper_avg():
    t = paper.per_benchmark("7B")
    s = pd.DataFrame({"model": t["method"], "benchmark": t["benchmark"], "level": "all", "n": 0,
                      "accuracy": t["accuracy"], "mean_tokens": t["mean_length"], "reflective_pct": 0.0,
                      "keyword_freq": 0.0, "truncated_pct": 0.0})
    return tables.average_table(s, "DeepSeek-R1-7B"), t[t.role == "merge"]["method"].unique()


def test_the_papers_own_table_passes_its_claim():
    avg, merges = _paper_avg()
    v = claims.verdicts(avg, "DeepSeek-R1-7B", merges).set_index("model")
    # Table 1: TA is 1.0 point below R1-7B and 48.7% shorter; DARE is 7.2 below and 30.6% shorter
    assert v.loc["Task Arithmetic", "verdict"] == "L2S"
    assert v.loc["Sens-Merging", "verdict"] == "L2S"
    assert v.loc["DARE", "verdict"] == "shorter, less accurate"
    text = claims.merge_methods_conclusion(v.reset_index(), world="paper")
    assert text.startswith("**Verdict (paper world): the paper's claim holds for")
    assert "Task Arithmetic" in text and "DARE" in text


def test_a_world_where_nothing_works_says_so():
    avg = pd.DataFrame({"model": ["S2", "M1", "M2"], "avg_accuracy": [90.0, 50.0, 89.0],
                        "length_change_vs_system2_pct": [0.0, -60.0, -10.0]})
    v = claims.verdicts(avg, "S2", ["M1", "M2"])
    assert list(v.verdict) == ["shorter, less accurate", "accurate, not much shorter"]
    text = claims.merge_methods_conclusion(v)
    assert "does not hold for any of the 2" in text and "most accurate merge is M2" in text


def test_monotonic_trend():
    assert claims.monotonic_trend([1, 2, 3]) == 1.0
    assert claims.monotonic_trend([3, 2, 4], increasing=False) == 0.5
