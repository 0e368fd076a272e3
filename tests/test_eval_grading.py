"""Answer extraction and grading on a table of equivalent and non-equivalent answers."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from l2s_lib.errors import ConfigError
from l2s_lib.eval import extract_answer, grade, is_correct
from l2s_lib.eval.grading import (integer_equal, is_python_number_reference, math_equal, normalise_reference,
                                   python_number, words_to_number)

# (model's final answer, reference, equivalent?)
PAIRS = [
    # fractions
    (r"\frac{1}{2}", "0.5", True),
    (r"\dfrac{3}{4}", r"\frac34", True),
    ("3/4", r"\frac{3}{4}", True),
    ("2", r"\frac{4}{2}", True),
    (r"\frac{14}{3}", "4.67", False),
    ("0.333", r"\frac{1}{3}", False),
    # decimals and integers
    ("1,000", "1000", True),
    ("-50", "-50", True),
    ("50", "-50", False),
    ("12", "13", False),
    # LaTeX
    (r"2\sqrt{2}", r"\sqrt{8}", True),
    (r"\left( 3, \frac{\pi}{2} \right)", r"(3,\frac{\pi}{2})", True),
    ("p - q", "p-q", True),
    ("6 - 5i", "6-5i", True),
    ("x = 4", "4", True),
    (r"\text{Evelyn}", r"\text{Evelyn}", True),
    # intervals and sets
    ("[1, 3)", "[1,3)", True),
    ("(1,3)", "[1,3]", False),
    (r"(-\infty, 2]", r"(-\infty,2]", True),
    (r"\{1,2\}", r"\{2,1\}", True),
    # units, degrees, percent
    (r"5 \text{ cm}", "5", True),
    (r"90^\circ", "90", True),
    (r"10\%", "10", True),
]


@pytest.mark.parametrize("answer, reference, equal", PAIRS)
def test_math_equivalence_table(answer, reference, equal):
    assert math_equal(answer, reference) is equal
    assert is_correct(f"Some work. So the result is \\boxed{{{answer}}}.", reference) is equal


@pytest.mark.parametrize("text, expected", [
    (r"so \boxed{\frac{1}{\sqrt{2}}} yes", r"\frac{1}{\sqrt{2}}"),
    (r"first \boxed{3}, then corrected: \boxed{4}", "4"),
    (r"\boxed{a} then \boxed{b", "a"),  # truncated last box: the last complete one
    ("The answer is $34$.", "34"),
    ("The answer is 7. Next question", "7"),
    ("The answer is: \\frac{19}{12}\n", r"\frac{19}{12}"),
    ("we get 3 and then 1,200 apples", "1200"),
    ("no number here", None),
    ("", None),
])
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_integer_grader():
    assert integer_equal("1,024", "1024") and integer_equal(" 7.", "7") and integer_equal("$12$", "12")
    assert not integer_equal("7.5", "7") and not integer_equal("x", "7") and not integer_equal("8", "7")
    assert grade(r"... so \boxed{42}", "42", "integer") == ("42", True)
    assert grade("no answer", "42", "integer") == (None, False)
    with pytest.raises(ConfigError, match="not an integer"):
        integer_equal("1", "1/2")
    with pytest.raises(ConfigError, match="allowed: math, integer"):
        grade("1", "1", "fuzzy")


def test_grading_works_outside_the_main_thread():
    """math-verify's signal timeouts only work in the main thread: they are switched off elsewhere."""
    results = {}

    def work():
        results["eq"] = is_correct(r"\boxed{\frac{1}{2}}", "0.5")
        results["ne"] = is_correct(r"\boxed{\frac{1}{3}}", "0.5")

    t = threading.Thread(target=work)
    t.start()
    t.join(60)
    assert results == {"eq": True, "ne": False}


# ---------------------------------------------------------------------------------------------------
# The hand-labelled set: realistic final answers in each benchmark's reference style (tests/data)
# ---------------------------------------------------------------------------------------------------

CASES_FILE = Path(__file__).parent / "data" / "grading_cases.jsonl"
BENCHMARKS = ("gsm8k", "math500", "minerva_math", "olympiadbench", "college_math", "aime24")


def _cases():
    return [json.loads(line) for line in CASES_FILE.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_hand_labelled_set_agreement_and_no_false_accept():
    """>= 97% agreement with the labels and no wrong answer graded right; every benchmark has both kinds.

    Known misses (labelled right, graded wrong): a set-builder reference against the same set written as an
    interval, and a boxed sentence ("The series converges") against a one-word reference.
    """
    cases = _cases()
    assert len(cases) >= 200
    for b in BENCHMARKS:
        labels = {c["correct"] for c in cases if c["benchmark"] == b}
        assert labels == {True, False}, b
    graded = [(c, grade(c["response"], c["reference"])[1]) for c in cases]
    false_accepts = [c for c, ok in graded if ok and not c["correct"]]
    misses = [c for c, ok in graded if ok != c["correct"]]
    assert not false_accepts, [(c["reference"], c["why"]) for c in false_accepts]
    assert 1 - len(misses) / len(cases) >= 0.97, [(c["reference"], c["why"]) for c in misses]


def test_python_number_references_are_evaluated_safely():
    assert python_number("4.5e33") == 4.5e33 and python_number("-1./3") == pytest.approx(-1 / 3)
    assert python_number("np.arcsin(10/13)") == pytest.approx(0.8776364192181428)
    assert python_number("2^10") == 1024.0
    for hostile in ("__import__('os').system('true')", "np.load('x')", "(1).__class__", "9**9**9", "x + 1",
                    "open('f')", "np.arcsin(2)"):
        assert python_number(hostile) is None, hostile
    assert is_python_number_reference("4.5e33") and is_python_number_reference("-1./3")
    assert not is_python_number_reference("18") and not is_python_number_reference(r"\frac{1}{3}")
    assert not is_python_number_reference("e^{t} / 3") and not is_python_number_reference("0.25")
    # the toolkit's tolerance, and nothing looser
    assert math_equal(r"4.5 \times 10^{33}", "4.5e33") and not math_equal(r"4.49 \times 10^{33}", "4.5e33")
    assert not math_equal("-1", "-1./3") and math_equal(r"-\frac{1}{3}", "-1./3")


def test_number_words_and_reference_normalisation():
    assert words_to_number("eighteen") == 18 and words_to_number("Two hundred and five") == 205
    assert words_to_number("twenty-three") == 23 and words_to_number("one thousand two hundred") == 1200
    assert words_to_number("eighteen apples") is None and words_to_number("hundred") is None
    assert normalise_reference(r"\frac{7}{6}.") == r"\frac{7}{6}" and normalise_reference("$5$") == "5"
    assert math_equal(r"\text{eighteen}", "18") and not math_equal(r"\text{eight}", "18")
    assert math_equal("A, E", r"\text{A, E}") and not math_equal("A", r"\text{A, E}")


def test_extraction_follows_the_toolkit_where_it_is_right():
    minerva = r"Thus $\boxed{3}$ first. Final Answer: The final answer is $4.5e33$. I hope it is correct."
    assert extract_answer(minerva) == "4.5e33"  # the Minerva phrase before boxes, as the toolkit
    # a cut-off last box is not graded by its partial content (the toolkit would read "12")
    assert extract_answer(r"so the total is \boxed{125} ... recomputing: \boxed{12") == "125"
    assert grade(r"the sum is \boxed{12", "12")[1] is False
    # a multi-part reference answered box by box
    assert grade(r"first $\boxed{3}$, then $\boxed{5}$", "3, 5") == ("3, 5", True)
    assert grade(r"first $\boxed{3}$, then $\boxed{5}$", "5")[1] is True
    assert grade(r"only $\boxed{5}$", "3, 5")[1] is False


def test_number_word_references():
    assert math_equal("4", "four") and math_equal(r"\text{four}", "4") and not math_equal("5", "four")
