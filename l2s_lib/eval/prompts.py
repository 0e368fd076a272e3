"""Prompt templates: a registry of functions that turn a question into the full text fed to a model.

A builder is ``builder(question: str, tokenizer) -> str``; the tokenizer is the evaluated model's, so
chat templates are the model's own. Built-ins:

- ``qwen25-math-cot``: the Qwen2.5-Math toolkit's zero-shot prompt, exactly as the paper runs it
  (``l2s_eval.sh qwen25-math-cot MODEL 10240 0``, without ``--apply_chat_template``): the toolkit's literal
  ChatML string (system "Please reason step by step, and put your final answer within \\boxed{}.", the
  question as the user turn, the assistant turn opened) for *every* tokenizer, its chat template ignored:
  DeepSeek-R1-Distill (System 2) gets the same ChatML text as Qwen2.5-Math. Encoding adds the tokenizer's
  own BOS, as vLLM does for the toolkit's text prompts (``generation.prompt_ids``).
- ``qwen25-math-cot-chat``: the same two messages through the model's own chat template (ChatML when the
  tokenizer has none): not the paper's protocol, for comparison.
- ``cot``: few-shot chain of thought for System 1 base models (worked examples written for this project),
  ``Question: ... / Answer: ...`` with answers ending "The answer is $X$."; it stops at the next
  ``Question:`` so a base model does not go on to invent more problems.
- ``chat``: the model's own chat template with the instruction in the user turn and no system message,
  as DeepSeek recommends for the R1-Distill models.

Thinking modes (Qwen3 style): a prompt that renders the model's own chat template (``chat``,
``qwen25-math-cot-chat``) takes ``thinking=True/False``, passed to the template as ``enable_thinking``
(Qwen3's template then opens the answer with an empty ``<think></think>`` block when it is False). Whether
the model honours a no-think request is measured on its responses (``metrics.thinking_block``).

A prompt may carry *stop strings* (``register_prompt(..., stop=...)``): generation ends when one
appears and the text is cut before it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from l2s_lib.errors import ConfigError

BOXED_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."

PromptBuilder = Callable[[str, object], str]


#: Thinking modes of ``PromptTemplate.build``: None leaves the chat template's default.
THINKING_MODES = (None, True, False)


@dataclass(frozen=True)
class PromptTemplate:
    """A registered prompt: its name, its builder, and stop strings that end generation.

    ``chat_template``: the builder renders the model's own chat template and accepts keyword arguments
    for it (``builder(question, tokenizer, **template_kwargs)``): only such prompts take a thinking mode.
    """

    name: str
    builder: PromptBuilder
    stop: tuple[str, ...] = ()
    chat_template: bool = False

    def build(self, question: str, tokenizer, thinking: bool | None = None) -> str:
        """The model input for ``question``; ``thinking`` True/False renders the chat template with
        ``enable_thinking`` on/off (Qwen3's switch), None with the template's default."""
        if thinking not in THINKING_MODES:
            raise ConfigError(f"thinking must be True, False or None, got {thinking!r}")
        if thinking is None:
            return self.builder(question, tokenizer)
        if not self.chat_template:
            chat = ", ".join(n for n, t in sorted(_PROMPTS.items()) if t.chat_template)
            raise ConfigError(f"prompt {self.name!r} does not render the model's chat template, so it has no "
                              f"thinking switch; use a chat-template prompt ({chat})")
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ConfigError(f"prompt {self.name!r} with thinking={'on' if thinking else 'off'}: the tokenizer "
                              "has no chat template to pass enable_thinking to")
        return self.builder(question, tokenizer, enable_thinking=thinking)

    def thinking_switch_works(self, tokenizer) -> bool:
        """Whether this model's chat template renders differently with ``enable_thinking`` on and off (a
        template that ignores the switch, as one without Qwen3's ``enable_thinking`` branch does, cannot honour
        a no-think request: the evaluation warns)."""
        probe = "What is 1 + 1?"
        return self.build(probe, tokenizer, thinking=True) != self.build(probe, tokenizer, thinking=False)


_PROMPTS: dict[str, PromptTemplate] = {}


def register_prompt(name: str, builder: PromptBuilder, *, stop: Sequence[str] = (),
                    chat_template: bool = False) -> PromptTemplate:
    """Register (or replace) the prompt ``name``; ``builder(question, tokenizer)`` returns the model input.

    ``chat_template=True`` declares that the builder renders the model's chat template and passes keyword
    arguments on to it (``builder(question, tokenizer, enable_thinking=...)``; see ``PromptTemplate``).
    """
    if not callable(builder):
        raise ConfigError(f"prompt {name!r}: builder must be callable(question, tokenizer) -> str")
    template = PromptTemplate(name=name, builder=builder, stop=tuple(stop), chat_template=chat_template)
    _PROMPTS[name] = template
    return template


def list_prompts() -> list[str]:
    """Names of all registered prompts (other packages add theirs with ``register_prompt``)."""
    return sorted(_PROMPTS)


def get_prompt(name: str | PromptTemplate) -> PromptTemplate:
    """The registered prompt ``name``; ``ConfigError`` listing the known ones if unknown."""
    if isinstance(name, PromptTemplate):
        return name
    try:
        return _PROMPTS[name]
    except KeyError:
        raise ConfigError(f"unknown prompt {name!r}; registered: {', '.join(list_prompts())}") from None


def build_prompt(name: str | PromptTemplate, question: str, tokenizer, thinking: bool | None = None) -> str:
    """The full model input for ``question`` under prompt ``name`` (``thinking``: see ``PromptTemplate.build``)."""
    return get_prompt(name).build(question, tokenizer, thinking)


def apply_chat(messages: list[dict], tokenizer, **template_kwargs) -> str:
    """``messages`` through the tokenizer's chat template, ending with the assistant's turn opened.

    ``template_kwargs`` (e.g. ``enable_thinking``) become variables of the template, as in transformers'
    ``apply_chat_template``. Falls back to ChatML (the Qwen format the toolkit writes literally) when the
    tokenizer has no template.
    """
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                             **template_kwargs)
    if template_kwargs:
        raise ConfigError(f"the tokenizer has no chat template to pass {', '.join(template_kwargs)} to")
    text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return text + "<|im_start|>assistant\n"


#: The toolkit's ``PROMPT_TEMPLATES["qwen25-math-cot"]`` input template (evaluation/utils.py): the text
#: before and after the question.
QWEN25_MATH_COT = ("<|im_start|>system\n" + BOXED_INSTRUCTION + "<|im_end|>\n<|im_start|>user\n",
                   "<|im_end|>\n<|im_start|>assistant\n")


def qwen25_math_cot(question: str, tokenizer=None) -> str:
    """The toolkit's literal zero-shot ChatML text for ``question`` (the tokenizer and its template unused)."""
    return QWEN25_MATH_COT[0] + question + QWEN25_MATH_COT[1]


def qwen25_math_cot_chat(question: str, tokenizer, **template_kwargs) -> str:
    """The boxed-answer instruction as system message and the question as user turn, via the model's template."""
    return apply_chat(
        [{"role": "system", "content": BOXED_INSTRUCTION}, {"role": "user", "content": question}], tokenizer,
        **template_kwargs,
    )


def chat(question: str, tokenizer, **template_kwargs) -> str:
    """The model's own chat template, no system message, instruction appended to the question (R1 style)."""
    return apply_chat([{"role": "user", "content": f"{question}\n{BOXED_INSTRUCTION}"}], tokenizer,
                      **template_kwargs)


# Worked examples written for this project (not taken from any benchmark or toolkit).
COT_EXAMPLES: tuple[tuple[str, str], ...] = (
    (
        "A baker fills 7 trays with 12 rolls each and sells 50 rolls. How many rolls are left?",
        "The trays hold 7 * 12 = 84 rolls. After selling 50, 84 - 50 = 34 rolls are left. The answer is $34$.",
    ),
    (
        "What is the value of $x$ if $5x - 8 = 2x + 13$?",
        "Subtract $2x$ from both sides: $3x - 8 = 13$. Add 8: $3x = 21$. Divide by 3: $x = 7$. "
        "The answer is $7$.",
    ),
    (
        "Simplify $\\frac{3}{4} + \\frac{5}{6}$.",
        "The common denominator is 12: $\\frac{9}{12} + \\frac{10}{12} = \\frac{19}{12}$. "
        "The answer is $\\frac{19}{12}$.",
    ),
    (
        "A rectangle has perimeter 30 and one side of length 6. What is its area?",
        "Two sides sum to half the perimeter, 15, so the other side is 15 - 6 = 9. The area is 6 * 9 = 54. "
        "The answer is $54$.",
    ),
)


def cot(question: str, tokenizer=None) -> str:
    """Few-shot chain-of-thought prompt for base (System 1) models: worked examples, then the question."""
    shots = "\n\n\n".join(f"Question: {q}\nAnswer: {a}" for q, a in COT_EXAMPLES)
    return f"{shots}\n\n\nQuestion: {question}\nAnswer:"


register_prompt("qwen25-math-cot", qwen25_math_cot)
register_prompt("qwen25-math-cot-chat", qwen25_math_cot_chat, chat_template=True)
register_prompt("cot", cot, stop=("\nQuestion:",))
register_prompt("chat", chat, chat_template=True)
