"""The authors' repository results for the Qwen3-8B pair: read as paper data, consistent with its merge config."""

from __future__ import annotations

import pytest

from l2s_lib import paths
from l2s_lib.pipeline import catalog
from l2s_lib.report import paper
from l2s_lib.merge.config import load_config
from l2s_lib.studies import notebooks


def test_repository_numbers_are_readable_beside_the_papers():
    df = paper.repository_qwen3_8b()
    assert list(df["role"]) == ["system2", "merge"] and set(df["benchmark_key"]) == {"aime24"}
    assert list(catalog.paper_method_keys(df)) == ["system2", "ties"]
    s2, merge = df.iloc[0], df.iloc[1]
    assert (s2.accuracy, s2.mean_length, merge.accuracy, merge.mean_length) == (70.63, 11328.25, 74.58, 6448.5)
    assert set(df["n_samples"]) == {16} and set(df["top_k"]) == {20} and set(df["max_new_tokens"]) == {32768}
    assert (merge.k, merge.alpha) == (0.7, 0.7)
    # About half the length (the README: "around 50%") for +3.95 points.
    assert merge.mean_length / s2.mean_length - 1 == pytest.approx(-0.4308, abs=1e-4)
    assert all(df["source"].str.contains("hahahawu/Long-to-Short-via-Model-Merging"))
    assert paper.read_table("repo_qwen3_8b_aime24").shape[0] == 2


def test_merge_config_and_parameter_files_name_the_pair():
    row = paper.repository_qwen3_8b().iloc[1]
    cfg = load_config(paths.MERGE_CONFIGS / "repo_qwen3_8b_ties.yaml")
    assert cfg.base_model == "Qwen/Qwen3-8B" and cfg.models[0].model == "deepseek-ai/DeepSeek-R1-0528-Qwen3-8B"
    assert cfg.models[0].parameters["density"] == pytest.approx(1 - row.k) and cfg.parameters["lambda"] == row.alpha
    for study in ("01_merge_methods", "03_adaptive_length", "04_self_critique", "05_sensitivity"):
        params = notebooks.load_params(study, "paper_qwen3_8b")
        assert (params["SYSTEM1"], params["SYSTEM2"]) == (cfg.base_model, cfg.models[0].model)
        assert params["MAX_NEW_TOKENS"] == row.max_new_tokens
    sweep = notebooks.load_params("05_sensitivity", "paper_qwen3_8b")
    assert 0.7 in sweep["ALPHAS"] and 0.7 in sweep["TIES_KS"]
