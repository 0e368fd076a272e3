"""``l2s merge`` / ``l2s methods``, and the shipped paper configs against the paper's Table 7."""

from __future__ import annotations

import csv
import json

import pytest
import yaml

from l2s_lib import paths
from l2s_lib.cli import main
from l2s_lib.merge import get_method, load_config

TASK_VECTOR_METHODS = ("average", "task_arithmetic", "ties", "dare_linear", "dare_ties", "slerp")


def test_methods_lists_every_method_with_parameters(capsys):
    assert main(["methods"]) == 0
    text = capsys.readouterr().out
    for name in TASK_VECTOR_METHODS:
        assert f"\n{name}" in "\n" + text
    assert "density (float in [0.0, 1.0], default 1.0)" in text and "aliases: linear" in text
    assert main(["methods", "--json"]) == 0
    described = {d["name"]: d for d in json.loads(capsys.readouterr().out)}
    assert set(TASK_VECTOR_METHODS) <= set(described)
    ties = described["ties"]
    assert ties["paper_name"] == "TIES-Merging" and ties["reference"].startswith("https://arxiv.org/")
    assert {p["name"] for p in ties["model_params"]} == {"weight", "density"}
    assert "one model" in ties["doc"].lower()  # every docstring states the one-model reduction
    for name in TASK_VECTOR_METHODS:
        assert "model" in described[name]["doc"] and described[name]["summary"]


def test_merge_command_writes_the_output_and_reports_errors_without_traceback(tmp_path, tiny_pair, capsys):
    s1, s2 = tiny_pair
    cfg = tmp_path / "ta.yaml"
    cfg.write_text(yaml.safe_dump({"merge_method": "task_arithmetic", "base_model": str(s1),
                                   "models": [{"model": str(s2), "parameters": {"weight": 0.7}}]}))
    out = tmp_path / "merged"
    assert main(["merge", str(cfg), str(out), "--no-progress"]) == 0
    assert capsys.readouterr().out.strip() == str(out.resolve())
    assert main(["merge", str(cfg), str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "l2s merge: error:" in err and "--overwrite" in err and "Traceback" not in err
    assert main(["merge", str(cfg), str(out), "--no-progress", "--overwrite"]) == 0
    cfg.write_text(yaml.safe_dump({"merge_method": "ties", "base_model": str(s1),
                                   "models": [{"model": str(s2), "parameters": {"k": 0.8}}]}))
    assert main(["merge", str(cfg), str(tmp_path / "o2"), "--no-progress"]) == 2
    assert "unknown parameter(s) k; allowed: density, weight" in capsys.readouterr().err


def _table7() -> dict[tuple[str, str], dict[str, float]]:
    rows = csv.DictReader((paths.PAPER / "table7_hyperparameters.csv").open())
    out = {}
    for r in rows:
        out[(r["method"], r["scale"])] = {k: float(v) for k, v in (kv.split("=") for kv in r["hyperparameters"].split(";"))}
    return out


SCALES = {"1p5b": "1.5B", "7b": "7B", "14b": "14B", "32b": "32B"}


@pytest.mark.parametrize("key", sorted(SCALES))
def test_paper_configs_carry_table_7_with_k_and_p_translated_to_density(key):
    table = _table7()
    scale = SCALES[key]
    ta = load_config(paths.MERGE_CONFIGS / f"paper_{key}_task_arithmetic.yaml")
    assert ta.models[0].parameters["weight"] == table[("Task Arithmetic", scale)]["alpha"]
    ties = load_config(paths.MERGE_CONFIGS / f"paper_{key}_ties.yaml")
    hp = table[("Ties-Merging", scale)]
    assert ties.models[0].parameters["density"] == pytest.approx(1 - hp["k"], abs=1e-12)
    assert ties.parameters["lambda"] == hp["alpha"] and ties.parameters["normalize"]
    assert ties.policies["trim_mode"] == "paper"
    avg = load_config(paths.MERGE_CONFIGS / f"paper_{key}_average.yaml")
    assert [m.model for m in avg.models] == [avg.base_model, ta.models[0].model]
    if ("DARE", scale) in table:
        dare = load_config(paths.MERGE_CONFIGS / f"paper_{key}_dare.yaml")
        assert dare.models[0].parameters["density"] == pytest.approx(1 - table[("DARE", scale)]["p"], abs=1e-12)
        assert dare.models[0].parameters["weight"] == 0.5  # DARE on Average merging
    for cfg in (ta, ties, avg):
        assert cfg.base_model.startswith(("Qwen/Qwen2.5-", "Qwen/Qwen2.5-Math-"))
        assert all(m.model.startswith(("deepseek-ai/DeepSeek-R1-Distill-Qwen-", "Qwen/")) for m in cfg.models)


def test_every_shipped_config_validates():
    files = sorted(paths.MERGE_CONFIGS.glob("*.yaml"))
    assert files
    for f in files:
        cfg = load_config(f)
        assert get_method(cfg.merge_method)
