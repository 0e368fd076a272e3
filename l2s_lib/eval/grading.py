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
A comparison that times out counts as wrong and is flagged (``Grade.timed_out``): the evaluation caches
only grades that were decided, so a slow machine cannot freeze a wrong grade into the cache.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

from l2s_lib.errors import ConfigError
from l2s_lib.eval.benchmarks import GRADERS, last_boxed

#: Bump when extraction or comparison rules change: cached grades of another version are recomputed.
GRADER_VERSION = "1"

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


class GradeTimeout(Exception):
    """math-verify ran out of time: the grade is unknown (counted wrong, never cached)."""


def _parse(text: str, timeout: int | None):
    from math_verify import parse
    from math_verify.errors import TimeoutException

    try:
        return parse(text, parsing_timeout=timeout, raise_on_error=True)
    except TimeoutException as exc:  # a BaseException in math-verify, so caught by name
        raise GradeTimeout(text) from exc
    except Exception:  # unparseable LaTeX: no expression (what raise_on_error=False would return)
        return []


def math_equal(answer: str, reference: str) -> bool:
    """Whether two answer strings are mathematically equivalent (math-verify, gold = ``reference``).

    Raises ``GradeTimeout`` when math-verify times out.
    """
    from math_verify import verify
    from math_verify.errors import TimeoutException

    parse_timeout, verify_timeout = _timeouts()
    # Wrapping in $...$ tells math-verify's LaTeX extractor that the whole string is the expression.
    gold = _parse(f"${reference}$", parse_timeout) or _parse(reference, parse_timeout)
    pred = _parse(f"${answer}$", parse_timeout) or _parse(answer, parse_timeout)
    if not gold or not pred:
        # Unparseable on either side (plain words such as "Evelyn"): compare normalised text.
        return _normalise_text(answer) == _normalise_text(reference)
    try:
        return bool(verify(gold, pred, timeout_seconds=verify_timeout, raise_on_error=True))
    except TimeoutException as exc:
        raise GradeTimeout(answer) from exc
    except Exception:  # sympy failures on exotic expressions: not equal (as raise_on_error=False does)
        return False


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


@dataclass(frozen=True)
class Grade:
    """A grading outcome: the extracted answer, whether it is right, whether math-verify timed out."""

    extracted: str | None
    correct: bool
    timed_out: bool = False


def grade_response(response: str, reference: str, grader: str = "math") -> Grade:
    """Extract the final answer of ``response`` and compare it with ``reference`` using ``grader``."""
    if grader not in GRADERS:
        raise ConfigError(f"unknown grader {grader!r}; allowed: {', '.join(GRADERS)}")
    answer = extract_answer(response)
    if answer is None:
        return Grade(None, False)
    if grader == "integer":
        return Grade(answer, integer_equal(answer, reference))
    try:
        return Grade(answer, math_equal(answer, str(reference)))
    except GradeTimeout:
        return Grade(answer, False, timed_out=True)


def grade(response: str, reference: str, grader: str = "math") -> tuple[str | None, bool]:
    """``(extracted answer, correct)`` for one response."""
    g = grade_response(response, reference, grader)
    return g.extracted, g.correct


def is_correct(response: str, reference: str, grader: str = "math") -> bool:
    """Whether the final answer of ``response`` matches ``reference`` (math-verify, or exact integer)."""
    return grade_response(response, reference, grader).correct
