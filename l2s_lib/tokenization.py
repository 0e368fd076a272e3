"""Loading a checkpoint's tokenizer so that it encodes exactly as its ``tokenizer.json`` says.

transformers 5's ``AutoTokenizer`` picks the tokenizer class registered for the model type (``qwen2`` ->
``Qwen2Tokenizer``) and that class rebuilds its own pre-tokenizer, ignoring the one in ``tokenizer.json``. For
the real Qwen2.5 / R1-Distill checkpoints the two agree; for a checkpoint with a custom tokenizer on a Qwen2
architecture (the model organisms: a digit-level WordLevel vocabulary) the rebuilt one silently drops spaces
and newlines. ``load_tokenizer`` checks AutoTokenizer against the raw ``tokenizer.json`` on a probe text and,
when they disagree, loads the generic fast tokenizer that honours the file.
"""

from __future__ import annotations

import json
import re
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


# A special token whose name says it ends a turn or a sequence ("<|im_end|>", "<｜end▁of▁sentence｜>",
# "<|eot_id|>", "<end_of_turn>").
_TURN_END = re.compile(r"end|eot", re.IGNORECASE)


def _turn_enders(template: str | None, special: dict[str, int]) -> list[int]:
    if not template:
        return []
    return sorted(i for content, i in special.items() if _TURN_END.search(content) and content in template)


def chat_end_of_turn_ids(tokenizer) -> list[int]:
    """Ids of the special tokens that close a turn in the tokenizer's chat template (``<|im_end|>`` for Qwen).

    A model prompted in its chat format ends its answer with this token even when its generation config
    names only ``<|endoftext|>`` (Qwen2.5-Math base); the Qwen2.5-Math toolkit stops on both for Qwen models.
    """
    template = getattr(tokenizer, "chat_template", None)
    decoder = getattr(tokenizer, "added_tokens_decoder", None) or {}
    special = {str(t): int(i) for i, t in decoder.items() if getattr(t, "special", True)}
    return _turn_enders(template if isinstance(template, str) else None, special)


def _ids(value) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in (value if isinstance(value, (list, tuple)) else [value]) if v is not None]


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except ValueError:
        return {}


def checkpoint_stop_ids(folder: str | Path) -> list[int]:
    """Every end-of-sequence / end-of-turn id a checkpoint folder declares, read from its JSON files alone.

    In order, without repeats: ``generation_config.json``'s ``eos_token_id``, ``config.json``'s, the
    tokenizer's ``eos_token``, and the special tokens that close a turn in its chat template
    (``chat_end_of_turn_ids``).
    """
    folder = Path(folder)
    gen, cfg = _read_json(folder / "generation_config.json"), _read_json(folder / "config.json")
    tok_cfg, tok_json = _read_json(folder / "tokenizer_config.json"), _read_json(folder / "tokenizer.json")
    special: dict[str, int] = {t["content"]: int(t["id"]) for t in tok_json.get("added_tokens", [])
                               if isinstance(t, dict) and "content" in t and "id" in t}
    for i, t in (tok_cfg.get("added_tokens_decoder") or {}).items():
        if isinstance(t, dict) and "content" in t:
            special.setdefault(t["content"], int(i))
    eos = tok_cfg.get("eos_token")
    eos = eos.get("content") if isinstance(eos, dict) else eos
    template = tok_cfg.get("chat_template")
    if not isinstance(template, str) and (folder / "chat_template.jinja").is_file():
        template = (folder / "chat_template.jinja").read_text(encoding="utf-8")
    ids: list[int] = []
    for i in (_ids(gen.get("eos_token_id")) + _ids(cfg.get("eos_token_id"))
              + ([special[eos]] if isinstance(eos, str) and eos in special else [])
              + _turn_enders(template if isinstance(template, str) else None, special)):
        if i not in ids:
            ids.append(i)
    return ids
