"""Prompt registry and the built-in templates."""

from __future__ import annotations

import pytest

from l2s_lib import tiny
from l2s_lib.errors import ConfigError
from l2s_lib.eval import prompts


@pytest.fixture(scope="module")
def tokenizer():
    return tiny.build_tokenizer(512)


EXPECTED_COT = ("<|im_start|>system\nPlease reason step by step, and put your final answer within \\boxed{}."
                "<|im_end|>\n<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n")

# DeepSeek-R1-Distill's template, reduced: BOS, no system turn kept, its own role markers.
R1_TEMPLATE = ("{{ bos_token }}{%- for m in messages %}{%- if m['role'] == 'user' %}{{ '<\uff5cUser\uff5c>' + "
               "m['content'] }}{%- endif %}{%- endfor %}{%- if add_generation_prompt %}"
               "{{ '<\uff5cAssistant\uff5c><think>\\n' }}{%- endif %}")


def test_qwen25_math_cot_is_the_toolkits_chatml_under_any_template(tokenizer):
    assert prompts.build_prompt("qwen25-math-cot", "What is 2+3?", tokenizer) == EXPECTED_COT
    assert prompts.build_prompt("qwen25-math-cot", "What is 2+3?", None) == EXPECTED_COT
    r1 = tiny.build_tokenizer(512)
    r1.chat_template = R1_TEMPLATE
    r1.bos_token = "<|endoftext|>"
    # The paper never applies a chat template: System 2 gets the same literal ChatML text.
    assert prompts.build_prompt("qwen25-math-cot", "What is 2+3?", r1) == EXPECTED_COT
    # The template-applying variant has its own name and does follow the model's template.
    chat = prompts.build_prompt("qwen25-math-cot-chat", "What is 2+3?", r1)
    assert chat.startswith("<|endoftext|>") and "<\uff5cUser\uff5c>What is 2+3?" in chat
    assert prompts.build_prompt("qwen25-math-cot-chat", "What is 2+3?", tokenizer) == EXPECTED_COT


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
