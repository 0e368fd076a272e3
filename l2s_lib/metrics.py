"""The paper's metrics, in one module used by the evaluation harness, the studies and the notebooks.

Definitions (Wu et al. 2025; checked against the paper's tables in ``tests/test_metrics.py``):

- **accuracy**: percentage of correct responses.
- **mean length**: mean response length in tokens, under one of the counts ``LENGTH_COUNTS``:
  ``"paper"`` is the paper code's ``len(tokenizer(text)["input_ids"])`` on the stripped response with the
  evaluated model's tokenizer and its default special tokens (``paper_length``; R1-Distill's tokenizer adds
  its BOS, Qwen2.5-Math's adds nothing); ``"generated"`` the tokens the model generated (end-of-turn token
  excluded); ``"retok"`` the response re-encoded without special tokens.
- **accuracy with truncated responses counted wrong** (``accuracy_truncated_wrong``): a response cut by
  the length cap may still end in a number that equals the reference and be graded right (by this
  harness and the toolkit alike); this column counts every such response as wrong.
- **length change** ("Avg." column of Tables 1, 3, 4): the mean over benchmarks of the per-benchmark
  relative change of mean length against the System 2 model, ``mean_b(L_method,b / L_S2,b - 1) * 100``
  (not the change of the mean of lengths).
- **reflective response**: a response that contains at least one reflection keyword. Two lists:
  ``"paper-code"``: exactly what the paper's code counts (``src/evaluation/data_process.py`` of
  hahahawu/Long-to-Short-via-Model-Merging): the seven phrases ``PAPER_CODE_KEYWORDS`` joined into one
  regular-expression alternation, in that order, found with ``re.findall(pattern, text, re.IGNORECASE)``:
  case-insensitive substrings, so "wait" also counts inside "awaiting", and "let me verify" (without
  "just") does not count. Use it to replicate the paper's numbers; the paper-scale parameter files do.
  ``"paper"`` (the organisms' default): the footnote's list ("wait, re-examine, recap, double-check, let
  me (just) check, let me (just) verify") matched as *whole words*, case-insensitive: counts that mean
  what the footnote says. The two differ on substrings ("awaiting") and on "let me verify".
- **keyword frequency** (Table 3): the mean number of keyword occurrences per *reflective* response.
- **truncation rate**: percentage of responses stopped by the length cap.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from l2s_lib.errors import ConfigError

#: The paper's footnote 3 as whole-word, case-insensitive regular expressions (the ``"paper"`` list).
PAPER_KEYWORDS: dict[str, str] = {
    "wait": r"wait",
    "re-examine": r"re-examine",
    "recap": r"recap",
    "double-check": r"double-check",
    "let me (just) check": r"let me (?:just )?check",
    "let me (just) verify": r"let me (?:just )?verify",
}

#: The paper code's keyword list, in its order (the order matters: one alternation, leftmost match wins).
PAPER_CODE_KEYWORDS: tuple[str, ...] = ("wait", "re-examine", "double-check", "let me check", "recap",
                                        "let me just verify", "let me just check")

KEYWORD_LISTS = ("paper", "paper-code")

#: The paper code's pattern: ``'|'.join(re.escape(k) for k in keywords)`` used with ``re.IGNORECASE``.
PAPER_CODE_PATTERN = re.compile("|".join(re.escape(k) for k in PAPER_CODE_KEYWORDS), re.IGNORECASE)


def _compile(keywords) -> list[tuple[str, re.Pattern]]:
    if isinstance(keywords, str):
        if keywords == "paper":
            return [(k, re.compile(rf"\b{p}\b", re.IGNORECASE)) for k, p in PAPER_KEYWORDS.items()]
        if keywords == "paper-code":
            return []  # counted by the single alternation (see ``keyword_counts``)
        raise ConfigError(f"unknown keyword list {keywords!r}; allowed: {', '.join(KEYWORD_LISTS)} "
                          "or a list of phrases")
    phrases = list(keywords)
    if not phrases or not all(isinstance(k, str) and k for k in phrases):
        raise ConfigError("keywords must be 'paper', 'paper-code' or a non-empty list of phrases")
    return [(k, re.compile(rf"\b{re.escape(k)}\b", re.IGNORECASE)) for k in phrases]


_COMPILED: dict = {}


def _patterns(keywords):
    key = keywords if isinstance(keywords, str) else tuple(keywords)
    if key not in _COMPILED:
        _COMPILED[key] = _compile(keywords)
    return _COMPILED[key]


def keyword_counts(text: str, keywords: str | Sequence[str] = "paper") -> dict[str, int]:
    """Occurrences of each reflection keyword in ``text`` (``keywords``: "paper", "paper-code" or phrases).

    For "paper-code" the counts are those of the paper code's one alternation (non-overlapping,
    leftmost match first), attributed to the phrase each match spells; they sum to its ``re.findall`` count.
    """
    if isinstance(keywords, str) and keywords == "paper-code":
        counts = dict.fromkeys(PAPER_CODE_KEYWORDS, 0)
        for m in PAPER_CODE_PATTERN.findall(text):
            # IGNORECASE also folds a few non-ASCII letters (the long s, the Kelvin sign): find the phrase.
            k = m.lower() if m.lower() in counts else next(
                k for k in PAPER_CODE_KEYWORDS if re.fullmatch(re.escape(k), m, re.IGNORECASE))
            counts[k] += 1
        return counts
    return {k: len(p.findall(text)) for k, p in _patterns(keywords)}


def count_keywords(text: str, keywords: str | Sequence[str] = "paper") -> int:
    """Total reflection-keyword occurrences in ``text`` ("paper-code": ``len(re.findall(...))`` as the paper)."""
    return sum(keyword_counts(text, keywords).values())


def is_reflective(text: str, keywords: str | Sequence[str] = "paper") -> bool:
    """Whether ``text`` contains at least one reflection keyword (the paper's reflective response)."""
    return count_keywords(text, keywords) > 0


def accuracy(correct: Iterable[bool]) -> float:
    """Percentage of true values (NaN for none)."""
    values = np.asarray(list(correct), dtype=float)
    return float(values.mean() * 100) if values.size else float("nan")


def mean_length(lengths: Iterable[float]) -> float:
    """Mean response length (NaN for none)."""
    values = np.asarray(list(lengths), dtype=float)
    return float(values.mean()) if values.size else float("nan")


def truncation_rate(finish_reasons: Iterable[str]) -> float:
    """Percentage of responses stopped by the length cap (``finish_reason == "length"``)."""
    return accuracy(r == "length" for r in finish_reasons)


def reflective_pct(texts: Iterable[str], keywords: str | Sequence[str] = "paper") -> float:
    """Percentage of responses that are reflective."""
    return accuracy(is_reflective(t, keywords) for t in texts)


def keyword_freq(texts: Iterable[str], keywords: str | Sequence[str] = "paper") -> float:
    """Mean keyword count per reflective response (Table 3's definition); 0 when none is reflective."""
    counts = [c for c in (count_keywords(t, keywords) for t in texts) if c > 0]
    return float(np.mean(counts)) if counts else 0.0


def length_change(method_lengths: Mapping[str, float], system2_lengths: Mapping[str, float]) -> float:
    """The paper's "Avg." length change in percent: ``mean_b(L_method,b / L_S2,b - 1) * 100``.

    Both arguments map benchmark -> mean length; they must cover the same benchmarks.
    """
    missing = sorted(set(system2_lengths) ^ set(method_lengths))
    if missing:
        raise ValueError(f"length_change: benchmarks not in both mappings: {missing}")
    if not method_lengths:
        raise ValueError("length_change: no benchmarks")
    ratios = [method_lengths[b] / system2_lengths[b] - 1 for b in system2_lengths]
    return float(np.mean(ratios) * 100)


#: Length counts by name -> the per-sample record column that holds it (see the module docstring).
LENGTH_COUNTS = {"generated": "n_tokens", "paper": "n_tokens_paper", "retok": "n_tokens_retok"}


def paper_length(text: str, tokenizer) -> int:
    """The paper code's length of a response: ``len(tokenizer(text.strip())["input_ids"])``.

    The evaluated model's tokenizer with its default special tokens (``data_process.py`` of the paper's
    repository counts the toolkit's ``code`` field, the response stripped of surrounding space).
    """
    return len(tokenizer(text.strip())["input_ids"])


def length_column(length: str) -> str:
    """The record column of a length count (a name of ``LENGTH_COUNTS``, or a column name itself)."""
    if length in LENGTH_COUNTS:
        return LENGTH_COUNTS[length]
    if length in LENGTH_COUNTS.values():
        return length
    raise ConfigError(f"unknown length count {length!r}; allowed: {', '.join(LENGTH_COUNTS)}")


def accuracy_truncated_wrong(correct: Iterable[bool], finish_reasons: Iterable[str]) -> float:
    """Percentage correct when every response stopped by the length cap counts as wrong."""
    return accuracy(bool(c) and r != "length" for c, r in zip(correct, finish_reasons, strict=True))


SUMMARY_COLUMNS = ["model", "benchmark", "level", "n", "accuracy", "mean_tokens", "reflective_pct",
                   "keyword_freq", "truncated_pct", "accuracy_truncated_wrong", "length_count", "keywords"]


def summarize(records, keywords: str | Sequence[str] | Mapping[str, str | Sequence[str]] = "paper",
              length: str | Mapping[str, str] = "generated"):
    """The summary table of per-sample records: one row per (model, benchmark, level) plus ``level="all"``.

    ``records``: a DataFrame (or list of dicts) with columns ``model, benchmark, level, correct,
    response, finish_reason`` and the column of the ``length`` count (a name of ``LENGTH_COUNTS``).
    ``keywords`` and ``length`` may be mappings benchmark -> value (an evaluation's per-benchmark
    defaults); the row says which it used (``keywords``, ``length_count``). Levels are written as strings
    (``"1"`` ... and ``"all"``) so the column has one type; benchmarks without levels only get the
    ``"all"`` row. Accuracy and percentages in 0-100.
    """
    import pandas as pd

    df = records if isinstance(records, pd.DataFrame) else pd.DataFrame(list(records))
    if df.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    rows = []

    def pick(value, bench):
        return value[bench] if isinstance(value, Mapping) else value

    def row(model, bench, level, part):
        kw, count = pick(keywords, bench), pick(length, bench)
        return {
            "model": model,
            "benchmark": bench,
            "level": level,
            "n": len(part),
            "accuracy": accuracy(part["correct"]),
            "mean_tokens": mean_length(part[length_column(count)]),
            "reflective_pct": reflective_pct(part["response"], kw),
            "keyword_freq": keyword_freq(part["response"], kw),
            "truncated_pct": truncation_rate(part["finish_reason"]),
            "accuracy_truncated_wrong": accuracy_truncated_wrong(part["correct"], part["finish_reason"]),
            "length_count": count,
            "keywords": kw if isinstance(kw, str) else ",".join(kw),
        }

    for (model, bench), part in df.groupby(["model", "benchmark"], sort=False):
        levels = part["level"] if "level" in part else None
        if levels is not None and levels.notna().any():
            for level in sorted(levels.dropna().unique(), key=_level_key):
                rows.append(row(model, bench, _level_str(level), part[levels == level]))
        rows.append(row(model, bench, "all", part))
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def _level_str(level) -> str:
    # pandas turns an int column with missing values into floats: write 3.0 as "3"
    if isinstance(level, float) and level.is_integer():
        return str(int(level))
    return str(level)


def _level_key(level):
    try:
        return (0, float(level), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(level))
