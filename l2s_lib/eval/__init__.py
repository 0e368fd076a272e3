"""Evaluation harness: benchmarks, prompts, generation backends, grading, resumable caches.

The public entry points::

    from l2s_lib.eval import evaluate, is_correct
    result = evaluate("path/or/hub-id", "gsm8k,math500", limit=50)
    result.summary   # model, benchmark, level, n, accuracy, mean_tokens, reflective_pct, keyword_freq, truncated_pct,
                     # accuracy_truncated_wrong, length_count, keywords (metrics.SUMMARY_COLUMNS)
    result.records   # one row per sample

``l2s_lib.eval.benchmarks.register_benchmark`` and ``l2s_lib.eval.prompts.register_prompt`` let other
modules (the organisms) add benchmarks and prompts.
"""

from l2s_lib.eval.benchmarks import (
    Benchmark,
    Problem,
    benchmark_from_file,
    get_benchmark,
    list_benchmarks,
    load_benchmark,
    register_benchmark,
)
from l2s_lib.eval.generation import DecodingParams, Generation, HFBackend, VLLMBackend, make_backend
from l2s_lib.eval.grading import extract_answer, grade, is_correct
from l2s_lib.eval.prompts import build_prompt, get_prompt, list_prompts, register_prompt
from l2s_lib.eval.runner import PAPER_DECODING, EvalResult, evaluate

__all__ = [
    "Benchmark", "Problem", "benchmark_from_file", "get_benchmark", "list_benchmarks", "load_benchmark",
    "register_benchmark", "DecodingParams", "Generation", "HFBackend", "VLLMBackend", "make_backend",
    "extract_answer", "grade", "is_correct", "build_prompt", "get_prompt", "list_prompts", "register_prompt",
    "EvalResult", "evaluate", "PAPER_DECODING",
]
