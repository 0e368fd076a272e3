"""Loading a checkpoint's tokenizer so that it encodes exactly as its ``tokenizer.json`` says.

transformers 5's ``AutoTokenizer`` picks the tokenizer class registered for the model type (``qwen2`` ->
``Qwen2Tokenizer``) and that class rebuilds its own pre-tokenizer, ignoring the one in ``tokenizer.json``. For
the real Qwen2.5 / R1-Distill checkpoints the two agree; for a checkpoint with a custom tokenizer on a Qwen2
architecture (the model organisms: a digit-level WordLevel vocabulary) the rebuilt one silently drops spaces
and newlines. ``load_tokenizer`` checks AutoTokenizer against the raw ``tokenizer.json`` on a probe text and,
when they disagree, loads the generic fast tokenizer that honours the file.
"""

from __future__ import annotations

from pathlib import Path

PROBE = "Q: 58+22 = 80.\nWait, let me double-check: \\boxed{80}  Hello world 3.14"


def load_tokenizer(model: str | Path, trust_remote_code: bool = False):
    """The tokenizer of a local folder or hub id, faithful to its ``tokenizer.json`` (see module docstring)."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    tok = AutoTokenizer.from_pretrained(str(model), trust_remote_code=trust_remote_code)
    raw_file = Path(model) / "tokenizer.json"
    if not raw_file.is_file():
        return tok
    from tokenizers import Tokenizer

    raw = Tokenizer.from_file(str(raw_file))
    if tok.encode(PROBE, add_special_tokens=False) == raw.encode(PROBE, add_special_tokens=False).ids:
        return tok
    generic = PreTrainedTokenizerFast.from_pretrained(str(model))
    if generic.encode(PROBE, add_special_tokens=False) != raw.encode(PROBE, add_special_tokens=False).ids:
        raise ValueError(f"cannot load a tokenizer for {model} that matches its tokenizer.json")
    return generic
