"""The paper's metrics: length change against the paper's tables, reflection keywords, the summary table."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from l2s_lib import metrics, paths


def _lengths(table: str) -> dict[str, dict[str, float]]:
    df = pd.read_csv(paths.PAPER / f"{table}.csv")
    return {m: dict(zip(g["benchmark"], g["mean_length"])) for m, g in df.groupby("method")}


@pytest.mark.parametrize(
    "table, system2, method, expected",
    [
        ("table1_7b", "DeepSeek-R1-7B", "Task Arithmetic", -48.7),
        ("table1_7b", "DeepSeek-R1-7B", "Ties-Merging", -53.0),
        ("table3_14b", "DeepSeek-R1-14B", "Average Merging", 14.7),
    ],
)
def test_length_change_reproduces_paper_avg_column(table, system2, method, expected):
    lengths = _lengths(table)
    assert round(metrics.length_change(lengths[method], lengths[system2]), 1) == expected


def test_length_change_is_mean_of_ratios_not_ratio_of_means():
    lengths = _lengths("table1_7b")
    ta, r1 = lengths["Task Arithmetic"], lengths["DeepSeek-R1-7B"]
    ratio_of_means = (sum(ta.values()) / sum(r1.values()) - 1) * 100
    assert round(ratio_of_means, 1) == -52.5  # the paper README's counter-example
    assert round(metrics.length_change(ta, r1), 1) != round(ratio_of_means, 1)


@pytest.mark.parametrize("table, avg, system2", [
    ("table1_7b", "table1_7b_avg", "DeepSeek-R1-7B"),
    ("table3_14b", "table3_14b_avg", "DeepSeek-R1-14B"),
    ("table4_32b", "table4_32b_avg", "DeepSeek-R1-32B"),
])
def test_length_change_matches_every_printed_avg_up_to_rounding(table, avg, system2):
    lengths = _lengths(table)
    printed = pd.read_csv(paths.PAPER / f"{avg}.csv").dropna().set_index("method")["length_change_vs_system2_pct"]
    off = {}
    for method, value in printed.items():
        ours = metrics.length_change(lengths[method], lengths[system2])
        if abs(ours - value) > 0.151:  # the paper rounds per-benchmark lengths, then the average
            off[method] = (round(ours, 1), value)
    # Table 1 prints -46.0 for DARE-TA; its own per-benchmark lengths give -47.0 (a typo in the paper).
    assert off == ({"DARE-TA": (-47.0, -46.0)} if table == "table1_7b" else {})


def test_length_change_needs_the_same_benchmarks():
    with pytest.raises(ValueError, match="AIME24"):
        metrics.length_change({"GSM8K": 1.0}, {"GSM8K": 2.0, "AIME24": 3.0})
    assert metrics.length_change({"a": 50, "b": 300}, {"a": 100, "b": 200}) == pytest.approx(0.0)


CRAFTED = [
    # text, paper (word-boundary) count, paper-code (the paper code's regex) count
    ("So x = 4. Wait, let me double-check: 2*4 = 8. Yes.", 2, 2),
    ("Let me just check the sum once more, then recap.", 2, 2),
    ("Let me verify this. Let me just verify that too.", 2, 1),  # the code lists only "let me just verify"
    ("We are awaiting the result; the waiter recapitulates.", 0, 3),  # substrings: await, wait(er), recap
    ("Let me re-examine step 2. WAIT. wait!", 3, 3),
    ("Double check the answer.", 0, 0),  # no hyphen: neither list
    ("LET ME JUST VERIFY, let me check, Let Me Just Check", 3, 3),
    ("The answer is 12.", 0, 0),
]


@pytest.mark.parametrize("text, paper, code", CRAFTED)
def test_keyword_counts_on_crafted_responses(text, paper, code):
    assert metrics.count_keywords(text, "paper") == paper
    assert metrics.count_keywords(text, "paper-code") == code
    assert metrics.is_reflective(text) == (paper > 0)
    assert metrics.is_reflective(text, keywords="paper-code") == (code > 0)


def _paper_code_count(text: str) -> int:
    """The count of the paper's src/evaluation/data_process.py, written out here as its steps read."""
    import re

    words = ["wait", "re-examine", "double-check", "let me check", "recap", "let me just verify",
             "let me just check"]
    return len(re.findall("|".join(re.escape(w) for w in words), text, re.IGNORECASE))


def test_paper_code_count_equals_the_paper_regex_on_random_text():
    import random

    rng = random.Random(0)
    pieces = ["wait", "Wait", "WAIT", "awaiting", "re-examine", "Re-Examine", "double-check", "double check",
              "let me check", "Let me just check", "let me just verify", "let me verify", "recap", "RECAP",
              "let me ", "just ", "check", "verify", " ", ". ", "\n", "x = 4", "let me just wait", "ſ", "juſt"]
    for _ in range(2000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 30)))
        assert metrics.count_keywords(text, "paper-code") == _paper_code_count(text), text
    counts = metrics.keyword_counts("Let me just verify. WAIT, wait, let me juſt check", "paper-code")
    assert counts["let me just verify"] == 1 and counts["wait"] == 2 and counts["let me just check"] == 1
    assert list(counts) == list(metrics.PAPER_CODE_KEYWORDS)


def test_keyword_counts_per_keyword_and_custom_list():
    counts = metrics.keyword_counts("Wait. Wait, recap.", "paper")
    assert counts["wait"] == 2 and counts["recap"] == 1 and sum(counts.values()) == 3
    assert metrics.count_keywords("Hmm, hmm. Hmmm", ["hmm"]) == 2
    with pytest.raises(ValueError, match="paper-code"):
        metrics.count_keywords("x", "papers")


def test_rates_and_keyword_frequency():
    assert metrics.accuracy([True, False, True, True]) == 75.0
    assert math.isnan(metrics.accuracy([]))
    assert metrics.truncation_rate(["eos", "length", "stop", "eos"]) == 25.0
    texts = ["Wait, wait.", "Fine.", "Let me check. Wait. Recap."]
    assert metrics.reflective_pct(texts) == pytest.approx(200 / 3)
    # Table 3's definition: mean count over reflective responses only -> (2 + 3) / 2
    assert metrics.keyword_freq(texts) == 2.5
    assert metrics.keyword_freq(["Fine."]) == 0.0


def test_summarize_breaks_down_by_level():
    records = pd.DataFrame({
        "model": ["m"] * 5 + ["m"] * 2,
        "benchmark": ["lv"] * 5 + ["flat"] * 2,
        "level": [1, 1, 2, 2, 2, None, None],
        "correct": [True, False, True, True, False, True, True],
        "response": ["Wait.", "ok", "ok", "Wait wait", "ok", "ok", "ok"],
        "finish_reason": ["eos", "length", "eos", "eos", "eos", "eos", "length"],
        "n_tokens": [10, 20, 30, 40, 50, 5, 7],
    })
    s = metrics.summarize(records)
    assert list(s.columns) == metrics.SUMMARY_COLUMNS
    assert list(zip(s["benchmark"], s["level"])) == [("lv", "1"), ("lv", "2"), ("lv", "all"), ("flat", "all")]
    lv1, lv2, lv_all, flat = (s.iloc[i] for i in range(4))
    assert (lv1.n, lv1.accuracy, lv1.mean_tokens, lv1.truncated_pct, lv1.reflective_pct) == (2, 50.0, 15.0, 50.0, 50.0)
    assert lv2.accuracy == pytest.approx(200 / 3) and lv2.keyword_freq == 2.0
    assert lv_all.n == 5 and lv_all.mean_tokens == 30.0 and lv_all.keyword_freq == 1.5
    assert flat.n == 2 and flat.accuracy == 100.0 and flat.truncated_pct == 50.0
