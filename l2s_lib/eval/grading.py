"""Answer extraction and grading.

``extract_answer`` finds a response's final answer, in the Qwen2.5-Math toolkit's order
(``evaluation/parser.py``'s ``extract_answer``): Minerva's "final answer is $X$. I hope", else the last
complete ``\\boxed{...}`` (nested braces kept), else what follows the last "The answer is", else the last
number. ``is_correct`` compares it to the reference:

- ``grader="math"`` (the real benchmarks): mathematical equivalence by HuggingFace's math-verify
  (``parse`` + ``verify``), which handles LaTeX fractions, decimals, radicals, intervals, sets, units and
  text wrappers. We use the library rather than the toolkit's own ``strip_string`` + sympy code: it is
  maintained, tested, and is what recent R1-style evaluations report with. Around it, the references
  and answers are prepared the way the benchmarks write them (``normalise_reference``):

  * references in Python number syntax (Minerva: ``4.5e33``, ``1e-5``, ``-1./3``, ``np.arcsin(10/13)``),
    which math-verify would misread (``e`` as Euler's number, ``-1./3`` as -1), are evaluated by a
    whitelisted AST evaluator (no ``eval``) and compared numerically with the toolkit's relative tolerance
    (``math.isclose(..., rel_tol=1e-4)``, its ``numeric_equal``);
  * the toolkit's ``strip_string`` steps that matter for references: a trailing ".", ``\\!``, ``$``
    (242 College Math references end in ".");
  * number words (``\\text{eighteen}``) read as numbers, ``\\text{A, E}`` read as the text "A, E", word
    answers (``converges``, ``Yes``) compared as words rather than as products of symbols;
  * a multi-part reference (``3, 5``) answered in several boxes (``\\boxed{3}`` ... ``\\boxed{5}``) is
    compared with the last boxes joined.
- ``grader="integer"`` (the organism benchmarks): the extracted answer must be an integer equal to the
  reference (commas, spaces and ``$`` ignored).

Deliberate differences from the toolkit (stricter where it is wrong): a cut-off last box (a response
truncated inside ``\\boxed{``) gives no answer from that box (an earlier complete box is used; with
none, the response has no answer, not its last number), where the toolkit grades the partial content (a
prefix "12" of "125"); "The answer is" takes its sentence, not the rest of the response;
integer references are compared exactly, without the toolkit's 1e-4 relative tolerance (which accepts
1,000,050 for 1,000,000) and without its x100 / /100 percentage variants.

math-verify bounds its sympy work with ``signal.alarm`` timeouts, which only work in the main thread; in
another thread (a notebook's worker, a thread pool) the timeouts are switched off instead of failing.
A comparison that times out counts as wrong and is flagged (``Grade.timed_out``): the evaluation caches
only grades that were decided, so a slow machine cannot freeze a wrong grade into the cache.
"""

from __future__ import annotations

import ast
import math
import operator
import re
import threading
from dataclasses import dataclass

from l2s_lib.errors import ConfigError
from l2s_lib.eval.benchmarks import GRADERS, boxed_contents, last_boxed

#: Bump when extraction or comparison rules change: cached grades of another version are recomputed.
GRADER_VERSION = "2"

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


_BOX_START = re.compile(r"\\(?:boxed|fbox)\s*\{")
_MINERVA_FINAL = re.compile(r"final answer is \$(.*?)\$\. I hope", re.DOTALL)


def extract_answer(text: str) -> str | None:
    """The final answer written in ``text`` (see the module docstring), or None if there is none."""
    if not text:
        return None
    # The Minerva few-shot format, checked first as the toolkit does (its first occurrence).
    minerva = _MINERVA_FINAL.search(text)
    if minerva and minerva.group(1).strip():
        return minerva.group(1).strip()
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed.strip()
    if _BOX_START.search(text):
        # Only a box cut off by the length cap: its partial content is no answer, and neither is the last
        # number, which is that same partial content (the toolkit would grade "12" of a cut "\boxed{125").
        return None
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


# ---------------------------------------------------------------------------------------------------
# References and answers in the benchmarks' own styles
# ---------------------------------------------------------------------------------------------------

#: The toolkit's relative tolerance for numbers (``grader.numeric_equal``: ``isclose(rel_tol=1e-4)``).
REL_TOL = 1e-4

# numpy / math names a reference may use, and what they compute (the whole whitelist of the evaluator).
_FUNCTIONS = {
    "sqrt": math.sqrt, "exp": math.exp, "log": math.log, "log10": math.log10, "log2": math.log2,
    "sin": math.sin, "cos": math.cos, "tan": math.tan, "arcsin": math.asin, "arccos": math.acos,
    "arctan": math.atan, "asin": math.asin, "acos": math.acos, "atan": math.atan, "sinh": math.sinh,
    "cosh": math.cosh, "tanh": math.tanh, "abs": abs, "degrees": math.degrees, "radians": math.radians,
}
_CONSTANTS = {"pi": math.pi, "e": math.e}
_MODULES = ("np", "numpy", "math")
_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.Pow: operator.pow}


def _eval_node(node) -> float:
    if isinstance(node, ast.Expression):
        return _eval_node(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _eval_node(node.operand)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = _eval_node(node.left), _eval_node(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > 1000:
            raise ValueError("exponent too large")
        return float(_BINOPS[type(node.op)](left, right))
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in _MODULES:
        if node.attr in _CONSTANTS:
            return _CONSTANTS[node.attr]
    if isinstance(node, ast.Call) and not node.keywords and len(node.args) == 1:
        f = node.func
        name = f.attr if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) \
            and f.value.id in _MODULES else f.id if isinstance(f, ast.Name) else None
        if name in _FUNCTIONS:
            return float(_FUNCTIONS[name](_eval_node(node.args[0])))
    raise ValueError(f"not a whitelisted number expression: {ast.dump(node)[:80]}")


# What marks a reference as written in Python number syntax rather than LaTeX: an exponent literal
# (4.5e33, 1e-5), a number ending in "." before an operator (-1./3), a numpy/math call or constant.
_PY_NUMBER_MARK = re.compile(r"\d(?:\.\d*)?[eE][+-]?\d|\d\.(?=[\s*/+\-)]|$)|\b(?:np|numpy|math)\.\w")


def python_number(text: str) -> float | None:
    """The value of ``text`` if it is a number expression in Python syntax (``4.5e33``, ``-1./3``,
    ``np.arcsin(10/13)``; ``^`` read as a power), evaluated without ``eval``; None otherwise."""
    t = str(text).strip().replace("^", "**")
    if not t or len(t) > 200 or "\\" in t:
        return None
    try:
        value = _eval_node(ast.parse(t, mode="eval"))
    except (SyntaxError, ValueError, TypeError, ZeroDivisionError, OverflowError, RecursionError):
        return None
    return value if math.isfinite(value) else None


def is_python_number_reference(reference: str) -> bool:
    """Whether ``reference`` is written in Python number syntax that math-verify would misread."""
    return bool(_PY_NUMBER_MARK.search(reference)) and python_number(reference) is not None


_NUMBER_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen".split())}
_NUMBER_WORDS.update({w: 10 * i for i, w in enumerate(
    "twenty thirty forty fifty sixty seventy eighty ninety".split(), start=2)})
_SCALES = {"hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9}


def words_to_number(text: str) -> int | None:
    """The integer spelled by English number words ("eighteen", "two hundred and five"), else None.

    Written here rather than taken from ``word2number`` (the toolkit's choice): that package is unmaintained
    and reads any string containing one number word as that number ("eighteen apples" -> 18).
    """
    words = re.sub(r"[-,]", " ", text.strip().lower()).split()
    if not words or any(w not in _NUMBER_WORDS and w not in _SCALES and w != "and" for w in words):
        return None
    if words[0] in _SCALES or words[0] == "and" or words[-1] == "and":
        return None
    total, current = 0, 0
    for w in words:
        if w == "and":
            continue
        if w in _NUMBER_WORDS:
            current += _NUMBER_WORDS[w]
        elif w == "hundred":
            current = (current or 1) * 100
        else:
            total += (current or 1) * _SCALES[w]
            current = 0
    return total + current


_TEXT_GROUP = re.compile(r"^\\(?:text|textbf|mathrm|mbox|textrm)\s*\{(.*)\}$", re.DOTALL)


def _unwrap_text(s: str) -> str:
    """``\\text{...}`` (and ``\\mathrm``, ``\\mbox``) around the whole answer removed."""
    while True:
        m = _TEXT_GROUP.match(s.strip())
        if not m or m.group(1).count("{") != m.group(1).count("}"):
            return s.strip()
        s = m.group(1)


def normalise_reference(reference: str) -> str:
    """A reference as the toolkit's ``strip_string`` would prepare it for comparison, where that matters:
    surrounding space and newlines, a trailing ".", ``$`` signs, ``\\!`` spacing removed."""
    r = str(reference).replace("\n", " ").strip()
    r = r.replace("\\!", "").replace("\\$", "").replace("$", "").strip()
    return r.rstrip(".").strip() or r


def _prepare(answer: str) -> str:
    a = normalise_reference(answer)
    n = words_to_number(_unwrap_text(a))
    return str(n) if n is not None else a


# A word answer: letters and spaces only, with a real word in it (not "ab", a product of two symbols).
_WORD_ANSWER = re.compile(r"[A-Za-z][A-Za-z ]*")
_CHOICES = re.compile(r"\(?([A-Ea-e])\)?(?:\s*(?:,|and)\s*\(?([A-Ea-e])\)?)*")


def _is_word_answer(s: str) -> bool:
    s = s.strip()
    return bool(_WORD_ANSWER.fullmatch(s)) and (max(len(w) for w in s.split()) >= 4
                                                  or s.lower() in ("yes", "no", "true", "false"))


def _text_form(s: str) -> str:
    s = _unwrap_text(s)
    s = re.sub(r"\\(?:text|mathrm|mbox|textbf)\s*\{([^}]*)\}", r"\1", s)
    return re.sub(r"[\s$\\{}.]", "", s).lower()


def _choice_letters(s: str) -> tuple[str, ...] | None:
    """Multiple-choice letters ("A, E", "(C)", "\\text{A, E}") as a sorted tuple (a choice of several
    letters is a set), else None."""
    t = re.sub(r"\\text\s*\{([^}]*)\}", r"\1", _unwrap_text(s)).strip()
    if not _CHOICES.fullmatch(t) or not re.search(r"[A-E]", t):
        return None
    return tuple(sorted({x.upper() for x in re.findall(r"[A-Ea-e]", t)}))


def _numeric_value(answer: str, parse_timeout) -> float | None:
    """The numeric value of an answer (Python syntax, else what math-verify parses), if it is a number."""
    v = python_number(answer)
    if v is not None:
        return v
    for expr in _parse(f"${answer}$", parse_timeout) or _parse(answer, parse_timeout):
        try:
            if getattr(expr, "is_number", False):
                value = complex(expr.evalf())
                if abs(value.imag) <= 1e-12 * max(1.0, abs(value.real)):
                    return float(value.real)
        except (TypeError, ValueError, AttributeError):
            continue
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
    """Whether two answer strings are mathematically equivalent (``reference`` is the gold answer).

    Python-syntax number references are compared numerically (relative tolerance ``REL_TOL``);
    multiple-choice letters and word answers as text; everything else by math-verify, with a
    normalised-text comparison when either side does not parse. Raises ``GradeTimeout`` when math-verify
    times out.
    """
    from math_verify import verify
    from math_verify.errors import TimeoutException

    parse_timeout, verify_timeout = _timeouts()
    reference, answer = normalise_reference(reference), _prepare(answer)
    if not answer:
        return False
    if is_python_number_reference(reference):
        value = _numeric_value(answer, parse_timeout)
        return value is not None and math.isclose(value, python_number(reference), rel_tol=REL_TOL)
    ref_choices = _choice_letters(reference)
    if ref_choices is not None and (len(ref_choices) > 1 or reference.startswith(("(", "\\text"))):
        return _choice_letters(answer) == ref_choices
    ref_text = _unwrap_text(reference)
    words = words_to_number(ref_text)
    if words is not None:
        reference = str(words)
    elif _is_word_answer(ref_text):
        return _text_form(answer) == _text_form(ref_text)
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


def _top_level_parts(reference: str) -> list[str]:
    """``reference`` split at commas outside brackets ("3, (1,2)" -> ["3", "(1,2)"])."""
    parts, depth, cur = [], 0, ""
    for ch in reference:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    parts.append(cur.strip())
    return [p for p in parts if p]


def grade_response(response: str, reference: str, grader: str = "math") -> Grade:
    """Extract the final answer of ``response`` and compare it with ``reference`` using ``grader``.

    With ``grader="math"``, a reference of k >= 2 comma-separated parts that the last box does not match
    is also compared with the last k boxes joined by commas (a multi-part answer boxed part by part).
    """
    if grader not in GRADERS:
        raise ConfigError(f"unknown grader {grader!r}; allowed: {', '.join(GRADERS)}")
    answer = extract_answer(response)
    if answer is None:
        return Grade(None, False)
    if grader == "integer":
        return Grade(answer, integer_equal(answer, reference))
    try:
        if math_equal(answer, str(reference)):
            return Grade(answer, True)
        parts = _top_level_parts(normalise_reference(str(reference)))
        boxes = boxed_contents(response)
        if len(parts) >= 2 and len(boxes) >= len(parts) and boxes[-1].strip() == answer:
            joined = ", ".join(b.strip() for b in boxes[-len(parts):])
            if math_equal(joined, str(reference)):
                return Grade(joined, True)
        return Grade(answer, False)
    except GradeTimeout:
        return Grade(answer, False, timed_out=True)


def grade(response: str, reference: str, grader: str = "math") -> tuple[str | None, bool]:
    """``(extracted answer, correct)`` for one response."""
    g = grade_response(response, reference, grader)
    return g.extracted, g.correct


def is_correct(response: str, reference: str, grader: str = "math") -> bool:
    """Whether the final answer of ``response`` matches ``reference`` (math-verify, or exact integer)."""
    return grade_response(response, reference, grader).correct
