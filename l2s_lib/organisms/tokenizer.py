"""The organisms' tokenizer: a word-level ``PreTrainedTokenizerFast`` with one token per digit.

One token per digit (and per space) makes every arithmetic step the same few-token pattern, which is what lets
models of ~1M parameters learn two-digit addition. The vocabulary is computed from the writers' phrases, so it
changes only when the solution formats do. Built with HF ``tokenizers`` (WordLevel model, a regex
pre-tokenizer, a ``Fuse`` decoder so that decoding is the exact concatenation of the pieces).
"""

from __future__ import annotations

import re
from pathlib import Path

from l2s_lib.organisms import writers

PAD, EOS, UNK = "<|endoftext|>", "<|im_end|>", "<unk>"
#: How text is cut into pieces: ``\boxed{``, words (with inner hyphens), single digits, single other characters.
PIECE_PATTERN = r" ?\\boxed\{| ?[A-Za-z]+(?:-[A-Za-z]+)*| ?\d|\s|[^A-Za-z\d\s]"


def pieces(text: str) -> list[str]:
    return re.findall(PIECE_PATTERN, text)


def vocabulary() -> list[str]:
    """Special tokens, then every piece of the writers' formats, sorted (deterministic)."""
    phrases = [writers.CHECK, writers.AGAIN, writers.DIFFER, writers.prompt("0+1"),
               "So the answer is 1, not 2.", "Yes, the answer is 3.", writers.boxed(4), "0123456789+-=.,:\n "]
    found = set()
    for ph in phrases:
        for piece in pieces(ph):
            found.add(piece)
            if piece.strip() and piece[0] not in "+-=.,:}":  # words, digits, \\boxed{: with and without space
                found.update({piece.lstrip(" "), " " + piece.lstrip(" ")})
    return [PAD, EOS, UNK] + sorted(found)


def build_tokenizer():
    """The organisms' ``PreTrainedTokenizerFast`` (pad ``<|endoftext|>``, eos ``<|im_end|>``, no BOS)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(PIECE_PATTERN), behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=PAD, unk_token=UNK)
    fast.padding_side = "left"  # generation pads on the left; the trainer pads on its own
    return fast


def save_tokenizer(out_dir: str | Path) -> None:
    build_tokenizer().save_pretrained(Path(out_dir))
