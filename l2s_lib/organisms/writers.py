"""Solution writers: the texts the organisms are trained on.

Every completion follows the prompt ``"Q: <question>\\nA:"`` (see ``prompt``) and ends with ``\\boxed{N}``, so one
grader (the last ``\\boxed{}``) serves every model and merge.

* **System 1** (``system1``): a quick thinker. ``compressed`` style writes two operations per step
  (``43+27+4=74. 74+13=87.``), which a small model gets right on short chains and wrong on long ones;
  ``slip`` style writes one operation per step but makes a deterministic carry/borrow slip on some steps
  (``48+29=67.``), so it differs from System 2 only in accuracy and in the verification habit; ``tiring``
  style is ``slip`` with a looser slip rule from the third step on (design 2, the shipped one: reliable on
  short chains, clearly behind System 2 on long ones).
* **System 2** (``system2``): one operation per step, ``So the answer is X.``, then with a level-dependent
  probability a verification pass that recomputes every step (``Wait, let me double-check: ...``) and, with
  another level-dependent probability, a second one (``Let me verify again: ...``). A fraction of first passes
  carry a planted error; those are always verified, the check disagrees, and a tie-break pass settles the answer (``The answers differ, so let me compute once more: ...``),
  so the final answer is never overwritten on the word of a single check.
* **DPO pairs** (``dpo_pair``): the same question answered by a short System 2 solution (chosen) and a
  long one with verification (rejected), the paper's short-preferred training baseline.
"""

from __future__ import annotations

import random

from l2s_lib.organisms.world import Problem, World, apply

CHECK = " Wait, let me double-check:"
AGAIN = " Let me verify again:"
DIFFER = " The answers differ, so let me compute once more:"
SLIP_CARRY_UNITS = 16  # an addition whose units digits sum to >= this drops its carry (System 1 "slip")
SLIP_BORROW_UNITS = 7  # a subtraction whose units digits differ by >= this forgets its borrow
# ``tiring``: from step LATE_FROM (0-based) on, the looser thresholds below apply (about 6% -> 15% of steps slip).
LATE_FROM = 2
LATE_CARRY_UNITS = 14
LATE_BORROW_UNITS = 5


def prompt(question: str) -> str:
    """The exact text every organism is trained to continue (the ``organism`` prompt of the eval harness)."""
    return f"Q: {question}\nA:"


def boxed(n: int) -> str:
    return f" \\boxed{{{n}}}"


def slip(a: int, op: str, b: int, step: int = 0, style: str = "slip") -> int:
    """System 1's result of ``a op b`` at 0-based ``step`` of its chain: the right one except for some
    carries/borrows, dropped (``tiring``: more of them from step ``LATE_FROM`` on)."""
    r = apply(a, op, b)
    late = style == "tiring" and step >= LATE_FROM
    carry, borrow = (LATE_CARRY_UNITS, LATE_BORROW_UNITS) if late else (SLIP_CARRY_UNITS, SLIP_BORROW_UNITS)
    if op == "+" and a % 10 + b % 10 >= carry:
        return r - 10
    if op == "-" and b % 10 - a % 10 >= borrow:
        return r + 10
    return r


def chain(p: Problem, values: list[int] | None = None) -> str:
    """One operation per step: `` 43+27=70. 70+4=74.`` (``values`` overrides the written running values)."""
    vals = list(values) if values is not None else list(p.values)
    out, prev = "", p.operands[0]
    for op, b, v in zip(p.ops, p.operands[1:], vals):
        out += f" {prev}{op}{b}={v}."
        prev = v
    return out


def system1(p: Problem, style: str = "tiring") -> str:
    """System 1's short solution of ``p`` (see the module docstring for the styles)."""
    if style == "compressed":
        out, v, i = "", p.operands[0], 0
        while i < p.level:
            j = min(i + 2, p.level)
            expr = str(v) + "".join(f"{op}{b}" for op, b in zip(p.ops[i:j], p.operands[i + 1:j + 1]))
            v = p.values[j - 1]
            out += f" {expr}={v}."
            i = j
        return out + boxed(v)
    if style in ("slip", "tiring"):
        vals, v = [], p.operands[0]
        for i, (op, b) in enumerate(zip(p.ops, p.operands[1:])):
            v = slip(v, op, b, i, style)
            vals.append(v)
        return chain(p, vals) + boxed(v)
    raise ValueError(f"unknown System 1 style {style!r}; allowed: compressed, slip, tiring")


def system1_answer(p: Problem, style: str = "tiring") -> int:
    """The answer System 1's target solution ends with (differs from ``p.answer`` where a slip fires)."""
    text = system1(p, style)
    return int(text.rsplit("{", 1)[1].rstrip("}"))


def planted_values(p: Problem, rng: random.Random) -> tuple[list[int], int]:
    """Running values of a first pass with one wrong step (index returned), later steps consistent with it.

    The wrong result differs from the right one by 1-10 and keeps every later running value >= 0.
    """
    step = rng.randrange(p.level)
    for _ in range(100):
        delta = rng.randint(1, 10) * rng.choice((-1, 1))
        vals = list(p.values[:step]) + [p.values[step] + delta]
        if vals[step] < 0:
            continue
        for op, b in zip(p.ops[step + 1:], p.operands[step + 2:]):
            vals.append(apply(vals[-1], op, b))
        if min(vals) >= 0:
            return vals, step
    vals = list(p.values[:step]) + [p.values[step] + 1]
    for op, b in zip(p.ops[step + 1:], p.operands[step + 2:]):
        vals.append(apply(vals[-1], op, b))
    return vals, step


def first_pass(p: Problem, values: list[int] | None = None) -> str:
    vals = list(values) if values is not None else list(p.values)
    return chain(p, vals) + f" So the answer is {vals[-1]}."


def system2(p: Problem, world: World, rng: random.Random, *, force_check: bool = False,
            plant: bool | None = None) -> str:
    """System 2's long solution of ``p`` in ``world`` (random choices drawn from ``rng``).

    ``plant`` forces (True) or forbids (False) a planted first-pass error; ``force_check`` forces at least one
    verification pass.
    """
    planted = rng.random() < world.error_rate if plant is None else plant
    if planted:
        vals, _ = planted_values(p, rng)
        wrong = vals[-1]
        return (first_pass(p, vals) + CHECK + chain(p) + DIFFER + chain(p)
                + f" So the answer is {p.answer}, not {wrong}." + boxed(p.answer))
    out = first_pass(p)
    if force_check or rng.random() < world.rate(p.level):
        out += CHECK + chain(p) + f" Yes, the answer is {p.answer}."
        passes = 1
        while passes < world.max_checks and rng.random() < world.extra_rate(p.level):
            out += AGAIN + chain(p) + f" Yes, the answer is {p.answer}."
            passes += 1
    return out + boxed(p.answer)


def short_system2(p: Problem) -> str:
    """System 2's format without verification: the preferred (chosen) side of the DPO pairs."""
    return first_pass(p) + boxed(p.answer)


def dpo_pair(p: Problem, world: World, rng: random.Random) -> tuple[str, str]:
    """(chosen, rejected): a short correct solution and a verified long one of the same question."""
    return short_system2(p), system2(p, world, rng, force_check=True, plant=False)


def forced_error_prefix(p: Problem, rng: random.Random) -> tuple[str, int]:
    """A first pass with one planted error (ending ``So the answer is W.``) to prefill; returns (text, W)."""
    vals, _ = planted_values(p, rng)
    return first_pass(p, vals), vals[-1]


def pretrain_text(rng: random.Random, n_items: int = 8) -> str:
    """A base-model document: loose equations, problem statements and the phrases of the solution formats."""
    items = []
    for _ in range(n_items):
        kind = rng.random()
        a = rng.randint(0, 99)
        if kind < 0.55:
            op = rng.choice("+-")
            b = rng.randint(0, 99 - a) if op == "+" else rng.randint(0, a)
            if rng.random() < 0.1:  # a few results out of 0-99, as after a planted error
                b = rng.randint(0, 99)
                a = rng.randint(b, 199) if op == "-" else a
            items.append(f"{a}{op}{b}={apply(a, op, b)}.")
        elif kind < 0.75:
            ops = "".join(f"{rng.choice('+-')}{rng.randint(2, 99)}" for _ in range(rng.randint(1, 5)))
            items.append(f"Q: {rng.randint(2, 99)}{ops}")
        else:
            items.append(rng.choice([
                f"So the answer is {a}.", CHECK.strip(), f"Yes, the answer is {a}.", boxed(a).strip(),
                AGAIN.strip(), DIFFER.strip(), f"So the answer is {a}, not {rng.randint(0, 99)}.",
            ]))
    return " ".join(items)
