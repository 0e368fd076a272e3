"""Benchmarks: a registry of named problem sets and loaders for the Qwen2.5-Math toolkit's jsonl layouts.

The paper evaluates with the Qwen2.5-Math evaluation toolkit (``QwenLM/Qwen2.5-Math``, ``evaluation/``),
whose ``data/<name>/test.jsonl`` files each have their own fields. A *layout* says how to read a
question, a reference answer, a difficulty level and an id from one row of such a file, following the
toolkit's ``parse_question`` / ``parse_ground_truth`` (``evaluation/parser.py``):

============  ==========================  =============================================  ==========
layout        question field              reference answer                               level
============  ==========================  =============================================  ==========
gsm8k         ``question``                ``answer`` after ``####`` (commas removed)     --
math500       ``problem``                 ``answer``                                     ``level``
minerva_math  ``problem``                 last ``\\boxed{}`` of ``solution``              --
olympiadbench ``question``                ``final_answer[0]`` without ``$``              --
college_math  ``question``                ``answer`` without ``$``                       --
aime24        ``problem``                 ``answer``                                     --
============  ==========================  =============================================  ==========

A *benchmark* is a registry entry: a name, the paper's display name, where its file lives, its layout,
how it is graded (``"math"``: math-verify equivalence; ``"integer"``: exact integer) and its sorted
difficulty levels when it has them. The six real benchmarks are registered here; other packages add theirs
with ``register_benchmark`` (the organisms through ``l2s_lib.organisms.register_eval()``, called when that
package is imported): this module imports none of them.

Files are read from ``data/benchmarks/<name>/test.jsonl`` (see ``data/benchmarks/README.md``); when a
file is absent and the hub is reachable (``HF_HUB_OFFLINE`` unset), the benchmarks that name a hub
dataset are read through ``datasets`` in the same layout.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from l2s_lib import paths
from l2s_lib.errors import BenchmarkError, ConfigError

GRADERS = ("math", "integer")


@dataclass(frozen=True)
class Problem:
    """One benchmark problem: a unique id, the question text, the reference answer, its level (or None)."""

    idx: int | str
    question: str
    answer: str
    level: int | str | None = None


@dataclass(frozen=True)
class Layout:
    """How to read one jsonl row of a benchmark file: question, reference answer, level."""

    name: str
    question: Callable[[Mapping[str, Any]], str]
    answer: Callable[[Mapping[str, Any]], str]
    level: Callable[[Mapping[str, Any]], Any] = lambda row: None
    fields: tuple[str, ...] = ()  # fields a row must have (checked, for a clear error on a wrong layout)


@dataclass(frozen=True)
class Benchmark:
    """A registered benchmark (see ``register_benchmark``)."""

    name: str
    display_name: str
    path: Path
    layout: str
    grader: str
    levels: tuple | None = None
    hub: Mapping[str, Any] | None = field(default=None, hash=False)
    prompt: str | None = None  # default prompt template (else the evaluation's default)
    max_new_tokens: int | None = None  # default generation budget (else the evaluation's default)
    keywords: str | None = None  # default reflection keyword list of its summary (else "paper")
    length: str | None = None  # default length count of its summary (else "generated")


def _boxes(text: str) -> list[tuple[int, str | None]]:
    """Every ``\\boxed``/``\\fbox`` in ``text``: (position, content), content None when its braces never close."""
    out = []
    for m in re.finditer(r"\\(?:boxed|fbox)\s*", text):
        i = m.end()
        if i < len(text) and text[i] == "{":
            depth, j, content = 0, i, None
            while j < len(text):
                if text[j] == "{":
                    depth += 1
                elif text[j] == "}":
                    depth -= 1
                    if depth == 0:
                        content = text[i + 1 : j]
                        break
                j += 1
            out.append((m.start(), content))
            continue
        token = re.match(r"[^\s$]+", text[i:])
        out.append((m.start(), token.group(0) if token else None))
    return out


def last_boxed(text: str) -> str | None:
    """Content of the last complete ``\\boxed{...}`` (or ``\\fbox{...}``) in ``text``, nested braces kept.

    ``\\boxed 5`` (no braces) gives the token that follows, as LaTeX reads it. A box whose braces never
    close (a truncated answer) is skipped for the one before it; None if there is no complete box.
    """
    complete = [c for _, c in _boxes(text) if c is not None]
    return complete[-1] if complete else None


def boxed_contents(text: str) -> list[str]:
    """Contents of every complete box in ``text``, in order (see ``last_boxed``)."""
    return [c for _, c in _boxes(text) if c is not None]


_YES_NO = {"yes": " (Yes or No)", "no": " (Yes or No)", "true": " (True or False)", "false": " (True or False)"}


def question_suffix(reference: str) -> str:
    """What the toolkit's ``parse_question`` appends to a question whose reference is Yes/No or True/False.

    The toolkit compares its ``strip_string``-ed reference: so "Yes." and ``\\text{No}`` count too.
    """
    r = re.sub(r"^\\text\{(.*)\}$", r"\1", str(reference).replace("$", "").strip().rstrip(".").strip())
    return _YES_NO.get(r.strip().lower(), "")


def _gsm8k_answer(row: Mapping[str, Any]) -> str:
    text = str(row["answer"])
    if "####" not in text:
        raise ValueError("gsm8k answer without '####'")
    return text.split("####")[-1].strip().replace(",", "")


def _minerva_answer(row: Mapping[str, Any]) -> str:
    boxed = last_boxed(str(row["solution"]))
    if boxed is None:
        raise ValueError("minerva_math solution without \\boxed{}")
    return boxed.strip()


def _olympiad_answer(row: Mapping[str, Any]) -> str:
    final = row["final_answer"]
    first = final[0] if isinstance(final, (list, tuple)) else final
    return str(first).strip().strip("$").strip()


def _level(row: Mapping[str, Any]) -> Any:
    level = row.get("level")
    # MATH writes levels as "Level 3" in some copies and as 3 in the toolkit's math500 file.
    if isinstance(level, str):
        m = re.fullmatch(r"\s*(?:Level\s*)?(\d+)\s*", level)
        return int(m.group(1)) if m else level
    return level


LAYOUTS: dict[str, Layout] = {
    "gsm8k": Layout("gsm8k", lambda r: str(r["question"]), _gsm8k_answer, fields=("question", "answer")),
    "math500": Layout("math500", lambda r: str(r["problem"]), lambda r: str(r["answer"]).strip(), _level,
                      fields=("problem", "answer")),
    "minerva_math": Layout("minerva_math", lambda r: str(r["problem"]), _minerva_answer,
                           fields=("problem", "solution")),
    "olympiadbench": Layout("olympiadbench", lambda r: str(r["question"]), _olympiad_answer,
                            fields=("question", "final_answer")),
    "college_math": Layout("college_math", lambda r: str(r["question"]),
                           lambda r: str(r["answer"]).replace("$", "").strip(), fields=("question", "answer")),
    "aime24": Layout("aime24", lambda r: str(r["problem"]), lambda r: str(r["answer"]).strip(),
                     fields=("problem", "answer")),
}

_REGISTRY: dict[str, Benchmark] = {}


def register_benchmark(
    name: str,
    *,
    display_name: str,
    path: str | os.PathLike,
    layout: str,
    grader: str,
    levels: Iterable | None = None,
    hub: Mapping[str, Any] | None = None,
    prompt: str | None = None,
    max_new_tokens: int | None = None,
    keywords: str | None = None,
    length: str | None = None,
) -> Benchmark:
    """Register (or replace) a benchmark.

    ``path``: its jsonl file (relative paths are taken from the repository root). ``layout``: one of
    ``LAYOUTS``. ``grader``: ``"math"`` (math-verify) or ``"integer"`` (exact integer). ``levels``: the
    difficulty levels when the benchmark has them (stored sorted). ``hub``: keyword arguments of
    ``datasets.load_dataset`` (``path``, optional ``name``, ``split``) used when the file is absent and
    the hub is reachable. ``prompt`` / ``max_new_tokens``: this benchmark's decoding defaults, used when
    an evaluation does not set them; ``keywords`` / ``length``: the reflection keyword list and the length
    count of its summary (``metrics.KEYWORD_LISTS``, ``metrics.LENGTH_COUNTS``) when an evaluation does not
    set them.
    """
    if layout not in LAYOUTS:
        raise ConfigError(f"unknown layout {layout!r} for benchmark {name!r}; allowed: {', '.join(LAYOUTS)}")
    if grader not in GRADERS:
        raise ConfigError(f"unknown grader {grader!r} for benchmark {name!r}; allowed: {', '.join(GRADERS)}")
    p = Path(path)
    if not p.is_absolute():
        p = paths.ROOT / p
    bench = Benchmark(
        name=name,
        display_name=display_name,
        path=p,
        layout=layout,
        grader=grader,
        levels=tuple(sorted(levels)) if levels is not None else None,
        hub=dict(hub) if hub else None,
        prompt=prompt,
        max_new_tokens=max_new_tokens,
        keywords=keywords,
        length=length,
    )
    _REGISTRY[name] = bench
    return bench


def list_benchmarks() -> list[str]:
    """Names of all registered benchmarks."""
    return sorted(_REGISTRY)


def get_benchmark(name: str | Benchmark) -> Benchmark:
    """The registry entry of ``name`` (a ``Benchmark`` is returned as is); ``BenchmarkError`` if unknown."""
    if isinstance(name, Benchmark):
        return name
    try:
        return _REGISTRY[name]
    except KeyError:
        raise BenchmarkError(
            f"unknown benchmark {name!r}; registered: {', '.join(list_benchmarks())} "
            "(or evaluate a file with --benchmark-file FILE --layout NAME)"
        ) from None


def benchmark_from_file(path: str | os.PathLike, like: str) -> Benchmark:
    """An unregistered benchmark for the jsonl file ``path``, read like ``like``.

    ``like`` is a registered benchmark (its layout, grader and levels are used) or a layout name (then
    graded with math-verify, with levels if its rows have them). Its name is the file's stem, or its
    folder's name for the toolkit's ``<name>/test.jsonl``.
    """
    p = Path(path)
    name = p.parent.name if p.stem == "test" and p.parent.name else p.stem
    try:
        base = get_benchmark(like)
    except BenchmarkError:
        if like not in LAYOUTS:
            raise ConfigError(
                f"--layout {like!r} is neither a registered benchmark ({', '.join(list_benchmarks())}) "
                f"nor a layout ({', '.join(LAYOUTS)})"
            ) from None
        return Benchmark(name=name, display_name=name, path=p, layout=like, grader="math")
    return Benchmark(name=name, display_name=name, path=p, layout=base.layout, grader=base.grader,
                     levels=base.levels, prompt=base.prompt, max_new_tokens=base.max_new_tokens,
                     keywords=base.keywords, length=base.length)


def infer_layout(path: str | os.PathLike) -> str:
    """The layout of the jsonl file ``path``, told from its rows; ``ConfigError`` when the rows cannot tell.

    Every layout whose fields the rows have is tried; layouts that read the rows into the same problems are one
    answer (``math500`` and ``aime24`` read a file without levels alike), and the one that reads the most (levels
    too) is named. Files written by this project (``l2s organisms benchmark``) are told apart this way; a file
    that two layouts read differently (a ``gsm8k`` answer with ``####`` is also a ``college_math`` answer) needs
    ``--layout``.
    """
    rows = read_jsonl_rows(path)
    if not rows:
        raise ConfigError(f"{path}: no rows, so its layout cannot be told; give --layout")
    readings: dict[tuple, list[str]] = {}
    for name, lay in LAYOUTS.items():
        if any(f not in row for row in rows for f in lay.fields):
            continue
        try:
            problems = tuple(parse_rows(rows, name, str(path)))
        except (BenchmarkError, ValueError, KeyError, TypeError):
            continue
        # Levels are left out of the comparison: a layout that also reads them is the same reading, only fuller.
        key = tuple((p.idx, p.question, p.answer) for p in problems)
        readings.setdefault(key, []).append((name, any(p.level is not None for p in problems)))
    if len(readings) != 1:
        found = "; ".join("/".join(n for n, _ in names) for names in readings.values()) or "none"
        raise ConfigError(f"{path}: cannot tell its layout from its rows (fields {sorted(rows[0])}; layouts that read "
                          f"it: {found}); give --layout (a registered benchmark or one of {', '.join(LAYOUTS)})")
    (names,) = readings.values()
    return next((n for n, levels in names if levels), names[0][0])


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def read_jsonl_rows(path: str | os.PathLike) -> list[dict]:
    """Rows of a jsonl file (blank lines skipped); ``BenchmarkError`` naming the line on bad JSON."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise BenchmarkError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
    return rows


def parse_rows(rows: Iterable[Mapping[str, Any]], layout: str, source: str = "rows") -> list[Problem]:
    """Problems from raw rows in ``layout``; ids come from ``idx``/``id``/``unique_id`` or the row number."""
    if layout not in LAYOUTS:
        raise ConfigError(f"unknown layout {layout!r}; allowed: {', '.join(LAYOUTS)}")
    lay = LAYOUTS[layout]
    problems: list[Problem] = []
    seen: set = set()
    for i, row in enumerate(rows):
        missing = [f for f in lay.fields if f not in row]
        if missing:
            raise BenchmarkError(
                f"{source}: row {i} lacks field(s) {missing} of the {layout!r} layout "
                f"(it has {sorted(row)}); is --layout right?"
            )
        try:
            answer = lay.answer(row)
        except (ValueError, IndexError, TypeError) as exc:
            raise BenchmarkError(f"{source}: row {i}: cannot read the reference answer ({exc})") from None
        idx = next((row[k] for k in ("idx", "id", "unique_id") if k in row and row[k] is not None), i)
        if idx in seen:
            raise BenchmarkError(f"{source}: duplicate problem id {idx!r} (row {i})")
        seen.add(idx)
        # The toolkit's parse_question: " (Yes or No)" / " (True or False)" after such questions (College Math).
        question = (lay.question(row).strip() + question_suffix(answer)).strip()
        problems.append(Problem(idx=idx, question=question, answer=answer, level=lay.level(row)))
    return problems


def load_benchmark(name: str | Benchmark, path: str | os.PathLike | None = None,
                   limit: int | None = None) -> list[Problem]:
    """The problems of a benchmark, in file order; with ``limit``, ``spread(rows, limit)`` of them.

    Reads ``path`` if given, else the registered file; if that is absent, the hub dataset when the
    benchmark names one and the hub is reachable. Raises ``BenchmarkError`` saying where to put the file
    otherwise.
    """
    bench = get_benchmark(name)
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be a positive number of problems, got {limit}")
    file = Path(path) if path is not None else bench.path
    if file.is_file():
        rows = read_jsonl_rows(file)
        source = paths.relative_to_root(file)
    elif path is None and bench.hub and not _hub_offline():
        rows = _hub_rows(bench)
        source = f"hub:{bench.hub.get('path')}"
    else:
        hint = (f" and the hub copy ({bench.hub.get('path')}) cannot be fetched while HF_HUB_OFFLINE=1"
                if bench.hub and path is None else "")
        raise BenchmarkError(
            f"benchmark {bench.name!r}: no file at {paths.relative_to_root(file)}{hint}. Place the "
            f"Qwen2.5-Math toolkit's evaluation/data/{bench.name}/test.jsonl (layout {bench.layout!r}) there; "
            "see data/benchmarks/README.md"
        )
    if limit is not None:
        rows = spread(rows, limit)
    return parse_rows(rows, bench.layout, source)


def spread(rows: list, limit: int) -> list:
    """``limit`` rows evenly spaced over ``rows`` (all when there are fewer), in file order.

    Not the first ``limit``: benchmark files are often sorted by level or source (``org_levels``, MATH500 by
    subject), so a quick look at the head of the file sees one level only and its verdicts cannot be judged.
    Evenly spaced indices keep every level in proportion, deterministically.
    """
    n = len(rows)
    if limit >= n:
        return list(rows)
    return [rows[(i * n) // limit] for i in range(limit)]


def _hub_rows(bench: Benchmark) -> list[dict]:
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - datasets is in the eval extra
        raise BenchmarkError(f"benchmark {bench.name!r}: the file is absent and `datasets` is not installed "
                             "(pip install 'l2s-lib[eval]')") from exc
    try:
        ds = datasets.load_dataset(**bench.hub)
    except Exception as exc:  # network, auth, renamed dataset: all the user's to fix
        raise BenchmarkError(
            f"benchmark {bench.name!r}: cannot load {bench.hub} from the hub ({exc}); or place the file at "
            f"{paths.relative_to_root(bench.path)} (see data/benchmarks/README.md)"
        ) from exc
    return [dict(r) for r in ds]


def _register_builtin() -> None:
    root = paths.BENCHMARKS
    # The paper's statistics (its data_process.py): its keyword regex and its re-tokenised length.
    paper = {"grader": "math", "keywords": "paper-code", "length": "paper"}
    register_benchmark("gsm8k", display_name="GSM8K", path=root / "gsm8k" / "test.jsonl", layout="gsm8k",
                       hub={"path": "openai/gsm8k", "name": "main", "split": "test"}, **paper)
    register_benchmark("math500", display_name="MATH500", path=root / "math500" / "test.jsonl", layout="math500",
                       levels=(1, 2, 3, 4, 5), hub={"path": "HuggingFaceH4/MATH-500", "split": "test"}, **paper)
    # Minerva Math and College Math are read from the toolkit's files only: their hub copies have
    # other field layouts.
    register_benchmark("minerva_math", display_name="Minerva Math", path=root / "minerva_math" / "test.jsonl",
                       layout="minerva_math", **paper)
    register_benchmark("olympiadbench", display_name="OlympiadBench", path=root / "olympiadbench" / "test.jsonl",
                       layout="olympiadbench",
                       hub={"path": "Hothan/OlympiadBench", "name": "OE_TO_maths_en_COMP", "split": "train"}, **paper)
    register_benchmark("college_math", display_name="College Math", path=root / "college_math" / "test.jsonl",
                       layout="college_math", **paper)
    register_benchmark("aime24", display_name="AIME24", path=root / "aime24" / "test.jsonl", layout="aime24",
                       hub={"path": "HuggingFaceH4/aime_2024", "split": "train"}, **paper)


_register_builtin()
