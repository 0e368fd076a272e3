"""evaluate(): records and summary, resumable cache (interrupt and resume), instant re-runs, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from l2s_lib import metrics
from l2s_lib.cli import main
from l2s_lib.eval import benchmark_from_file, evaluate
from l2s_lib.eval.cache import GenerationCache
from l2s_lib.eval.generation import HFBackend
from l2s_lib.eval.runner import RECORD_COLUMNS

FIXTURES = Path(__file__).parent / "fixtures" / "benchmarks"
MATH500 = FIXTURES / "math500" / "test.jsonl"
GSM8K = FIXTURES / "gsm8k" / "test.jsonl"
BUDGET = 12


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model_dir(tiny_pair):
    return tiny_pair[1]


@pytest.fixture
def benches():
    return [benchmark_from_file(MATH500, like="math500"), benchmark_from_file(GSM8K, like="gsm8k")]


class Interrupted(Exception):
    pass


class InterruptingBackend(HFBackend):
    """Raises after ``k`` samples, as a killed run would stop."""

    def __init__(self, model, k, **kw):
        super().__init__(model, **kw)
        self.k = k

    def generate(self, prompts, params, progress=True, desc="generate"):
        for n, item in enumerate(super().generate(prompts, params, progress, desc)):
            if n == self.k:
                raise Interrupted
            yield item


class NoGenerationBackend(HFBackend):
    def generate(self, *a, **k):
        raise AssertionError("a finished run must be served from the cache")


def res_prompt(tok, question):
    from l2s_lib.eval.prompts import build_prompt

    return build_prompt("qwen25-math-cot", question, tok)


def test_records_and_summary(model_dir, benches, tmp_path):
    res = evaluate(model_dir, benches, max_new_tokens=BUDGET, batch_size=3, use_cache=False, progress=False,
                   out_dir=tmp_path / "out", model_name="tiny-s2")
    rec = res.records
    assert list(rec.columns) == RECORD_COLUMNS and len(rec) == 5 + 4
    assert set(rec["model"]) == {"tiny-s2"} and list(rec["benchmark"].unique()) == ["math500", "gsm8k"]
    assert (rec["n_tokens"] <= BUDGET).all() and set(rec["finish_reason"]) <= {"eos", "length", "stop"}
    assert (rec["truncated"] == (rec["finish_reason"] == "length")).all()
    s = res.summary
    assert list(s.columns) == metrics.SUMMARY_COLUMNS
    assert list(s[s.benchmark == "math500"]["level"]) == ["1", "2", "3", "5", "all"]
    assert list(s[s.benchmark == "gsm8k"]["level"]) == ["all"]
    row = s[(s.benchmark == "math500") & (s.level == "all")].iloc[0]
    # The real benchmarks default to the paper code's statistics: its length count and keyword regex.
    assert row.n == 5 and row.mean_tokens == rec[rec.benchmark == "math500"]["n_tokens_paper"].mean()
    assert row.length_count == "paper" and row.keywords == "paper-code"
    from l2s_lib.tokenization import load_tokenizer

    tok = load_tokenizer(model_dir)
    assert list(rec["n_tokens_paper"]) == [len(tok(t.strip())["input_ids"]) for t in rec["response"]]
    assert list(rec["prompt_tokens"]) == [len(tok(q)["input_ids"]) for q in
                                          [res_prompt(tok, q) for q in rec["question"]]]
    assert row.accuracy_truncated_wrong == metrics.accuracy(
        rec[rec.benchmark == "math500"]["correct"] & ~rec[rec.benchmark == "math500"]["truncated"])
    # Files for the notebooks and the CLI.
    written = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert list(written.columns) == metrics.SUMMARY_COLUMNS and len(written) == len(s)
    lines = (tmp_path / "out" / "samples.jsonl").read_text().splitlines()
    assert len(lines) == 9 and json.loads(lines[0])["idx"] == "test/prealgebra/9001.json"
    assert res.settings["benchmarks"]["math500"]["prompt"] == "qwen25-math-cot"
    generated = evaluate(model_dir, benches, max_new_tokens=BUDGET, batch_size=3, use_cache=False, progress=False,
                         length="generated", keywords="paper")
    row = generated.summary.iloc[-1]
    assert row.length_count == "generated" and row.mean_tokens == rec[rec.benchmark == "gsm8k"]["n_tokens"].mean()


def test_context_beyond_the_positions_is_reported_with_the_fix(tmp_path):
    from l2s_lib import tiny
    from l2s_lib.errors import ConfigError

    short = tiny.make_model(tmp_path / "short", max_position_embeddings=100)
    bench = benchmark_from_file(MATH500, like="math500")
    kw = dict(batch_size=5, progress=False, use_cache=False, limit=2)
    with pytest.raises(ConfigError, match=r"exceeds the model's 100 positions.*max_new_tokens <= \d+.*config_source"):
        evaluate(short, bench, max_new_tokens=40, context_overflow="error", **kw)
    with pytest.warns(UserWarning, match="exceeds the model's 100 positions"):
        res = evaluate(short, bench, max_new_tokens=40, **kw)
    assert res.settings["context"]["overflow"] == ["math500"] and res.settings["context"]["positions"] == 100
    assert (res.records["prompt_tokens"] + 40 > 100).all()
    with pytest.raises(ConfigError, match="max_model_len=20 is below"):
        evaluate(short, bench, max_new_tokens=4, max_model_len=20, **kw)
    with pytest.raises(ConfigError, match="context_overflow must be"):
        evaluate(short, bench, max_new_tokens=4, context_overflow="cap", **kw)


def test_generation_cache_tells_devices_dtypes_backends_and_context_apart(tmp_path):
    from l2s_lib.eval.cache import generation_key

    base = dict(model="fp", benchmark="math500", prompt="qwen25-math-cot", decoding={"max_new_tokens": 8},
                identity={"backend": "hf", "dtype": "float32"}, device="cpu", max_model_len=None)
    variants = [{}, {"device": "cuda"}, {"identity": {"backend": "hf", "dtype": "bfloat16"}},
                {"identity": {"backend": "vllm", "dtype": "float32"}}, {"max_model_len": 4096},
                {"max_model_len": 11264}]
    digests = {GenerationCache(tmp_path, "math500", generation_key(**(base | v))).digest for v in variants}
    assert len(digests) == len(variants)
    # cuda:0 and cuda:1 decode alike; the key holds the device type
    assert generation_key(**(base | {"device": "cuda:1"})) == generation_key(**(base | {"device": "cuda"}))
    key = generation_key(**base)
    assert key["versions"]["transformers"] and key["versions"]["torch"]


def test_interrupted_run_resumes_to_the_same_records(model_dir, benches, tmp_path):
    kw = dict(max_new_tokens=BUDGET, batch_size=2, progress=False, model_name="m", cache_dir=tmp_path / "cache")
    reference = evaluate(model_dir, benches, **{**kw, "use_cache": False}).records

    k = 3
    with pytest.raises(Interrupted):
        evaluate(model_dir, benches, backend=InterruptingBackend(model_dir, k, batch_size=2), **kw)
    files = list((tmp_path / "cache" / "generations").glob("math500__*.jsonl"))
    assert len(files) == 1 and len(files[0].read_text().splitlines()) == k  # every finished sample kept
    with files[0].open("a") as f:
        f.write('{"idx": "half-writ')  # and a run killed mid-write leaves a partial line

    resumed = evaluate(model_dir, benches, **kw)
    assert resumed.settings["benchmarks"]["math500"]["generated"] == 5 - k
    pd.testing.assert_frame_equal(resumed.records, reference)

    again = evaluate(model_dir, benches, backend=NoGenerationBackend(model_dir, batch_size=2), **kw)
    pd.testing.assert_frame_equal(again.records, reference)
    assert len(files[0].read_text().splitlines()) == 5


def test_cache_key_and_overrides(model_dir, benches, tmp_path):
    kw = dict(batch_size=5, progress=False, cache_dir=tmp_path / "cache")
    a = evaluate(model_dir, benches[0], max_new_tokens=BUDGET, **kw)
    # Another budget is another key: generated afresh, and the per-benchmark mapping is honoured.
    b = evaluate(model_dir, benches, max_new_tokens={"math500": 6, "gsm8k": 4}, **kw)
    assert b.settings["benchmarks"]["math500"]["generated"] == 5
    assert b.records.groupby("benchmark")["n_tokens"].max().to_dict() == {"gsm8k": 4, "math500": 6}
    # The 6-token answers are prefixes of the 12-token ones (greedy).
    short = b.records[b.records.benchmark == "math500"]["response"].tolist()
    assert all(full.startswith(s) for full, s in zip(a.records["response"], short))
    # A different prompt template is a different key too.
    c = evaluate(model_dir, benches[0], max_new_tokens=BUDGET, prompt="chat", **kw)
    assert c.settings["benchmarks"]["math500"]["generated"] == 5
    keys = sorted(json.loads(p.read_text())["prompt"] for p in (tmp_path / "cache" / "generations").glob("math500*.key.json"))
    assert keys == ["chat", "qwen25-math-cot", "qwen25-math-cot"]


def test_edited_question_is_generated_again(model_dir, tmp_path):
    rows = [json.loads(line) for line in MATH500.read_text().splitlines()]
    path = tmp_path / "math500" / "test.jsonl"
    path.parent.mkdir()
    path.write_text("\n".join(json.dumps(r) for r in rows))
    kw = dict(max_new_tokens=4, batch_size=5, progress=False, cache_dir=tmp_path / "cache")
    evaluate(model_dir, benchmark_from_file(path, like="math500"), **kw)
    rows[2]["problem"] = "What is $\\sqrt{72}$ in simplest radical form?"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    edited = evaluate(model_dir, benchmark_from_file(path, like="math500"), **kw)
    assert edited.settings["benchmarks"]["math500"]["generated"] == 1  # only the edited problem
    again = evaluate(model_dir, benchmark_from_file(path, like="math500"), **kw)
    assert again.settings["benchmarks"]["math500"]["generated"] == 0  # the newest line of an id wins
    pd.testing.assert_frame_equal(again.records, edited.records)


def test_a_different_tokenisation_of_the_same_prompt_is_generated_again(model_dir, tmp_path, monkeypatch):
    """A tokenizer fix changes the model's input without changing the prompt text: no stale cache hit."""
    from l2s_lib.eval import runner

    kw = dict(max_new_tokens=4, batch_size=5, progress=False, cache_dir=tmp_path / "cache")
    bench = benchmark_from_file(MATH500, like="math500")
    first = evaluate(model_dir, bench, **kw)
    assert evaluate(model_dir, bench, **kw).settings["benchmarks"]["math500"]["generated"] == 0
    real = runner.prompt_ids
    monkeypatch.setattr(runner, "prompt_ids", lambda tok, text: real(tok, text)[1:])
    again = evaluate(model_dir, bench, **kw)
    assert again.settings["benchmarks"]["math500"]["generated"] == len(first.records)


def test_cache_files_are_per_key(tmp_path):
    cache = GenerationCache(tmp_path, "b", {"k": 1})
    cache.append({"idx": 1, "prompt_sha": "aaa", "response": "x"})
    cache.append({"idx": 2, "prompt_sha": "bbb", "response": "y"})
    assert set(cache.load()) == {"1", "2"}
    assert GenerationCache(tmp_path, "b", {"k": 2}).load() == {}
    assert json.loads(cache.key_path.read_text()) == {"k": 1}


def test_cli_eval(model_dir, tmp_path, capsys):
    out = tmp_path / "cli"
    rc = main(["eval", "--model", str(model_dir), "--benchmark-file", str(MATH500), "--layout", "math500",
               "--max-new-tokens", "8", "--batch-size", "5", "--out", str(out), "--quiet", "--no-cache"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "accuracy" in printed and "truncated_pct" in printed
    assert (out / "samples.jsonl").is_file() and len(pd.read_csv(out / "summary.csv")) == 5
    assert main(["eval", "--model", str(model_dir), "--benchmarks", "no_such_bench"]) == 2
    assert "unknown benchmark 'no_such_bench'" in capsys.readouterr().err
    ambiguous = tmp_path / "ambiguous.jsonl"
    ambiguous.write_text('{"question": "How many?", "answer": "Six and one. #### 7"}\n')
    assert main(["eval", "--model", str(model_dir), "--benchmark-file", str(ambiguous)]) == 2
    assert "cannot tell its layout" in capsys.readouterr().err
    assert main(["eval", "--model", str(tmp_path / "no_model"), "--benchmarks", "math500"]) == 2
    capsys.readouterr()
    rc = main(["eval", "--model", str(model_dir), "--benchmark-file", str(MATH500), "--layout", "math500",
               "--max-new-tokens", "8", "--batch-size", "5", "--out", str(out), "--quiet", "--no-cache",
               "--length", "generated", "--keywords", "paper", "--max-model-len", "4096"])
    written = pd.read_csv(out / "summary.csv")
    assert rc == 0 and set(written["length_count"]) == {"generated"} and set(written["keywords"]) == {"paper"}
    assert json.loads((out / "settings.json").read_text())["context"]["max_model_len"] == 4096
    assert main(["eval", "--model", str(model_dir), "--benchmark-file", str(MATH500), "--layout", "math500",
                 "--max-new-tokens", "8", "--quiet", "--no-cache", "--max-model-len", "10"]) == 2
    assert "max_model_len=10 is below" in capsys.readouterr().err


def test_grades_are_cached_unless_timed_out(model_dir, tmp_path, monkeypatch):
    from l2s_lib.eval import grading

    bench = benchmark_from_file(MATH500, like="math500")
    kw = dict(max_new_tokens=4, batch_size=5, progress=False, cache_dir=tmp_path / "cache")
    real = grading.grade_response

    def timing_out(response, reference, grader="math"):
        g = real(response, reference, grader)
        return grading.Grade(g.extracted, False, timed_out=True)

    monkeypatch.setattr(grading, "grade_response", timing_out)
    first = evaluate(model_dir, bench, **kw)
    assert first.settings["benchmarks"]["math500"]["grade_timeouts"] == 5
    grades_file = next((tmp_path / "cache" / "generations").glob("*.grades.jsonl"), None)
    assert grades_file is None  # nothing undecided was stored

    monkeypatch.setattr(grading, "grade_response", real)
    second = evaluate(model_dir, bench, **kw)
    assert second.settings["benchmarks"]["math500"]["grade_timeouts"] == 0
    assert len(next((tmp_path / "cache" / "generations").glob("*.grades.jsonl")).read_text().splitlines()) == 5

    def must_not_grade(*a, **k):
        raise AssertionError("decided grades are read from the cache")

    monkeypatch.setattr(grading, "grade_response", must_not_grade)
    third = evaluate(model_dir, bench, **kw)
    pd.testing.assert_frame_equal(third.records, second.records)


def test_benchmark_defaults_and_level_types(model_dir, tmp_path):
    from l2s_lib.eval import benchmarks as bm

    bm.register_benchmark("tmp_defaults", display_name="D", path=MATH500, layout="math500", grader="math",
                          levels=[1, 2, 3, 5], prompt="chat", max_new_tokens=3)
    try:
        kw = dict(batch_size=5, progress=False, use_cache=False)
        res = evaluate(model_dir, ["tmp_defaults", benchmark_from_file(GSM8K, like="gsm8k")], max_new_tokens={"gsm8k": 2},
                       out_dir=tmp_path, **kw)
        assert res.settings["benchmarks"]["tmp_defaults"]["prompt"] == "chat"
        assert res.records.groupby("benchmark")["n_tokens"].max().to_dict() == {"tmp_defaults": 3, "gsm8k": 2}
        assert res.settings["benchmarks"]["gsm8k"]["prompt"] == "qwen25-math-cot"
        overridden = evaluate(model_dir, "tmp_defaults", prompt="cot", max_new_tokens=2, **kw)
        assert overridden.settings["benchmarks"]["tmp_defaults"]["prompt"] == "cot"
        assert overridden.records["n_tokens"].max() <= 2
    finally:
        bm._REGISTRY.pop("tmp_defaults")
    # Levels stay ints (None where a benchmark has none), in the records and in samples.jsonl.
    assert list(res.records["level"]) == [1, 3, 2, 2, 5, None, None, None, None]
    first, last = (json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()[::8])
    assert first["level"] == 1 and last["level"] is None


class FakeVLLM(HFBackend):
    """Stands in for vLLM (not installed here): a lazily started engine that takes ``max_model_len``."""

    name = "vllm"

    def __init__(self, model, **kw):
        super().__init__(model, **kw)
        self.max_model_len, self._llm = None, None


def test_vllm_max_model_len_comes_from_the_budget_and_keys_the_cache(model_dir, tmp_path):
    bench = benchmark_from_file(MATH500, like="math500")
    kw = dict(progress=False, cache_dir=tmp_path / "cache", limit=2)
    engine = FakeVLLM(model_dir, batch_size=2)
    res = evaluate(model_dir, bench, backend=engine, max_new_tokens=BUDGET, **kw)
    longest = res.settings["benchmarks"]["math500"]["longest_prompt_tokens"]
    # rounded up to the step, but within the model's 2048 positions
    assert engine.max_model_len == 1024 and longest + BUDGET <= 1024
    keys = [json.loads(p.read_text()) for p in (tmp_path / "cache" / "generations").glob("*.key.json")]
    assert [k["max_model_len"] for k in keys] == [1024] and keys[0]["backend"] == "vllm"
    other = evaluate(model_dir, bench, backend=FakeVLLM(model_dir, batch_size=2), max_new_tokens=BUDGET,
                     max_model_len=2000, **kw)
    assert other.settings["benchmarks"]["math500"]["generated"] == 2  # another context: not served from cache
