"""The organism prompts: the exact text the organisms are trained to continue, and a prefilled variant.

* ``organism``: ``"Q: <question>\\nA:"``.
* ``organism_forced``: the same, followed by a first pass with one planted error ending ``So the answer is W.``
  (``writers.forced_error_prefix``), drawn from a ``random.Random`` seeded by the question: the repair test of
  the merge study (does the model's check catch and repair it?). ``forced_prefix`` gives the prefilled text.
"""

from __future__ import annotations

import random

from l2s_lib.organisms import world, writers
from l2s_lib.organisms.writers import prompt

FORCED_SEED = "forced-error"


def organism_prompt(question: str, tokenizer=None) -> str:
    """``"Q: <question>\\nA:"`` (the tokenizer is not needed: the organisms use no chat template)."""
    return prompt(question)


def forced_prefix(question: str) -> str:
    """The planted-error first pass prefilled for ``question`` (the same for a question in every run)."""
    rng = random.Random(f"{FORCED_SEED}:{question}")
    return writers.forced_error_prefix(world.parse_question(question), rng)[0]


def forced_answer(question: str) -> int:
    """The wrong answer ``W`` that ``forced_prefix(question)`` plants (its first pass ends ``So the answer is W.``)."""
    rng = random.Random(f"{FORCED_SEED}:{question}")
    return writers.forced_error_prefix(world.parse_question(question), rng)[1]


def forced_prompt(question: str, tokenizer=None) -> str:
    """``organism_prompt`` followed by ``forced_prefix``."""
    return prompt(question) + forced_prefix(question)


def register() -> None:
    """Registers ``organism`` and ``organism_forced`` with the eval harness's prompt registry."""
    from l2s_lib.eval.prompts import register_prompt

    register_prompt("organism", organism_prompt)
    register_prompt("organism_forced", forced_prompt)
