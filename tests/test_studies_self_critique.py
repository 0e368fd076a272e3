"""Self-critique (notebook 04): reflection tables under both keyword lists, Table 6, the planted-error probe."""

import json

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from l2s_lib import paths
from l2s_lib.report import figures
from l2s_lib.pipeline import grid
from l2s_lib.studies import self_critique as sc

RESPONSES = {
    # (model, level): responses
    ("S2", 1): ["1+1=2. Wait, let me double-check: 1+1=2.", "x=3. Wait, wait."],
    ("S2", 2): ["Let me verify: 5.", "awaiting nothing. So 4."],
    ("M", 1): ["2.", "3."],
    ("M", 2): ["Wait, 4.", "5."],
}


def _records():
    rows = []
    for (model, level), texts in RESPONSES.items():
        for i, t in enumerate(texts):
            rows.append({"model": model, "benchmark": "org_levels", "level": level, "idx": i, "response": t})
    rows.append({"model": "S2", "benchmark": "org_easy", "level": 1, "idx": 9, "response": "Recap: 7."})
    rows.append({"model": "M", "benchmark": "org_easy", "level": 1, "idx": 9, "response": "7."})
    return pd.DataFrame(rows)


def test_reflection_under_both_keyword_lists():
    r = sc.reflection_table(_records()).set_index(["model", "benchmark", "level", "keywords"])
    # paper list: whole words; "let me verify" counts, "awaiting" does not
    assert r.loc[("S2", "org_levels", "2", "paper"), "n_reflective"] == 1
    # paper-code list: substrings without "let me verify"; "awaiting" contains "wait"
    assert r.loc[("S2", "org_levels", "2", "paper-code"), "n_reflective"] == 1
    assert r.loc[("S2", "org_levels", "1", "paper"), "keyword_freq"] == pytest.approx((2 + 2) / 2)
    assert r.loc[("S2", "org_levels", "all", "paper"), "reflective_pct"] == pytest.approx(75.0)
    assert r.loc[("M", "org_levels", "1", "paper"), "keyword_freq"] == 0.0
    with pytest.raises(ValueError, match="response"):
        sc.reflection_table(_records().drop(columns="response"))


def test_tables_by_benchmark_and_level():
    r = sc.reflection_table(_records())
    b = sc.by_benchmark(r, models=["S2", "M"], benchmarks=["org_easy", "org_levels"])
    assert b.loc["S2", "org_easy"] == 100.0 and b.loc["M", "org_levels"] == 25.0
    lv = sc.by_level(r, "org_levels")
    assert list(lv.columns) == [1, 2] and lv.loc["M", 2] == 50.0
    with pytest.raises(ValueError, match="no levels"):
        sc.by_level(r, "org_hard")
    both = sc.keyword_lists_side_by_side(r)
    # pooled over benchmarks: S2 has 4 of 5 reflective under the paper list
    assert both.loc["S2", "reflective_pct [paper]"] == 80.0
    assert {"keyword_freq [paper]", "keyword_freq [paper-code]"} <= set(both.columns)


def test_paper_table6_and_figures(tmp_path):
    p6 = sc.paper_table6()
    assert p6.shape == (8, 6) and p6.index[0] == "DeepSeek-R1-7B" and p6.loc["Ties-Merging", "GSM8K"] == 19.2
    r = sc.reflection_table(_records())
    fig = sc.fig_table6(sc.by_benchmark(r), p6)
    assert "Table 6" in fig.axes[0].get_title()
    figures.save(fig, "tab6_reflection", tmp_path)
    fig2 = sc.fig_reflection_by_level(r, "org_levels", {"S2": "system2", "M": "merge"})
    assert len(fig2.axes[0].get_lines()) == 4  # two models x two keyword lists
    plt.close("all")


def test_planted_error_is_deterministic_per_question():
    from l2s_lib.organisms import prompts

    text, wrong = prompts.forced_prefix("43+27-4"), prompts.forced_answer("43+27-4")
    assert text.rstrip().endswith(f"So the answer is {wrong}.") and wrong != 66
    assert (prompts.forced_prefix("43+27-4"), prompts.forced_answer("43+27-4")) == (text, wrong)


def test_probe_is_skipped_for_real_models():
    res = sc.correction_probe([], world="real")
    assert res.skipped and res.rows.empty and "skipped" in res.note()


def _tiny_organism(out):
    """A random 2-layer model with the organisms' tokenizer (what the probe's plumbing needs)."""
    import torch
    from transformers import Qwen2ForCausalLM

    from l2s_lib.organisms import configs, train

    enc = train.Encoder()
    size = configs.Size("probe-test", 32, 64, 1, 2, 1, 1.0)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(configs.qwen2_config(size, len(enc.vocab), enc.eos_id, enc.pad_id))
    return train.save_checkpoint(model, out, {"role": "test"})


def test_probe_runs_on_an_organism_and_is_cached(tmp_path):
    from l2s_lib.eval.benchmarks import benchmark_from_file

    bench = tmp_path / "lv.jsonl"
    qs = [("12+30", 1), ("50-8", 1), ("12+30-2", 2), ("9+9+9", 2), ("40-20+3", 2)]
    bench.write_text("".join(json.dumps({"idx": i, "problem": q, "answer": str(eval(q)), "level": lv}) + "\n"
                             for i, (q, lv) in enumerate(qs)))
    b = benchmark_from_file(bench, like="math500")
    model = _tiny_organism(tmp_path / "m")
    entries = [grid.model("A", model, "system2")]
    res = sc.correction_probe(entries, world="organism", benchmark=b, per_level=2, max_new_tokens=6, progress=False)
    assert res.skipped is None and len(res.rows) == 4 and list(res.rows.columns) == sc.PROBE_COLUMNS
    assert set(res.rows["level"]) == {1, 2} and (res.rows["n_tokens"] <= 6).all()
    assert list(res.summary["level"]) == ["1", "2", "all"]
    # An evaluation through eval: its problems are one benchmark file, its generations eval's cache.
    assert len(list((paths.cache_dir() / "probe").glob("*.jsonl"))) == 1
    assert any((paths.cache_dir() / "generations").glob("lv_probe__*.jsonl"))
    assert ((res.rows["final"] == res.rows["answer"]) == res.rows["repaired"]).all()
    assert ((res.rows["final"] == res.rows["planted"]) == res.rows["kept_error"]).all()
    again = sc.correction_probe(entries, world="organism", benchmark=b, per_level=2, max_new_tokens=6, progress=False)
    pd.testing.assert_frame_equal(res.rows, again.rows)


def test_probe_summary_and_conclusion():
    rows = pd.DataFrame([
        {"model": "S2", "level": 1, "noticed": True, "repaired": True, "kept_error": False, "n_tokens": 30},
        {"model": "S2", "level": 2, "noticed": True, "repaired": False, "kept_error": False, "n_tokens": 40},
        {"model": "M", "level": 1, "noticed": False, "repaired": False, "kept_error": True, "n_tokens": 5},
        {"model": "M", "level": 2, "noticed": True, "repaired": True, "kept_error": False, "n_tokens": 35},
        {"model": "S1", "level": 1, "noticed": False, "repaired": False, "kept_error": True, "n_tokens": 3},
        {"model": "S1", "level": 2, "noticed": False, "repaired": False, "kept_error": True, "n_tokens": 3},
    ])
    s = sc.probe_summary(rows).set_index(["model", "level"])
    assert s.loc[("S2", "all"), "noticed_pct"] == 100 and s.loc[("S2", "all"), "noticed_repaired_pct"] == 50
    assert pd.isna(s.loc[("S1", "all"), "noticed_repaired_pct"]) and s.loc[("M", "1"), "kept_error_pct"] == 100
    probe = sc.ProbeResult(rows, sc.probe_summary(rows))
    recs = _records()
    recs = pd.concat([recs, recs[recs.model == "M"].assign(model="S1", response="1.")], ignore_index=True)
    text = sc.conclusion(sc.reflection_table(recs), probe, "S1", "S2", ["M"], "org_levels")
    # M reflects on 20% (pooled) < S2's 80%, and on level 2 (50%) more than level 1 (0%)
    assert text.startswith("**Verdict (organism world): the paper's self-critique pattern holds for 1 of 1 merges**")
    assert "repaired by S2 50%, M 50%, S1 0%" in text and "Table 6" in text
    fig = sc.fig_probe(probe, {"S1": "system1", "S2": "system2", "M": "merge"})
    assert sc.probe_overview(probe).loc["S2", "all"] == 50.0 and sc.probe_overview(sc.correction_probe([], "real")).empty
    plt.close(sc.fig_probe(sc.correction_probe([], "real"), {}))
    assert len(fig.axes[0].get_lines()) == 3
    plt.close(fig)
    skipped = sc.conclusion(sc.reflection_table(recs), sc.correction_probe([], "real"), "S1", "S2", ["M"],
                            "org_levels", world="real")
    assert "probe was skipped" in skipped
