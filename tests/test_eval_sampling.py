"""Sampled evaluation (avg@n, pass@k, per-question spread) and thinking modes (enable_thinking on/off)."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from l2s_lib import metrics, stats, tiny
from l2s_lib.cli import main
from l2s_lib.errors import ConfigError
from l2s_lib.eval import benchmark_from_file, evaluate
from l2s_lib.eval.generation import HFBackend
from l2s_lib.eval.prompts import build_prompt, get_prompt

FIXTURES = Path(__file__).parent / "fixtures" / "benchmarks"
MATH500 = FIXTURES / "math500" / "test.jsonl"
BUDGET = 10
SAMPLED = dict(temperature=0.6, top_p=0.95, top_k=20)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: Qwen3's chat template reduced to its turns and its thinking switch: with ``enable_thinking=False`` the
#: assistant turn opens with an empty thinking block.
QWEN3_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}"
)


@pytest.fixture(scope="module")
def model_dir(tiny_pair):
    return tiny_pair[1]


@pytest.fixture
def bench():
    return benchmark_from_file(MATH500, like="math500")


class Interrupted(Exception):
    pass


class CountingBackend(HFBackend):
    """Counts the answers it generates; raises after ``stop_after`` of them (a killed run) when given."""

    def __init__(self, model, stop_after=None, **kw):
        super().__init__(model, **kw)
        self.stop_after = stop_after
        self.generated = 0

    def generate(self, prompts, params, progress=True, desc="generate", seeds=None):
        for item in super().generate(prompts, params, progress, desc, seeds=seeds):
            if self.generated == self.stop_after:
                raise Interrupted
            self.generated += 1
            yield item


def records(per_question: dict[str, list[bool]], **extra) -> pd.DataFrame:
    rows = [{"model": "m", "benchmark": "b", "level": None, "idx": q, "sample": s, "correct": c,
             "response": "ok", "finish_reason": "eos", "n_tokens": 10 + s, **extra}
            for q, answers in per_question.items() for s, c in enumerate(answers)]
    return pd.DataFrame(rows)


def test_pass_at_k_matches_the_closed_form():
    answers = {"a": [True] * 5 + [False] * 11, "b": [False] * 16, "c": [True] * 16, "d": [True, False] * 8}
    row = metrics.summarize(records(answers)).iloc[0]
    assert row.n_samples == 16 and row.n_questions == 4 and row.n == 64
    assert [c for c in row.index if c.startswith("pass@")] == ["pass@1", "pass@2", "pass@4", "pass@8", "pass@16"]
    for k in (1, 2, 4, 8, 16):
        closed = np.mean([1 - math.comb(16 - sum(v), k) / math.comb(16, k) for v in answers.values()]) * 100
        assert row[f"pass@{k}"] == pytest.approx(closed, abs=1e-9)
    assert row["pass@1"] == pytest.approx(row.accuracy)  # pass@1 is avg@n
    assert row["pass@16"] == 75.0  # three of four questions have a correct answer among 16
    assert metrics.pass_ks(16) == [1, 2, 4, 8, 16] and metrics.pass_ks(6) == [1, 2, 4, 6] and metrics.pass_ks(1) == [1]


def test_avg_at_n_interval_and_spread():
    answers = {"a": [True, True, False, False], "b": [True, True, True, True], "c": [False] * 4}
    row = metrics.summarize(records(answers)).iloc[0]
    per_question = np.array([50.0, 100.0, 0.0])
    assert row.accuracy == pytest.approx(per_question.mean())  # avg@n: mean over questions of their accuracy
    est = stats.bootstrap_ci(per_question)  # the interval resamples questions, their answers kept together
    assert (row.accuracy_ci_low, row.accuracy_ci_high) == (est.ci_low, est.ci_high)
    assert row.question_sd == pytest.approx(per_question.std()) and row.mixed_pct == pytest.approx(100 / 3)
    assert row.mean_tokens == 11.5  # mean length over all answers
    greedy = metrics.summarize(records({"a": [True], "b": [False]})).iloc[0]
    assert greedy.n_samples == 1 and greedy.mixed_pct == 0 and greedy["pass@1"] == greedy.accuracy == 50
    assert "pass@2" not in greedy.index


@pytest.mark.parametrize("text, block, thinks", [
    ("The answer is 4.", None, False),
    ("<think>\n\n</think>\n\nThe answer is 4.", "\n\n", False),  # Qwen3's empty block honours no-think
    ("<think>2 + 2 = 4, wait</think>The answer is 4.", "2 + 2 = 4, wait", True),
    ("so 2 + 2 = 4.\n</think>\nThe answer is 4.", "so 2 + 2 = 4.\n", True),  # R1: <think> opened by the prompt
    ("<think>still going when the budget ran out", "still going when the budget ran out", True),
])
def test_thinking_block(text, block, thinks):
    assert metrics.thinking_block(text) == block and metrics.thinks(text) is thinks


def test_no_think_honoured_rate():
    df = records({"a": [True, True], "b": [False, True]}, thinking="off")
    df.loc[1, "response"] = "<think>let me think</think>4"
    row = metrics.summarize(df).iloc[0]
    assert row.thinking_pct == 25.0 and row.no_think_honoured_pct == 75.0
    assert math.isnan(metrics.summarize(records({"a": [True]})).iloc[0].no_think_honoured_pct)


def test_thinking_switch_renders_the_models_chat_template(tmp_path):
    tok = tiny.build_tokenizer()
    tok.chat_template = QWEN3_CHAT_TEMPLATE
    off = build_prompt("chat", "What is 2+2?", tok, thinking=False)
    on = build_prompt("chat", "What is 2+2?", tok, thinking=True)
    assert off.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n") and on.endswith("<|im_start|>assistant\n")
    assert build_prompt("chat", "What is 2+2?", tok) == on  # None: the template's default
    assert get_prompt("qwen25-math-cot-chat").thinking_switch_works(tok)
    with pytest.raises(ConfigError, match="no thinking switch; use a chat-template prompt"):
        build_prompt("qwen25-math-cot", "What is 2+2?", tok, thinking=False)
    tok.chat_template = tiny.QWEN_CHAT_TEMPLATE  # Qwen2.5's template: no enable_thinking branch
    assert not get_prompt("chat").thinking_switch_works(tok)
    tok.chat_template = None
    with pytest.raises(ConfigError, match="no chat template"):
        build_prompt("chat", "What is 2+2?", tok, thinking=False)


def test_evaluate_with_thinking_off(model_dir, bench, tmp_path):
    """A Qwen3-like template gets the no-think prompt; a template without the switch warns."""
    qwen3 = tmp_path / "qwen3"
    tiny.make_model(qwen3)
    cfg_path = qwen3 / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["chat_template"] = QWEN3_CHAT_TEMPLATE
    cfg_path.write_text(json.dumps(cfg))
    (qwen3 / "chat_template.jinja").unlink(missing_ok=True)
    kw = dict(prompt="chat", max_new_tokens=4, limit=2, progress=False, use_cache=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the switch works: no warning
        res = evaluate(qwen3, bench, thinking=False, **kw)
    assert set(res.records["thinking"]) == {"off"} and res.settings["thinking"] == "off"
    row = res.summary.iloc[-1]
    assert row.no_think_honoured_pct == 100 - row.thinking_pct
    with pytest.warns(UserWarning, match="no thinking switch"):
        evaluate(model_dir, bench, thinking=False, **kw)
    with pytest.raises(ConfigError, match="thinking must be"):
        evaluate(model_dir, bench, thinking="off", **kw)


def test_sampled_run_resumes_answer_by_answer_and_repeats(model_dir, bench, tmp_path):
    kw = dict(max_new_tokens=BUDGET, batch_size=3, progress=False, model_name="m", n_samples=4, **SAMPLED)
    reference = evaluate(model_dir, bench, use_cache=False, **kw)
    rec = reference.records
    assert len(rec) == 5 * 4 and list(rec["sample"][:4]) == [0, 1, 2, 3]
    # Sampled: the answers of a question differ (a random tiny model, temperature 0.6 over its flat logits).
    assert rec.groupby("idx")["response"].nunique().max() > 1
    assert "pass@4" in reference.summary and reference.settings["benchmarks"]["math500"]["n_samples"] == 4

    cache = tmp_path / "cache"
    first = CountingBackend(model_dir, stop_after=7, batch_size=3)
    with pytest.raises(Interrupted):
        evaluate(model_dir, bench, backend=first, cache_dir=cache, **kw)
    assert first.generated == 7
    resumed_backend = CountingBackend(model_dir, batch_size=3)
    resumed = evaluate(model_dir, bench, backend=resumed_backend, cache_dir=cache, **kw)
    assert resumed_backend.generated == 20 - 7  # no finished answer generated again
    assert resumed.settings["benchmarks"]["math500"]["from_cache"] == 7
    pd.testing.assert_frame_equal(resumed.records, rec)
    pd.testing.assert_frame_equal(resumed.summary, reference.summary)  # the same numbers twice

    # More samples reuse the first ones; another seed is another run.
    more_backend = CountingBackend(model_dir, batch_size=3)
    more = evaluate(model_dir, bench, backend=more_backend, cache_dir=cache, **{**kw, "n_samples": 6})
    assert more_backend.generated == 5 * 2
    pd.testing.assert_frame_equal(more.records[more.records["sample"] < 4].reset_index(drop=True), rec)
    other = evaluate(model_dir, bench, use_cache=False, **{**kw, "seed": 1})
    assert list(other.records["response"]) != list(rec["response"])


def test_sampled_run_needs_a_temperature(model_dir, bench):
    with pytest.raises(ConfigError, match="greedy decoding gives the same answer"):
        evaluate(model_dir, bench, n_samples=4, progress=False)
    with pytest.raises(ConfigError, match="n_samples must be a positive integer"):
        evaluate(model_dir, bench, n_samples=0, temperature=0.6, progress=False)


def test_cli_sampled_eval(model_dir, tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["eval", "--model", str(model_dir), "--benchmark-file", str(MATH500), "--layout", "math500",
            "--max-new-tokens", "6", "--limit", "3", "--out", str(out), "--quiet",
            "--n-samples", "16", "--temperature", "0.6", "--top-p", "0.95", "--top-k", "20"]
    assert main(args) == 0
    summary = pd.read_csv(out / "summary.csv")
    assert {"accuracy_ci_low", "accuracy_ci_high", "pass@16", "question_sd"} <= set(summary.columns)
    assert set(summary["n_samples"]) == {16} and set(summary["n"]) >= {48}
    settings = json.loads((out / "settings.json").read_text())
    assert settings["benchmarks"]["math500"]["decoding"]["top_k"] == 20 and settings["n_samples"] == 16
    assert settings["benchmarks"]["math500"]["generated"] == 48
    first = (out / "summary.csv").read_text()
    assert main(args) == 0  # again: every answer from the cache, the same numbers
    assert json.loads((out / "settings.json").read_text())["benchmarks"]["math500"]["generated"] == 0
    assert (out / "summary.csv").read_text() == first
    capsys.readouterr()
    assert main(args[:-8] + ["--n-samples", "4"]) == 2
    assert "greedy decoding gives the same answer" in capsys.readouterr().err


def test_sampling_and_the_static_greedy_decoder_share_a_backend(model_dir, bench):
    """Greedy runs take the static decoder, sampled runs transformers' generate with per-row seeds, on one backend."""
    from l2s_lib.eval import decoding

    backend = HFBackend(model_dir)
    kw = dict(backend=backend, max_new_tokens=BUDGET, progress=False, use_cache=False)
    greedy = evaluate(model_dir, bench, **kw)
    assert greedy.settings["benchmarks"]["math500"]["decoder"] == decoding.NAME
    sampled = evaluate(model_dir, bench, n_samples=2, **SAMPLED, **kw)
    assert sampled.settings["benchmarks"]["math500"]["decoder"] == "generate"
    # The same answers as a backend that always uses generate: the seeding is the evaluation's, not the loop's.
    reference = evaluate(model_dir, bench, n_samples=2, **SAMPLED, **{**kw, "backend": HFBackend(model_dir,
                                                                                              decoder="generate")})
    pd.testing.assert_frame_equal(sampled.records, reference.records)
    with pytest.raises(ConfigError, match="decoder 'static' cannot run .* greedily only"):
        evaluate(model_dir, bench, n_samples=2, **SAMPLED, **{**kw, "backend": HFBackend(model_dir, decoder="static")})
