"""Benchmark loaders: every toolkit layout reads its fixture; unknown names and missing files fail clearly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from l2s_lib.errors import BenchmarkError, ConfigError
from l2s_lib.eval import benchmarks as bm

FIXTURES = Path(__file__).parent / "fixtures" / "benchmarks"

# (layout, number of problems, first id, first reference answer, levels seen)
EXPECTED = {
    "gsm8k": (4, 0, "68", [None]),
    "math500": (5, "test/prealgebra/9001.json", "\\frac{5}{6}", [1, 2, 3, 5]),
    "minerva_math": (3, 0, "20", [None]),
    "olympiadbench": (3, 3001, "12", [None]),
    "college_math": (3, 0, "1", [None]),
    "aime24": (3, 60, "9", [None]),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_layout_reads_its_fixture(name):
    n, first_id, first_answer, levels = EXPECTED[name]
    problems = bm.load_benchmark(name, path=FIXTURES / name / "test.jsonl")
    assert len(problems) == n
    assert problems[0].idx == first_id and problems[0].answer == first_answer
    assert all(p.question and p.answer for p in problems)
    assert sorted({p.level for p in problems}, key=str) == sorted(levels, key=str)
    assert bm.load_benchmark(name, path=FIXTURES / name / "test.jsonl", limit=2) == bm.spread(problems, 2)


def test_layout_specific_answers():
    gsm = bm.load_benchmark("gsm8k", path=FIXTURES / "gsm8k" / "test.jsonl")
    assert gsm[2].answer == "2230"  # "#### 2,230": thousands separator dropped
    olymp = bm.load_benchmark("olympiadbench", path=FIXTURES / "olympiadbench" / "test.jsonl")
    assert olymp[1].answer == "[-1,3]"  # "$[-1,3]$" unwrapped
    minerva = bm.load_benchmark("minerva_math", path=FIXTURES / "minerva_math" / "test.jsonl")
    assert minerva[2].answer == "\\frac{1}{9}"  # last \boxed{} of the solution, nested braces kept


def test_registry_entries():
    assert set(EXPECTED) <= set(bm.list_benchmarks())
    math500 = bm.get_benchmark("math500")
    assert math500.levels == (1, 2, 3, 4, 5) and math500.grader == "math" and math500.display_name == "MATH500"
    assert math500.path == bm.paths.BENCHMARKS / "math500" / "test.jsonl"


def test_unknown_benchmark_lists_the_registered_ones():
    with pytest.raises(BenchmarkError, match=r"unknown benchmark 'gsm9k'.*gsm8k"):
        bm.load_benchmark("gsm9k")


def test_missing_file_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    bench = bm.register_benchmark("tmp_missing", display_name="T", path=tmp_path / "nope.jsonl", layout="aime24",
                                  grader="integer", hub={"path": "someone/some-set", "split": "test"})
    try:
        with pytest.raises(BenchmarkError, match=r"no file at .*nope.jsonl.*HF_HUB_OFFLINE=1.*README"):
            bm.load_benchmark(bench.name)
        with pytest.raises(BenchmarkError, match="no file"):
            bm.load_benchmark("aime24", path=tmp_path / "absent.jsonl")
    finally:
        bm._REGISTRY.pop("tmp_missing")


def test_wrong_layout_bad_json_and_bad_registration(tmp_path):
    with pytest.raises(BenchmarkError, match=r"lacks field\(s\) \['problem'\].*--layout"):
        bm.load_benchmark("math500", path=FIXTURES / "gsm8k" / "test.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem": "1+1", "answer": "2"}\n{oops\n')
    with pytest.raises(BenchmarkError, match=r"bad.jsonl:2: not valid JSON"):
        bm.load_benchmark("aime24", path=bad)
    dup = tmp_path / "dup.jsonl"
    dup.write_text("\n".join(json.dumps({"idx": 1, "problem": "q", "answer": "1"}) for _ in range(2)))
    with pytest.raises(BenchmarkError, match="duplicate problem id 1"):
        bm.load_benchmark("aime24", path=dup)
    with pytest.raises(ConfigError, match="allowed: gsm8k, math500"):
        bm.register_benchmark("x", display_name="x", path="x.jsonl", layout="nope", grader="math")
    with pytest.raises(ConfigError, match="allowed: math, integer"):
        bm.register_benchmark("x", display_name="x", path="x.jsonl", layout="aime24", grader="exact")
    with pytest.raises(ConfigError, match="positive"):
        bm.load_benchmark("aime24", path=FIXTURES / "aime24" / "test.jsonl", limit=0)


def test_benchmark_from_file_borrows_layout_and_grader():
    path = FIXTURES / "math500" / "test.jsonl"
    like_bench = bm.benchmark_from_file(path, like="math500")
    assert (like_bench.name, like_bench.layout, like_bench.levels) == ("math500", "math500", (1, 2, 3, 4, 5))
    assert len(bm.load_benchmark(like_bench)) == 5
    with pytest.raises(ConfigError, match="neither a registered benchmark"):
        bm.benchmark_from_file(path, like="nonsense")


def test_registered_benchmark_is_found_and_read(tmp_path):
    """Another package registers a benchmark with one explicit call; eval imports no such package itself."""
    fixture = tmp_path / "org.jsonl"
    fixture.write_text("\n".join(json.dumps({"idx": i, "problem": f"Q: {i}+1 A:", "answer": str(i + 1),
                                             "level": 1 + i % 3}) for i in range(6)))
    try:
        with pytest.raises(BenchmarkError, match="unknown benchmark 'org_fake'"):
            bm.get_benchmark("org_fake")
        bm.register_benchmark("org_fake", display_name="Organism (fake)", path=fixture, layout="math500",
                              grader="integer", levels=[3, 1, 2])
        bench = bm.get_benchmark("org_fake")
        assert bench.levels == (1, 2, 3) and bench.grader == "integer"
        problems = bm.load_benchmark("org_fake")
        assert [p.level for p in problems] == [1, 2, 3, 1, 2, 3] and problems[4].answer == "5"
    finally:
        bm._REGISTRY.pop("org_fake", None)


def test_last_boxed():
    assert bm.last_boxed(r"a \boxed{1} b \boxed{\frac{1}{2}} c") == r"\frac{1}{2}"
    assert bm.last_boxed(r"\boxed{x} then \boxed{unbalanced") == "x"
    assert bm.last_boxed(r"\boxed 7 done") == "7"
    assert bm.last_boxed("none") is None


def test_spread_keeps_every_level_of_a_sorted_file():
    rows = [{"level": lv, "i": i} for lv in range(1, 6) for i in range(100)]
    picked = bm.spread(rows, 20)
    assert len(picked) == 20 and picked == sorted(picked, key=rows.index)
    assert {lv: sum(r["level"] == lv for r in picked) for lv in range(1, 6)} == {lv: 4 for lv in range(1, 6)}
    assert bm.spread(rows, 1) == [rows[0]]
    assert bm.spread(rows[:3], 10) == rows[:3]


def test_a_limited_org_levels_run_sees_every_level():
    levels = {p.level for p in bm.load_benchmark("org_levels", limit=20)}
    assert levels == {1, 2, 3, 4, 5}


@pytest.mark.parametrize("name, expected", [("math500", "math500"), ("minerva_math", "minerva_math"),
                                            ("olympiadbench", "olympiadbench")])
def test_the_layout_of_a_toolkit_file_is_told_from_its_rows(name, expected):
    assert bm.infer_layout(FIXTURES / name / "test.jsonl") == expected


def test_an_organism_benchmark_file_needs_no_layout(tmp_path):
    from l2s_lib import paths

    # The file `l2s organisms benchmark` writes: idx, problem, answer, level.
    assert bm.infer_layout(paths.ROOT / "data" / "organisms" / "benchmarks" / "org_levels.jsonl") == "math500"


def test_a_file_two_layouts_read_differently_keeps_the_error(tmp_path):
    f = tmp_path / "mixed.jsonl"
    f.write_text(json.dumps({"question": "How many?", "answer": "Six and one. #### 7"}) + "\n")
    with pytest.raises(ConfigError, match="cannot tell its layout.*gsm8k.*college_math|cannot tell its layout.*college_math.*gsm8k"):
        bm.infer_layout(f)
    unknown = tmp_path / "unknown.jsonl"
    unknown.write_text(json.dumps({"prompt": "x", "target": "1"}) + "\n")
    with pytest.raises(ConfigError, match="layouts that read it: none"):
        bm.infer_layout(unknown)


def test_yes_no_questions_get_the_toolkits_suffix():
    rows = [{"question": "Is the set closed?", "answer": "Yes."}, {"question": "Is it open?", "answer": "$No$"},
            {"question": "True or not: 1 < 2.", "answer": "True"}, {"question": "What is 2+2?", "answer": "4"},
            {"question": "Name the test.", "answer": "Nope"}]
    qs = [p.question for p in bm.parse_rows(rows, "college_math")]
    assert qs == ["Is the set closed? (Yes or No)", "Is it open? (Yes or No)", "True or not: 1 < 2. (True or False)",
                  "What is 2+2?", "Name the test."]
    assert bm.question_suffix(r"\text{no}") == " (Yes or No)"


def test_boxed_contents_skip_cut_off_boxes():
    text = r"\boxed{1} and \boxed{\frac{2}{3}} then \boxed 4 and \boxed{5"
    assert bm.boxed_contents(text) == ["1", r"\frac{2}{3}", "4"]
    assert bm.last_boxed(text) == "4"
