"""Prompt registry and the built-in templates."""

from __future__ import annotations

import pytest

from l2s_lib import tiny
from l2s_lib.errors import ConfigError
from l2s_lib.eval import prompts


@pytest.fixture(scope="module")
def tokenizer():
    return tiny.build_tokenizer(512)


def test_qwen25_math_cot_is_the_toolkits_chatml(tokenizer):
    text = prompts.build_prompt("qwen25-math-cot", "What is 2+3?", tokenizer)
    expected = ("<|im_start|>system\nPlease reason step by step, and put your final answer within \\boxed{}."
                "<|im_end|>\n<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n")
    assert text == expected
    # Without a chat template, the toolkit's literal ChatML is written.
    assert prompts.build_prompt("qwen25-math-cot", "What is 2+3?", None) == expected


def test_chat_uses_the_models_template_without_system(tokenizer):
    text = prompts.build_prompt("chat", "What is 2+3?", tokenizer)
    assert text.startswith("<|im_start|>user\nWhat is 2+3?\nPlease reason step by step")
    assert "system" not in text and text.endswith("<|im_start|>assistant\n")


def test_cot_is_few_shot_and_stops_at_the_next_question(tokenizer):
    text = prompts.build_prompt("cot", "What is 6 * 7?", tokenizer)
    assert text.count("Question:") == len(prompts.COT_EXAMPLES) + 1
    assert text.endswith("Question: What is 6 * 7?\nAnswer:")
    assert all("The answer is $" in a for _, a in prompts.COT_EXAMPLES)
    assert prompts.get_prompt("cot").stop == ("\nQuestion:",)


def test_register_and_unknown(tokenizer):
    prompts.register_prompt("test-bare", lambda q, tok: f"Q: {q} A:", stop=["\n"])
    try:
        assert prompts.build_prompt("test-bare", "1+1", tokenizer) == "Q: 1+1 A:"
        assert "test-bare" in prompts.list_prompts()
    finally:
        prompts._PROMPTS.pop("test-bare")
    with pytest.raises(ConfigError, match="unknown prompt 'nope'.*qwen25-math-cot"):
        prompts.get_prompt("nope")
    with pytest.raises(ConfigError, match="callable"):
        prompts.register_prompt("bad", "not a function")
