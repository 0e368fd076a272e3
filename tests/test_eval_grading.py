"""Answer extraction and grading on a table of equivalent and non-equivalent answers."""

from __future__ import annotations

import threading

import pytest

from l2s_lib.errors import ConfigError
from l2s_lib.eval import extract_answer, grade, is_correct
from l2s_lib.eval.grading import integer_equal, math_equal

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
