"""The ``organism`` prompt: the exact text the organisms are trained to continue."""

from __future__ import annotations

from l2s_lib.organisms.writers import prompt


def organism_prompt(question: str, tokenizer=None) -> str:
    """``"Q: <question>\\nA:"`` (the tokenizer is not needed: the organisms use no chat template)."""
    return prompt(question)


def register() -> bool:
    """Registers ``organism`` with the eval harness's prompt registry; False when the harness is not there yet."""
    try:
        from l2s_lib.eval.prompts import register_prompt
    except ImportError:
        return False
    register_prompt("organism", organism_prompt)
    return True
