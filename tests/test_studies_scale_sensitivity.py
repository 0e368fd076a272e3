import pandas as pd
import pytest

from l2s_lib.errors import ConfigError
from l2s_lib.pipeline import catalog
from l2s_lib.studies import scale, sensitivity


def test_ladder_sizes_are_a_list_not_a_comma_string():
    with pytest.raises(ConfigError, match="must be a list"):
        scale.ladder_pairs("1m,6m")
    assert list(scale.ladder_pairs(["1m"])) == ["1m"]


def test_paper_average_tables_follow_the_papers_scale_story():
    t = scale.paper_average_tables().set_index(["scale", "model"])
    # shared benchmarks only (GSM8K, MATH500, AIME24): TA shortens ~48% at 7B and only ~5% at 14B
    assert t.loc[("7B", "Task Arithmetic"), "length_change_vs_system2_pct"] == pytest.approx(-47.7, abs=0.1)
    assert t.loc[("14B", "Task Arithmetic"), "length_change_vs_system2_pct"] == pytest.approx(-5.0, abs=0.1)
    assert t.loc[("32B", "DeepSeek-R1-32B"), "accuracy_gap"] == 0


def _ladder():
    rows = []
    for size, n, gap, change in (("a", 1e6, -30.0, -60.0), ("b", 6e6, -10.0, -40.0)):
        rows += [{"size": size, "n_params": n, "model": "System 2", "accuracy_gap": 0.0,
                  "length_change_vs_system2_pct": 0.0},
                 {"size": size, "n_params": n, "model": "Task Arithmetic", "accuracy_gap": gap,
                  "length_change_vs_system2_pct": change}]
    return pd.DataFrame(rows)


def test_scale_conclusion_reads_the_trend():
    text = scale.scale_conclusion(_ladder(), ["Task Arithmetic"])
    assert "appears" in text and "narrows from -30.0 to -10.0" in text and "shortened less" in text
    assert "needs at least two" in scale.scale_conclusion(_ladder()[lambda d: d["size"] == "a"], ["Task Arithmetic"])


def test_three_model_entries():
    entries = scale.three_model_entries({"A": "a", "B": "b", "C": "c"})
    assert [e.label for e in entries] == ["A + B", "A + C", "B + C", "A + B + C"]
    assert [m["model"] for m in entries[-1].config["models"]] == ["a", "b", "c"]
    with pytest.raises(ConfigError, match="needs three models"):
        scale.three_model_entries({"A": "a"})


def test_sweeps_vary_one_knob_of_the_paper_setting():
    pair = catalog.Pair("s1", "s2", calibration="cal.jsonl")
    ta = sensitivity.alpha_sweep(pair, [0.1, 0.7])
    assert [e.config["models"][0]["parameters"]["weight"] for e in ta] == [0.1, 0.7]
    ties = sensitivity.trim_sweep(pair, [0.8])[0]
    assert ties.config["models"][0]["parameters"]["density"] == pytest.approx(0.2)
    assert ties.config["parameters"]["lambda"] == 1
    dare = sensitivity.drop_sweep(pair, [0.3])[0]
    assert dare.config["models"][0]["parameters"] == {"weight": 0.5, "density": 0.7}
    cal = sensitivity.calibration_sweep(pair, ["short", "long"], [10, 100])
    assert [e.label for e in cal] == ["AIM short n=100", "Sens short n=100", "AIM long n=100", "Sens long n=100",
                                      "AIM short n=10", "Sens short n=10"]
    assert cal[3].config["models"][0]["parameters"]["calibration_side"] == "long"


def test_sensitivity_conclusion_finds_the_window():
    sweep = pd.DataFrame({"family": ["ta_alpha"] * 4 + ["ties_k"], "value": [0.3, 0.6, 0.8, 1.0, 0.8],
                          "avg_accuracy": [50.0, 96.0, 80.0, 99.0, 90.0],
                          "length_change_vs_system2_pct": [-80.0, -40.0, -20.0, 0.0, -50.0]})
    text = sensitivity.sensitivity_conclusion(sweep, s2_acc=99.0)
    assert "alpha in {0.60}" in text and "not monotone" in text and "Best TIES k = 0.80" in text
