"""The synthetic arithmetic world: problems, levels, seeds and disjoint splits.

A problem is a chain of ``+``/``-`` operations on integers, e.g. ``43+27+4+13``; its *level* is the number of
operations (1-5 in the benchmarks). Operands are 2-99 and every running value stays in 0-99, so each step is
a two-digit addition or subtraction (one token per digit, see ``tokenizer``).

Splits are decided by a hash of the question text, not by the random stream, so they never overlap whatever
seed or level generated a problem: about 10% of all questions are ``heldout`` (benchmarks), 2% are
``calibration`` (the AIM/Sens calibration set) and the rest ``train``. A training generator simply rejects
questions outside its split.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field, replace

from l2s_lib.errors import ConfigError

MIN_OPERAND = 2
MAX_OPERAND = 99
MAX_VALUE = 99
LEVELS = (1, 2, 3, 4, 5)
SPLITS = ("train", "heldout", "calibration")
S1_STYLES = ("compressed", "slip", "tiring")
#: The System 1 style of the shipped organisms (chosen in data/organisms/README.md, design 2).
DEFAULT_S1_STYLE = "tiring"


@dataclass(frozen=True)
class Problem:
    """One chain ``operands[0] ops[0] operands[1] ...``; ``values[i]`` is the running value after operation i."""

    operands: tuple[int, ...]
    ops: tuple[str, ...]

    @property
    def level(self) -> int:
        return len(self.ops)

    @property
    def question(self) -> str:
        text = str(self.operands[0])
        for op, b in zip(self.ops, self.operands[1:]):
            text += f"{op}{b}"
        return text

    @property
    def values(self) -> tuple[int, ...]:
        v, out = self.operands[0], []
        for op, b in zip(self.ops, self.operands[1:]):
            v = apply(v, op, b)
            out.append(v)
        return tuple(out)

    @property
    def answer(self) -> int:
        return self.values[-1]

    @property
    def split(self) -> str:
        return split_of(self.question)


def apply(a: int, op: str, b: int) -> int:
    """``a op b`` for ``op`` in ``+``/``-``."""
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    raise ConfigError(f"unknown operation {op!r}; allowed: '+', '-'")


def split_of(question: str) -> str:
    """The split a question belongs to, from a hash of its text (stable across seeds, levels and runs)."""
    bucket = int(hashlib.sha1(question.encode()).hexdigest()[:8], 16) % 100
    if bucket < 10:
        return "heldout"
    if bucket < 12:
        return "calibration"
    return "train"


def parse_question(question: str) -> Problem:
    """Inverse of ``Problem.question`` (``"43+27-4"`` -> operands and operations)."""
    import re

    tokens = re.findall(r"\d+|[+-]", question.replace(" ", ""))
    if not tokens or len(tokens) % 2 == 0 or "".join(tokens) != question.replace(" ", ""):
        raise ConfigError(f"not an organism question: {question!r} (expected e.g. '43+27-4')")
    return Problem(tuple(int(t) for t in tokens[0::2]), tuple(tokens[1::2]))


def random_problem(level: int, rng: random.Random) -> Problem:
    """A uniformly built chain of ``level`` operations whose running values stay in 0-99."""
    if level < 1:
        raise ConfigError(f"level must be >= 1, got {level}")
    v = rng.randint(MIN_OPERAND, MAX_OPERAND)
    operands, ops = [v], []
    for _ in range(level):
        choices = []
        if MAX_VALUE - v >= MIN_OPERAND:
            choices.append("+")
        if v >= MIN_OPERAND:
            choices.append("-")
        op = rng.choice(choices)
        b = rng.randint(MIN_OPERAND, MAX_VALUE - v) if op == "+" else rng.randint(MIN_OPERAND, v)
        v = apply(v, op, b)
        operands.append(b)
        ops.append(op)
    return Problem(tuple(operands), tuple(ops))


def sample(level: int, rng: random.Random, split: str = "train") -> Problem:
    """A random problem of ``level`` that belongs to ``split`` (rejection sampling on the hash split)."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")
    while True:
        p = random_problem(level, rng)
        if p.split == split:
            return p


def sample_unique(levels_counts: dict[int, int], seed: int, split: str = "heldout",
                  exclude: set[str] | None = None) -> list[Problem]:
    """``count`` distinct problems per level from ``split``, none of whose questions is in ``exclude``.

    Deterministic in ``seed``; ``exclude`` is updated so that several sets drawn in turn are disjoint.
    """
    rng = random.Random(seed)
    seen = exclude if exclude is not None else set()
    out: list[Problem] = []
    for level, count in levels_counts.items():
        got, tries = 0, 0
        while got < count:
            tries += 1
            if tries > 200 * count + 10_000:
                raise ConfigError(f"cannot draw {count} distinct {split} problems of level {level}")
            p = sample(level, rng, split)
            if p.question in seen:
                continue
            seen.add(p.question)
            out.append(p)
            got += 1
    return out


@dataclass(frozen=True)
class World:
    """The world parameters that define the System 1 / System 2 solution styles (see ``writers``).

    ``s1_style``: ``"compressed"`` (two operations per written step: a quick thinker, weak on long chains),
    ``"slip"`` (one operation per step, but a deterministic carry/borrow slip on some steps) or ``"tiring"``
    (``slip`` whose slips become more frequent from the third step on: the quick thinker gets sloppier along a
    long chain, so it stays reliable on level 1 and falls behind on level 5).
    ``verify_rate[level]``: probability that System 2 starts a verification pass after a correct first pass;
    ``extra_verify[level]``: probability of a second pass after the first (at most ``max_checks`` passes);
    ``error_rate``: fraction of System 2 solutions with a planted first-pass error (always followed by a
    verification that catches it and a tie-break pass that repairs it).

    Rates are kept away from 0.5 on purpose: a greedy decoder follows the majority, so a rate of 0.7 makes the
    greedy System 2 always take that pass and 0.3 never; rates near 0.5 would make greedy behaviour a coin
    toss of training noise.
    """

    name: str = "adaptive"
    s1_style: str = DEFAULT_S1_STYLE
    verify_rate: dict = field(default_factory=lambda: {1: 0.6, 2: 0.7, 3: 0.8, 4: 0.9, 5: 1.0})
    # Design 2: a second pass on most level 3-5 solutions (greedy System 2 double-checks twice there), so System 2
    # is >3x System 1's length and thinks longer on harder problems. Design 1 had a flat 0.35 and 3 passes.
    extra_verify: dict = field(default_factory=lambda: {1: 0.15, 2: 0.3, 3: 0.7, 4: 0.8, 5: 0.9})
    max_checks: int = 2
    error_rate: float = 0.10

    def rate(self, level: int) -> float:
        return self.verify_rate.get(level, max(self.verify_rate.values()))

    def extra_rate(self, level: int) -> float:
        return self.extra_verify.get(level, max(self.extra_verify.values()))


#: The default world (verification more frequent on harder levels, as R1 does).
ADAPTIVE = World()
#: The equal-rate control: the adaptive world's mean rates on every level (0.8 for the first pass, 0.57 for
#: the second), so adaptive reflection seen in a merge can be told apart from reflection inherited from
#: System 2's level-dependent habit.
EQUAL = World(name="equal", verify_rate={lv: 0.8 for lv in LEVELS}, extra_verify={lv: 0.57 for lv in LEVELS})


def world(name: str, s1_style: str = DEFAULT_S1_STYLE) -> World:
    """The named world (``adaptive`` or ``equal``) with System 1 style ``s1_style``."""
    if s1_style not in S1_STYLES:
        raise ConfigError(f"unknown System 1 style {s1_style!r}; allowed: {', '.join(S1_STYLES)}")
    base = {"adaptive": ADAPTIVE, "equal": EQUAL}.get(name)
    if base is None:
        raise ConfigError(f"unknown world {name!r}; allowed: adaptive, equal")
    # copies of the rate tables, so that no caller can change the module-level worlds through the result
    return replace(base, s1_style=s1_style, verify_rate=dict(base.verify_rate), extra_verify=dict(base.extra_verify))
