"""The organism merge study: TA and TIES of System 1 -> System 2 through the engine, graded by the harness.

This module holds only what is specific to the organisms; everything else is the compendium's one pipeline:

- merges: ``l2s_lib.merge.merge`` from a mergekit-style config (``ta_config`` / ``ties_config``; TA:
  ``M = A + alpha (B - A)``; TIES with one task vector: ``M = A + alpha * trim(B - A)``, the engine's exact top-k
  trim keeping the ``density = 1 - k`` fraction per tensor), written in fp32 to a folder;
- generation, grading and reflection: ``l2s_lib.eval.evaluate`` (greedy; the ``organism`` prompt, or the
  ``organism_forced`` prompt that prefills a first pass with a planted error; the integer grader; the paper's
  reflection keywords of ``l2s_lib.metrics``).

What the organism study adds, computed from eval's sample records (``rows_from_records``): **first-pass
correctness** (the first ``answer is N`` or ``\\boxed{N}`` of the solution, prefilled text included) and a
**flip** (first answer right, final answer wrong).
"""

from __future__ import annotations

import re
from pathlib import Path

from l2s_lib.organisms import world as world_mod

#: The first answer a solution states: ``So the answer is N.`` of the first pass, or a box when there is none.
FIRST = re.compile(r"answer is (-?\d+)|\\boxed\{(-?\d+)\}")

TA_ALPHAS = tuple(round(0.5 + 0.05 * i, 2) for i in range(11))
#: TIES settings (trim ratio k = fraction removed, alpha): k swept at alpha 1.0, plus the paper's 14B/32B pairs.
TIES_SETTINGS = tuple((k, 1.0) for k in (0.2, 0.35, 0.5, 0.65, 0.8)) + ((0.2, 0.5), (0.25, 0.55))
#: Alphas of the equal-rate control sweep (fewer: it only has to locate where reflection comes from).
CONTROL_ALPHAS = (0.6, 0.7, 0.8, 0.9)
#: Decoding budget of the study (System 2's longest target, level 5 with a tie-break pass, is about 200 tokens).
MAX_NEW = 300
METRICS = ("correct", "first_correct", "flip", "length", "reflect")


def first_answer(text: str) -> int | None:
    """The first answer stated in ``text`` (see ``FIRST``), or None."""
    m = FIRST.search(text)
    if not m:
        return None
    return int(m.group(1) if m.group(1) is not None else m.group(2))


def rows_from_records(records, prefilled=None) -> list[dict]:
    """Per-response study metrics from ``l2s_lib.eval`` sample records (a DataFrame of ``RECORD_COLUMNS``).

    ``correct`` is eval's grade, ``length`` its ``n_tokens``, ``reflect`` its ``reflective`` flag; ``first_correct``
    and ``flip`` read the first stated answer of the whole solution, ``prefilled(question)`` (the text a prompt
    prefilled after ``A:``, if any) followed by the response.
    """
    rows = []
    for r in records.itertuples(index=False):
        text = (prefilled(r.question) if prefilled else "") + r.response
        first = first_answer(text)
        first_ok = first is not None and str(first) == str(r.reference).strip()
        rows.append({"correct": bool(r.correct), "first_correct": first_ok, "flip": first_ok and not r.correct,
                     "length": int(r.n_tokens), "reflect": bool(r.reflective), "level": int(r.level),
                     "text": r.response})
    return rows


def summarize(rows: list[dict]) -> list[dict]:
    """Per-level and overall means of correct, first_correct, flip, length, reflect."""
    out = []
    levels = sorted({r["level"] for r in rows})
    for lv in levels + ["all"]:
        sel = [r for r in rows if lv == "all" or r["level"] == lv]
        n = len(sel)
        out.append({"level": lv, "n": n, **{k: sum(float(r[k]) for r in sel) / n for k in METRICS}})
    return out


def study_problems(seed: int, per_level: int = 100, levels=world_mod.LEVELS) -> list[world_mod.Problem]:
    """A held-out problem set for the study loop (per level ``per_level`` problems)."""
    return world_mod.sample_unique({lv: per_level for lv in levels}, seed=seed, split="heldout")


def study_benchmark(seed: int, per_level: int, folder: str | Path):
    """``study_problems(seed, per_level)`` written to ``folder`` as an unregistered eval benchmark graded like
    ``org_levels`` (integer grader, the organism prompt)."""
    from l2s_lib.eval.benchmarks import benchmark_from_file
    from l2s_lib.organisms import benchmarks, register_eval

    register_eval()
    path = benchmarks.write_jsonl(Path(folder) / f"study_s{seed}_n{per_level}.jsonl",
                                  benchmarks.rows(study_problems(seed, per_level)))
    return benchmark_from_file(path, like="org_levels")


def ta_config(system1: str | Path, system2: str | Path, alpha: float) -> dict:
    """Engine config of Task Arithmetic ``System1 + alpha (System2 - System1)``, fp32 output (no rounding)."""
    return {"merge_method": "task_arithmetic", "base_model": str(system1),
            "models": [{"model": str(system2), "parameters": {"weight": float(alpha)}}],
            "dtype": "float32", "tokenizer_source": "base", "seed": 0}


def ties_config(system1: str | Path, system2: str | Path, k: float, alpha: float) -> dict:
    """Engine config of TIES with one task vector, trim ratio ``k`` (fraction removed) and scale ``alpha``."""
    return {"merge_method": "ties", "base_model": str(system1),
            "models": [{"model": str(system2), "parameters": {"weight": 1.0, "density": round(1.0 - k, 6)}}],
            "parameters": {"lambda": float(alpha)}, "dtype": "float32", "tokenizer_source": "base", "seed": 0}


def merge(config: dict, out_dir: str | Path, device: str = "cpu") -> Path:
    """The merge of ``config`` written to ``out_dir`` by the engine (replacing a folder already there)."""
    from l2s_lib.merge import merge as engine_merge

    return engine_merge(config, out_dir, device=device, overwrite=True, progress=False)


def evaluate(folder: str | Path, benchmark, *, prompt: str = "organism", device: str = "cpu",
             batch_size: int = 512, max_new_tokens: int = MAX_NEW):
    """eval's sample records of the checkpoint ``folder`` on ``benchmark`` (greedy, fp32, no cache)."""
    from l2s_lib.eval import evaluate as eval_evaluate
    from l2s_lib.organisms import register_eval

    register_eval()
    res = eval_evaluate(str(folder), [benchmark], prompt=prompt, max_new_tokens=max_new_tokens, device=device,
                        dtype="float32", batch_size=batch_size, use_cache=False, progress=False)
    return res.records
