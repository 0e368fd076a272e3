import pytest

from l2s_lib import paths
from l2s_lib.errors import ConfigError
from l2s_lib.pipeline import catalog, grid

CALIBRATION = str(paths.ROOT / "tests" / "fixtures" / "calibration" / "arithmetic.jsonl")


def test_every_method_has_a_paper_setting_at_7b():
    for key in catalog.METHODS:
        cfg = catalog.paper_config(key, "7b")
        assert cfg["base_model"] == catalog.PAPER_PAIRS["7b"][0]


def test_missing_scale_falls_back_to_the_7b_row_and_unknown_keys_fail():
    assert catalog.paper_config("twin", "32b")["_source"].endswith("paper_7b_twin.yaml")
    assert catalog.paper_config("ties", "14b")["_source"].endswith("paper_14b_ties.yaml")
    with pytest.raises(ConfigError, match="unknown method key 'foo'"):
        catalog.paper_config("foo")
    with pytest.raises(ConfigError, match="unknown paper scale"):
        catalog.method_entries(catalog.Pair("a", "b"), "ties", scale="3b")


def test_retarget_replaces_models_and_calibration():
    pair = catalog.Pair("S1", "S2", calibration="cal.jsonl")
    lore = catalog.retarget(catalog.paper_config("lore"), pair)
    assert lore["base_model"] == "S1"
    assert [m["model"] for m in lore["models"]] == ["S1", "S2"]
    aim = catalog.retarget(catalog.paper_config("aim_ties"), pair, params={"omega": 1.0},
                           model_params={"density": 0.5})
    assert aim["parameters"]["calibration"] == "cal.jsonl" and aim["parameters"]["omega"] == 1.0
    assert aim["models"][0]["parameters"]["density"] == 0.5


def test_resolve_pair_needs_both_real_models():
    with pytest.raises(ConfigError, match="give both SYSTEM1 and SYSTEM2"):
        catalog.resolve_pair(system1="a")
    real = catalog.resolve_pair(system1="Qwen/Qwen2.5-Math-7B", system2="deepseek-ai/DeepSeek-R1-Distill-Qwen-7B")
    assert real.world == "real" and real.dpo is None and real.label2 == "DeepSeek-R1-Distill-Qwen-7B"
    assert catalog.decoding("", 0) == {} and catalog.decoding("cot", 8192) == {"prompt": "cot", "max_new_tokens": 8192}


@pytest.mark.slow
def test_every_method_merges_the_tiny_pair(tiny_pair):
    s1, s2 = tiny_pair
    pair = catalog.Pair(str(s1), str(s2), calibration=CALIBRATION)
    overrides = {k: {"params": {"calibration_n": 4}} for k in ("aim_ties", "sens")}
    for entry in catalog.method_entries(pair, list(catalog.METHODS), overrides=overrides):
        out = grid.materialize(entry)
        assert (out / "l2s_provenance.json").is_file(), entry.label


def test_comparison_entries_split_the_decoding_like_the_paper():
    pair = catalog.Pair("S1", "S2", dpo="D", calibration="c.jsonl")
    entries = catalog.comparison_entries(pair, "task_arithmetic,ties", "7b", 0, "cot", 8192, "qwen25-math-cot", 10240)
    assert [e.label for e in entries] == ["System 1", "System 2", "DPO", "Task Arithmetic", "Ties-Merging"]
    assert entries[0].eval == {"prompt": "cot", "max_new_tokens": 8192}
    assert all(e.eval == {"prompt": "qwen25-math-cot", "max_new_tokens": 10240} for e in entries[1:])
    assert catalog.comparison_entries(pair, "ties")[0].eval == {}


def test_the_catalogue_is_one_table_whose_names_agree_with_configs_registry_and_paper():
    from l2s_lib.merge.registry import get_method
    from l2s_lib.report import paper

    assert len({m.key for m in catalog.CATALOGUE}) == len({m.label for m in catalog.CATALOGUE}) == len(catalog.CATALOGUE)
    table1 = set(paper.per_benchmark("7B")["method"])
    for m in catalog.CATALOGUE:
        assert catalog.paper_config(m.key, "7b")["merge_method"] == m.registry
        get_method(m.registry)  # registered (a name or an alias of the engine), else KeyError
        assert (m.label in table1) == m.in_paper
        assert catalog.key_of_label(m.label) == m.key
    t7 = paper.per_benchmark("7B").drop_duplicates("method")
    t = catalog.paper_method_keys(t7).set_axis(t7["method"])
    assert t["Ties-Merging"] == "ties" and t["AIM-Ties"] == "aim_ties" and t["DARE"] == "dare" and t["DPO"] == "dpo"
