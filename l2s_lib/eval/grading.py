"""Answer extraction and grading.

``extract_answer`` finds a response's final answer: the last ``\\boxed{...}`` (nested braces kept), else
what follows the last "The answer is", else the last number. ``is_correct`` compares it to the reference:

- ``grader="math"`` (the real benchmarks): mathematical equivalence by HuggingFace's math-verify
  (``parse`` + ``verify``), which handles LaTeX fractions, decimals, radicals, intervals, sets, units and
  text wrappers. We use the library rather than the toolkit's own ``strip_string`` + sympy code: it is
  maintained, tested, and is what recent R1-style evaluations report with.
- ``grader="integer"`` (the organism benchmarks): the extracted answer must be an integer equal to the
  reference (commas, spaces and ``$`` ignored).

math-verify bounds its sympy work with ``signal.alarm`` timeouts, which only work in the main thread; in
another thread (a notebook's worker, a thread pool) the timeouts are switched off instead of failing.
A parse that times out counts as wrong for that call only: grades are never cached (the evaluation
cache stores generations and grades them again on every read), so a slow machine cannot freeze a
wrong grade into the cache.
"""

from __future__ import annotations

import re
import threading

from l2s_lib.errors import ConfigError
from l2s_lib.eval.benchmarks import GRADERS, last_boxed

#: Seconds math-verify may spend parsing one answer and comparing two (main thread only).
PARSE_TIMEOUT = 5
VERIFY_TIMEOUT = 5

_ANSWER_IS = re.compile(r"answer is[:\s]*", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def _clean(answer: str) -> str:
    answer = answer.strip()
    # "The answer is $\frac{1}{2}$." -> "\frac{1}{2}"
    answer = re.sub(r"^\$+|\$+$", "", answer.rstrip(". \n")).strip()
    return answer


def extract_answer(text: str) -> str | None:
    """The final answer written in ``text`` (see the module docstring), or None if there is none."""
    if not text:
        return None
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed.strip()
    matches = list(_ANSWER_IS.finditer(text))
    if matches:
        tail = text[matches[-1].end():]
        # The answer runs to the end of its sentence: a period followed by a space/newline, or a newline.
        tail = re.split(r"\.\s|\n", tail, maxsplit=1)[0]
        tail = _clean(tail)
        if tail:
            return tail
    numbers = _NUMBER.findall(text)
    if numbers:
        return numbers[-1].replace(",", "")
    return None


def _timeouts() -> tuple[int | None, int | None]:
    if threading.current_thread() is threading.main_thread():
        return PARSE_TIMEOUT, VERIFY_TIMEOUT
    return None, None


def math_equal(answer: str, reference: str) -> bool:
    """Whether two answer strings are mathematically equivalent (math-verify, gold = ``reference``)."""
    from math_verify import parse, verify

    parse_timeout, verify_timeout = _timeouts()
    # Wrapping in $...$ tells math-verify's LaTeX extractor that the whole string is the expression.
    gold = parse(f"${reference}$", parsing_timeout=parse_timeout)
    if not gold:
        gold = parse(reference, parsing_timeout=parse_timeout)
    pred = parse(f"${answer}$", parsing_timeout=parse_timeout)
    if not pred:
        pred = parse(answer, parsing_timeout=parse_timeout)
    if not gold or not pred:
        # Unparseable on either side (plain words such as "Evelyn"): compare normalised text.
        return _normalise_text(answer) == _normalise_text(reference)
    return bool(verify(gold, pred, timeout_seconds=verify_timeout))


def _normalise_text(s: str) -> str:
    s = re.sub(r"\\text\{([^}]*)\}", r"\1", s)
    return re.sub(r"[\s$\\{}]", "", s).lower()


def integer_equal(answer: str, reference: str) -> bool:
    """Whether ``answer`` is exactly the integer ``reference`` (commas, spaces, ``$`` and a final period ignored)."""
    def as_int(s: str) -> int | None:
        s = re.sub(r"[\s,$]", "", str(s)).rstrip(".")
        return int(s) if re.fullmatch(r"[+-]?\d+", s) else None

    a, r = as_int(answer), as_int(reference)
    if r is None:
        raise ConfigError(f"integer grader: the reference {reference!r} is not an integer")
    return a is not None and a == r


def grade(response: str, reference: str, grader: str = "math") -> tuple[str | None, bool]:
    """``(extracted answer, correct)`` for one response."""
    if grader not in GRADERS:
        raise ConfigError(f"unknown grader {grader!r}; allowed: {', '.join(GRADERS)}")
    answer = extract_answer(response)
    if answer is None:
        return None, False
    ok = integer_equal(answer, reference) if grader == "integer" else math_equal(answer, str(reference))
    return answer, ok


def is_correct(response: str, reference: str, grader: str = "math") -> bool:
    """Whether the final answer of ``response`` matches ``reference`` (math-verify, or exact integer)."""
    return grade(response, reference, grader)[1]
