"""Evaluate a model on benchmarks: prompts -> cached, resumable generation -> grades -> records + summary.

``evaluate`` is what the CLI (``l2s eval``), the studies and the notebooks call. Decoding follows the
paper's protocol by default (greedy, zero-shot ``qwen25-math-cot``, 10,240 new tokens, see DESIGN.md
section 4); a benchmark may register its own defaults (the organism benchmarks do), and a call may
override them for all benchmarks (a value) or per benchmark (a mapping benchmark -> value).
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from l2s_lib import metrics, paths
from l2s_lib.checkpoints import resolve_model
from l2s_lib.errors import CheckpointError, ConfigError
from l2s_lib.eval.benchmarks import Benchmark, get_benchmark, load_benchmark
from l2s_lib.eval import grading
from l2s_lib.eval.cache import GenerationCache, generation_key, grade_key, sample_key, text_sha
from l2s_lib.eval.generation import Backend, DecodingParams, make_backend, prompt_ids, sample_seed
from l2s_lib.eval.prompts import get_prompt

#: Defaults of the paper's protocol for System 2 and the merges (System 1: see ``PAPER_DECODING``).
DEFAULT_PROMPT = "qwen25-math-cot"
DEFAULT_MAX_NEW_TOKENS = 10240

#: The paper's decoding per role (greedy for both): ``evaluate(model, benches, **PAPER_DECODING["system1"])``.
PAPER_DECODING = {
    "system1": {"prompt": "cot", "max_new_tokens": 8192},
    "system2": {"prompt": DEFAULT_PROMPT, "max_new_tokens": DEFAULT_MAX_NEW_TOKENS},
    "merged": {"prompt": DEFAULT_PROMPT, "max_new_tokens": DEFAULT_MAX_NEW_TOKENS},
}

RECORD_COLUMNS = ["model", "benchmark", "idx", "level", "question", "reference", "response", "extracted",
                  "correct", "n_tokens", "n_tokens_retok", "n_tokens_paper", "prompt_tokens", "finish_reason",
                  "truncated", "reflective", "keyword_count", "prompt", "max_new_tokens", "sample", "thinking",
                  "thinks"]

#: ``thinking`` as the records write it (``evaluate(thinking=...)``).
THINKING_NAMES = {None: None, True: "on", False: "off"}

#: What an evaluation does when prompt + budget exceeds the model's positions (``max_position_embeddings``).
CONTEXT_OVERFLOW = ("warn", "error")
#: vLLM's default ``max_model_len`` is the longest prompt + budget rounded up to this, so that evaluations of
#: different benchmark sets usually share one value (and one generation cache).
MAX_MODEL_LEN_STEP = 1024


@dataclass
class EvalResult:
    """Per-sample ``records`` and the ``summary`` table (columns of ``metrics.SUMMARY_COLUMNS``)."""

    records: "pd.DataFrame"  # noqa: F821
    summary: "pd.DataFrame"  # noqa: F821
    settings: dict = field(default_factory=dict)
    out_dir: Path | None = None

    def save(self, out_dir: str | os.PathLike) -> Path:
        """Write ``samples.jsonl``, ``summary.csv`` and ``settings.json`` to ``out_dir``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        with (out / "samples.jsonl").open("w", encoding="utf-8") as f:
            for rec in self.records.to_dict(orient="records"):
                f.write(json.dumps(rec, ensure_ascii=False, default=_jsonable) + "\n")
        self.summary.round(4).to_csv(out / "summary.csv", index=False)
        (out / "settings.json").write_text(json.dumps(self.settings, indent=2, default=str) + "\n")
        self.out_dir = out
        return out


def _jsonable(value):
    # numpy scalars and NaN levels from pandas
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def resolve_model_dir(model: str | os.PathLike) -> Path:
    """A local folder for ``model``: the path itself, or the hub snapshot (``checkpoints.resolve_model``)."""
    return resolve_model(model)[0]


def _grader_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        mv = version("math-verify")
    except PackageNotFoundError:  # pragma: no cover
        mv = "?"
    return f"{grading.GRADER_VERSION}+math-verify-{mv}"


def _per_benchmark(value, name: str):
    """``value`` itself, or its entry for benchmark ``name`` when it is a mapping (None if absent)."""
    if isinstance(value, Mapping):
        return value.get(name)
    return value


def model_positions(model_dir: str | os.PathLike) -> int | None:
    """The positions a checkpoint was configured for (``max_position_embeddings`` of its config.json)."""
    try:
        cfg = json.loads((Path(model_dir) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    value = cfg.get("max_position_embeddings", (cfg.get("text_config") or {}).get("max_position_embeddings"))
    return int(value) if isinstance(value, int) else None


def _context_message(bench: str, prompt_len: int, budget: int, positions: int) -> str:
    room = positions - prompt_len
    budget_fix = f"max_new_tokens <= {room}" if room > 0 else "a shorter prompt (the prompt alone is too long)"
    return (f"{bench}: the longest prompt ({prompt_len} tokens) + max_new_tokens ({budget}) = {prompt_len + budget} "
            f"exceeds the model's {positions} positions (max_position_embeddings of its config.json). Fix: "
            f"{budget_fix}, or evaluate a checkpoint configured for more positions (a merge written "
            "with policies.config_source: patched raises max_position_embeddings)")


def _parse_benchmarks(benchmarks) -> list[Benchmark]:
    if isinstance(benchmarks, (str, Benchmark)):
        benchmarks = [benchmarks]
    items: list = []
    for b in benchmarks:
        items.extend([x.strip() for x in b.split(",") if x.strip()] if isinstance(b, str) else [b])
    if not items:
        raise ConfigError("no benchmark given")
    return [get_benchmark(b) for b in items]


def evaluate(
    model: str | os.PathLike,
    benchmarks: str | Benchmark | Sequence[str | Benchmark],
    *,
    prompt: str | Mapping[str, str] | None = None,
    max_new_tokens: int | Mapping[str, int] | None = None,
    limit: int | None = None,
    backend: str | Backend = "hf",
    device: str = "cpu",
    dtype: str = "auto",
    batch_size: int | None = None,
    out_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    seed: int = 0,
    progress: bool = True,
    temperature: float = 0.0,
    top_p: float = 1.0,
    top_k: int = 0,
    n_samples: int = 1,
    thinking: bool | None = None,
    keywords: str | Sequence[str] | Mapping[str, str] | None = None,
    length: str | Mapping[str, str] | None = None,
    model_name: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    tensor_parallel_size: int = 1,
    max_model_len: int | None = None,
    context_overflow: str = "warn",
    decoder: str = "auto",
) -> EvalResult:
    """Generate, grade and summarise ``model`` on ``benchmarks``.

    ``model``: a local checkpoint folder or a hub id. ``benchmarks``: registered names (a list or a
    comma-separated string) or ``Benchmark`` objects (``benchmark_from_file``). ``prompt`` and
    ``max_new_tokens`` override the benchmarks' defaults (a value for all, or a mapping by benchmark).
    ``backend``: "hf", "vllm", or a ready ``Backend`` (reused across calls; its own device, dtype and batch
    size apply; ``batch_size=None`` lets the backend choose). ``decoder`` (hf backend): ``"auto"``,
    ``"static"`` or ``"generate"`` (see ``HFBackend``). ``limit``: N problems of each benchmark, evenly
    spread over its file (``benchmarks.spread``). ``keywords``: the reflection keyword
    list of the summary ("paper" or "paper-code"), ``length``: its length count ("generated", "paper",
    "retok"; see ``metrics.LENGTH_COUNTS``); both default per benchmark (the six real benchmarks: the
    paper code's "paper-code" and "paper"; else "paper" and "generated"). Generations are cached under
    ``cache_dir`` (default ``paths.cache_dir()``) unless ``use_cache`` is false; ``out_dir`` receives
    ``samples.jsonl`` and ``summary.csv``.

    Context: ``max_model_len`` is the context (prompt + new tokens) the engine may use; it defaults to the
    longest prompt + budget, rounded up to ``MAX_MODEL_LEN_STEP`` (vLLM gets it; HF ``generate`` needs
    none), and a smaller value is refused rather than silently capping responses. When prompt + budget
    exceeds the model's ``max_position_embeddings``, ``context_overflow="warn"`` warns (with the fix) and
    generates past the trained positions on both backends (vLLM is allowed the longer context),
    ``"error"`` refuses. Each record holds its ``prompt_tokens``.

    Sampling: ``temperature > 0`` samples (with ``top_p``, ``top_k``; 0 = no limit) ``n_samples`` answers per
    question, answer ``s`` of question ``idx`` from its own stream seeded ``sample_seed(seed, idx, s)``, each
    cached on its own: an interrupted run resumes answer by answer, and a run with more samples reuses
    the answers of one with fewer. The summary's accuracy is then avg@n, with its interval over questions and
    pass@k (``metrics.summarize``). Greedy decoding (the default, the paper's protocol) is ``n_samples=1``.
    ``thinking``: True/False renders the model's chat template with ``enable_thinking`` on/off (Qwen3's switch;
    a chat-template prompt only, ``prompts.PromptTemplate.build``); the summary reports how often a no-think
    request was honoured. None (default) leaves prompts as they are.

    Returns an ``EvalResult`` whose ``records`` hold one row per answer (columns ``RECORD_COLUMNS``; ``sample``
    numbers the answers of a question from 0).
    """
    import pandas as pd
    from tqdm.auto import tqdm

    if context_overflow not in CONTEXT_OVERFLOW:
        raise ConfigError(f"context_overflow must be one of {', '.join(CONTEXT_OVERFLOW)}, got {context_overflow!r}")
    if max_model_len is not None and (not isinstance(max_model_len, int) or max_model_len < 2):
        raise ConfigError(f"max_model_len must be a positive number of tokens, got {max_model_len!r}")
    if not isinstance(n_samples, int) or isinstance(n_samples, bool) or n_samples < 1:
        raise ConfigError(f"n_samples must be a positive integer, got {n_samples!r}")
    if n_samples > 1 and temperature == 0:
        raise ConfigError(f"n_samples={n_samples} with temperature 0: greedy decoding gives the same answer every "
                          "time; give a temperature (e.g. 0.6) to sample")
    if thinking not in THINKING_NAMES:
        raise ConfigError(f"thinking must be True (on), False (off) or None (the template's default), got {thinking!r}")
    benches = _parse_benchmarks(benchmarks)
    # Read every benchmark first: a missing file should stop the run before a model is loaded.
    problem_sets = {b.name: load_benchmark(b, limit=limit) for b in benches}
    if isinstance(backend, Backend):
        if Path(str(model)) != Path(backend.model_id):
            raise ConfigError(f"model {str(model)!r} differs from the given backend's model {backend.model_id!r}")
        engine = backend
    else:
        kw = dict(device=device, dtype=dtype, batch_size=batch_size)
        if backend == "vllm":
            kw["tensor_parallel_size"] = tensor_parallel_size
        elif backend == "hf":
            kw["decoder"] = decoder
        engine = make_backend(backend, model, **kw)
    model_dir = resolve_model_dir(engine.model_id)
    from l2s_lib.fingerprint import model_fingerprint

    try:
        fingerprint = model_fingerprint(model_dir)
    except FileNotFoundError as exc:
        raise CheckpointError(f"model {str(model)!r}: {exc}") from exc
    if model_name is None:
        model_name = paths.relative_to_root(model) if Path(model).is_dir() else str(model)
    cache_root = Path(cache_dir) if cache_dir is not None else paths.cache_dir()
    tok = engine.tokenizer

    # Prompts, their ids and the context they need, for every benchmark before anything is generated.
    plans = []
    for bench in benches:
        prompt_name = _per_benchmark(prompt, bench.name) or bench.prompt or DEFAULT_PROMPT
        budget = _per_benchmark(max_new_tokens, bench.name) or bench.max_new_tokens \
            or DEFAULT_MAX_NEW_TOKENS
        template = get_prompt(prompt_name)
        params = DecodingParams(max_new_tokens=int(budget), temperature=temperature, top_p=top_p, seed=seed,
                                stop=template.stop, top_k=top_k)
        problems = problem_sets[bench.name]
        prompts = [template.build(p.question, tok, thinking) for p in problems]
        if thinking is not None and not template.thinking_switch_works(tok):
            warnings.warn(f"{bench.name}: the chat template of {model!s} renders the same prompt with "
                          "enable_thinking on and off: it has no thinking switch, and the thinking request "
                          f"({THINKING_NAMES[thinking]}) reaches the model only as the template's default", stacklevel=2)
        ids = [prompt_ids(tok, t) for t in prompts]
        # Keyed by the prompt's text *and* its token ids: the same text tokenised differently (a tokenizer fix,
        # another transformers version) is a different input and must not reuse cached generations.
        shas = [text_sha(t + "\x00" + ",".join(map(str, i))) for t, i in zip(prompts, ids)]
        kw_list = _per_benchmark(keywords, bench.name) or bench.keywords or "paper"
        count = _per_benchmark(length, bench.name) or bench.length or "generated"
        metrics.length_column(count)  # an unknown name fails here, before generation
        plans.append((bench, template, params, problems, prompts, ids, shas, kw_list, count))
    needed = max((max(map(len, pl[5]), default=0) + pl[2].max_new_tokens for pl in plans), default=0)
    positions = model_positions(model_dir)
    context = {"positions": positions, "needed": needed, "overflow": []}
    for bench, _t, params, _p, _pr, ids, *_ in plans:
        longest = max(map(len, ids), default=0)
        if positions is not None and longest + params.max_new_tokens > positions:
            message = _context_message(bench.name, longest, params.max_new_tokens, positions)
            if context_overflow == "error":
                raise ConfigError(message + ", or pass context_overflow='warn' to generate past the trained "
                                  "positions")
            warnings.warn(message + "; generating past the trained positions (context_overflow='warn')",
                          stacklevel=2)
            context["overflow"].append(bench.name)
    if max_model_len is not None and max_model_len < needed:
        raise ConfigError(f"max_model_len={max_model_len} is below the longest prompt + max_new_tokens ({needed}): "
                          "responses would be cut short by the context, not by the budget. Raise max_model_len or "
                          "lower max_new_tokens")
    engine_len = None
    if engine.name == "vllm":
        if max_model_len is None:
            max_model_len = math.ceil(needed / MAX_MODEL_LEN_STEP) * MAX_MODEL_LEN_STEP
            if positions is not None and needed <= positions:
                max_model_len = max(needed, min(max_model_len, positions))
        if getattr(engine, "_llm", None) is None:
            engine.max_model_len = max_model_len
            if positions is not None and max_model_len > positions:
                # vLLM refuses a context beyond max_position_embeddings unless told; the warning above says why.
                os.environ["VLLM_ALLOW_LONG_MAX_MODEL_LEN"] = "1"
        elif (engine.max_model_len or positions or needed) < needed:
            raise ConfigError(f"the given vLLM backend was started with max_model_len={engine.max_model_len}, "
                              f"below the {needed} tokens this evaluation needs: start a new backend")
        engine_len = engine.max_model_len
    context["max_model_len"] = max_model_len

    all_records: list[dict] = []
    settings = {"model": model_name, "model_fingerprint": fingerprint, "benchmarks": {}, "limit": limit,
                "n_samples": n_samples, "thinking": THINKING_NAMES[thinking],
                **engine.identity(), "context": context}
    for bench, template, params, problems, prompts, ids, shas, kw_list, count in plans:
        prompt_key = template.name if thinking is None else f"{template.name}+thinking={THINKING_NAMES[thinking]}"
        key = generation_key(model=fingerprint, benchmark=bench.name, prompt=prompt_key,
                             decoding=params.as_dict(), identity=engine.identity(), device=engine.device,
                             max_model_len=engine_len)
        cache = GenerationCache(cache_root, bench.name, key) if use_cache else None
        done = cache.load() if cache else {}
        generated: dict[tuple[int, int], dict] = {}
        todo: list[tuple[int, int]] = []  # (problem, sample) pairs not in the cache
        for i, p in enumerate(problems):
            for s in range(n_samples):
                hit = done.get(sample_key(p.idx, s))
                if hit is not None and hit.get("prompt_sha") == shas[i]:
                    generated[i, s] = hit
                else:
                    todo.append((i, s))
        started = time.perf_counter()
        if todo:
            seeds = [sample_seed(seed, problems[i].idx, s) for i, s in todo]
            for j, gen in engine.generate([prompts[i] for i, _ in todo], params, progress=progress,
                                          desc=f"{bench.name}", seeds=seeds):
                i, s = todo[j]
                rec = {"idx": problems[i].idx, "prompt_sha": shas[i], "response": gen.text,
                       "n_tokens": gen.n_tokens, "n_tokens_retok": gen.n_tokens_retok,
                       "finish_reason": gen.finish_reason}
                if s:  # sample 0 is written as before sampled evaluation existed (greedy caches stay valid)
                    rec["sample"] = s
                if cache:
                    cache.append(rec)
                generated[i, s] = rec
        settings["benchmarks"][bench.name] = {
            "prompt": template.name, "decoding": params.as_dict(), "n": len(problems), "n_samples": n_samples,
            "thinking": THINKING_NAMES[thinking], "generated": len(todo),
            "from_cache": len(problems) * n_samples - len(todo), "seconds": round(time.perf_counter() - started, 3),
            "cache_file": paths.relative_to_root(cache.path) if cache else None, "grader": bench.grader,
            "keywords": kw_list if isinstance(kw_list, str) else list(kw_list), "length_count": count,
            "longest_prompt_tokens": max(map(len, ids), default=0),
            # The decoding loop that produced this run's generations (None when all came from the cache).
            "decoder": (getattr(engine, "last_decoder", None) or engine.name) if todo else None,
        }
        grades = cache.load_grades() if cache else {}
        timeouts = 0
        version = _grader_version()
        answers = [(i, s) for i in range(len(problems)) for s in range(n_samples)]
        for i, s in tqdm(answers, desc=f"{bench.name}: grade", disable=not progress, unit="sample", leave=False):
            p, rec = problems[i], generated[i, s]
            gkey = grade_key(p.idx, rec["response"], p.answer, bench.grader, version)
            if gkey in grades:
                extracted, correct = grades[gkey]["extracted"], grades[gkey]["correct"]
            else:
                g = grading.grade_response(rec["response"], p.answer, bench.grader)
                extracted, correct = g.extracted, g.correct
                timeouts += g.timed_out
                if cache and not g.timed_out:
                    cache.append_grade(gkey, extracted, correct)
            n_kw = metrics.count_keywords(rec["response"], kw_list)
            all_records.append({
                "model": model_name, "benchmark": bench.name, "idx": p.idx, "level": p.level,
                "question": p.question, "reference": p.answer, "response": rec["response"],
                "extracted": extracted, "correct": bool(correct), "n_tokens": int(rec["n_tokens"]),
                "n_tokens_retok": int(rec["n_tokens_retok"]),
                "n_tokens_paper": metrics.paper_length(rec["response"], tok), "prompt_tokens": len(ids[i]),
                "finish_reason": rec["finish_reason"],
                "truncated": rec["finish_reason"] == "length", "reflective": n_kw > 0, "keyword_count": n_kw,
                "prompt": template.name, "max_new_tokens": params.max_new_tokens, "sample": s,
                "thinking": THINKING_NAMES[thinking], "thinks": metrics.thinks(rec["response"]),
            })
        settings["benchmarks"][bench.name]["grade_timeouts"] = timeouts
    records = pd.DataFrame(all_records, columns=RECORD_COLUMNS)
    # Keep levels as written (ints, or None where a benchmark has none) rather than floats with NaN.
    records["level"] = pd.Series([r["level"] for r in all_records], dtype=object)
    records["idx"] = pd.Series([r["idx"] for r in all_records], dtype=object)
    summary = metrics.summarize(records, keywords={pl[0].name: pl[7] for pl in plans},
                                length={pl[0].name: pl[8] for pl in plans})
    result = EvalResult(records=records, summary=summary, settings=settings)
    if out_dir is not None:
        result.save(out_dir)
    return result
