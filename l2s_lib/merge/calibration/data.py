"""Calibration data of the data-informed merges (AIM, Sens-Merging): reading, selecting, tokenising.

Calibration file format (jsonl, one JSON object per line, UTF-8)::

    {"question": "...", "short_answer": "...", "long_answer": "..."}

``question`` is the problem; ``short_answer`` a concise, System-1-style solution; ``long_answer`` a
long, System-2-style chain of thought ending in the answer. Other keys (``id``, ``level`` ...) are
allowed and ignored. ``tests/fixtures/calibration/`` holds a small example; the organisms write
``data/organisms/calibration.jsonl`` in the same format.

Real use (the paper, section 4.4 and 6): s1K from the hub (``simplescaling/s1K``) through ``datasets``,
with this field mapping (``S1K_FIELDS``):

- ``question`` -> question;
- ``attempt`` -> short answer: the final write-up that follows the thinking, which is what a quick
  System 1 writes (the paper only says "short answer"; ``solution`` is the source dataset's reference
  solution, often a bare result or in another style, so it is not taken);
- ``thinking_trajectories`` (+ ``attempt``) -> long answer: the reasoning trace followed by the final
  write-up, the shape of a System 2 response (thinking, then the answer).

The loader's options are the paper's: ``side`` = short | long | both (question + short answer,
question + long answer, or both pairs per question), ``n`` = how many questions (the paper: 10, 20,
100), ``seed`` = which ones (a seeded sample without replacement).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from l2s_lib import paths
from l2s_lib.errors import ConfigError
from l2s_lib.fingerprint import data_fingerprint

SIDES = ("short", "long", "both")
TEMPLATES = ("plain", "chat")
REQUIRED_FIELDS = ("question", "short_answer", "long_answer")

#: s1K column -> calibration field. ``long_answer`` joins the thinking trajectory and the attempt.
S1K_FIELDS = {"question": "question", "short_answer": "attempt", "long_answer": ("thinking_trajectories", "attempt")}
#: Hub ids of s1K that ``load_calibration`` accepts as sources (also as ``hf:<id>``).
S1K_IDS = ("simplescaling/s1K", "simplescaling/s1K-1.1")


# ---------------------------------------------------------------------------------------------------
# Records, sets and loading
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CalibrationRecord:
    """One calibration question with its short (System 1) and long (System 2) answers."""

    question: str
    short_answer: str
    long_answer: str


@dataclass(frozen=True)
class CalibrationSet:
    """The (question, answer) pairs one pass sees, and how they were chosen.

    ``fingerprint`` hashes the pairs themselves (not the file name), so the same texts give the same
    cache key and provenance wherever they came from.
    """

    source: str
    side: str
    n: int | None
    seed: int
    pairs: tuple[tuple[str, str], ...]
    fingerprint: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fingerprint", data_fingerprint({"side": self.side, "pairs": self.pairs}))

    def provenance(self) -> dict[str, Any]:
        """What a merge records about its calibration data."""
        return {"source": self.source, "side": self.side, "n": self.n, "seed": self.seed,
                "texts": len(self.pairs), "sha256_16": self.fingerprint}


def read_jsonl(path: str | Path) -> list[CalibrationRecord]:
    """Read a calibration jsonl file (see the module docstring for the format)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"calibration file not found: {path}")
    records = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            missing = [k for k in REQUIRED_FIELDS if not isinstance(obj.get(k), str)]
            if missing:
                raise ConfigError(f"{path}:{lineno}: missing or non-string field(s) {', '.join(missing)}; "
                                  f"each line needs {', '.join(REQUIRED_FIELDS)}")
            records.append(CalibrationRecord(obj["question"], obj["short_answer"], obj["long_answer"]))
    if not records:
        raise ConfigError(f"calibration file {path} holds no records")
    return records


def _s1k_value(row: dict[str, Any], spec: str | tuple[str, ...]) -> str:
    keys = (spec,) if isinstance(spec, str) else spec
    parts = []
    for key in keys:
        value = row[key]
        # thinking_trajectories is a list of strings (one trajectory per row in s1K).
        parts.append("\n\n".join(value) if isinstance(value, list) else str(value))
    return "\n\n".join(p for p in parts if p)


def load_s1k(dataset: str = "simplescaling/s1K", split: str = "train",
             fields: dict[str, Any] | None = None) -> list[CalibrationRecord]:
    """s1K (or a dataset with the same columns) through ``datasets``, mapped with ``S1K_FIELDS``.

    ``dataset`` may be a hub id or a local path that ``datasets.load_dataset`` understands; for
    s1K-1.1 pass e.g. ``fields={"question": "question", "short_answer": "deepseek_attempt",
    "long_answer": ("deepseek_thinking_trajectory", "deepseek_attempt")}``.
    """
    import datasets  # optional dependency (extra "eval"): imported only for hub data

    fields = dict(fields or S1K_FIELDS)
    try:
        ds = datasets.load_dataset(dataset, split=split)
    except Exception as e:  # offline, unknown id ...: say what was asked and why it failed
        raise ConfigError(f"cannot load calibration dataset '{dataset}' (split {split}): {e}") from e
    columns = set(ds.column_names)
    wanted = {k for spec in fields.values() for k in ((spec,) if isinstance(spec, str) else spec)}
    if not wanted <= columns:
        raise ConfigError(f"dataset '{dataset}' lacks column(s) {sorted(wanted - columns)}; has {sorted(columns)}")
    return [CalibrationRecord(*(_s1k_value(row, fields[k]) for k in REQUIRED_FIELDS)) for row in ds]


def resolve_source(source: str | Path) -> tuple[str, Path | None]:
    """(kind, path): ``("jsonl", path)`` for a file (absolute, or relative to the working directory or
    the repository root), ``("hub", None)`` for ``hf:<id>`` or a known s1K id."""
    text = str(source)
    if text.startswith("hf:"):
        return "hub", None
    for candidate in (Path(text), paths.ROOT / text):
        if candidate.is_file():
            return "jsonl", candidate.resolve()
    if text in S1K_IDS:
        return "hub", None
    raise ConfigError(f"calibration source '{text}' is neither a jsonl file nor a hub dataset "
                      f"(use hf:<dataset id>, or one of {', '.join(S1K_IDS)})")


def select(records: Sequence[CalibrationRecord], n: int | None, seed: int) -> list[CalibrationRecord]:
    """``n`` records drawn without replacement with ``random.Random(seed)``, in file order; all if n is None."""
    if n is None:
        return list(records)
    if n < 1 or n > len(records):
        raise ConfigError(f"calibration n = {n} is not allowed: choose 1..{len(records)} (the set has "
                          f"{len(records)} records) or null for all")
    idx = sorted(random.Random(seed).sample(range(len(records)), n))
    return [records[i] for i in idx]


def make_pairs(records: Iterable[CalibrationRecord], side: str) -> tuple[tuple[str, str], ...]:
    """(question, answer) pairs for ``side``; ``both`` gives the short pair then the long pair per question.

    ``both`` keeps two natural (question, answer) texts rather than one text with two answers, which no
    model would ever produce.
    """
    if side not in SIDES:
        raise ConfigError(f"calibration side '{side}' is not allowed; one of {', '.join(SIDES)}")
    pairs = []
    for r in records:
        if side in ("short", "both"):
            pairs.append((r.question, r.short_answer))
        if side in ("long", "both"):
            pairs.append((r.question, r.long_answer))
    return tuple(pairs)


def load_calibration(source: str | Path, side: str = "short", n: int | None = 100, seed: int = 0) -> CalibrationSet:
    """Load, select and pair calibration data: the single entry point the merge methods use."""
    kind, path = resolve_source(source)
    if kind == "jsonl":
        records = read_jsonl(path)
        label = paths.relative_to_root(path)
    else:
        hub_id = str(source).removeprefix("hf:")
        records = load_s1k(hub_id)
        label = f"hf:{hub_id}"
    chosen = select(records, n, seed)
    return CalibrationSet(source=label, side=side, n=n, seed=seed, pairs=make_pairs(chosen, side))

# ---------------------------------------------------------------------------------------------------
# Tokenisation and model loading
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Encoded:
    """One tokenised calibration text: its ids and where the answer starts."""

    ids: torch.Tensor  # [T] int64
    answer_start: int


def encode_pairs(tokenizer, pairs: Sequence[tuple[str, str]], template: str = "plain",
                 max_length: int | None = None) -> list[Encoded]:
    """Tokenise (question, answer) pairs.

    ``plain``: ``question + "\\n" + answer`` with no special tokens (as AIM's original raw-text
    calibration); ``chat``: the tokenizer's chat template with the question as the user turn and the
    answer as the assistant turn. Prompt and answer are tokenised separately and concatenated so the
    answer boundary is exact. ``max_length`` truncates from the right (the Sens reimplementation: 512).
    """
    if template not in TEMPLATES:
        raise ConfigError(f"calibration template '{template}' is not allowed; one of {', '.join(TEMPLATES)}")
    out = []
    for question, answer in pairs:
        if template == "plain":
            prompt, reply = question + "\n", answer
        else:
            prompt = tokenizer.apply_chat_template([{"role": "user", "content": question}],
                                                   add_generation_prompt=True, tokenize=False)
            reply = answer + (tokenizer.eos_token or "")
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        a = tokenizer(reply, add_special_tokens=False)["input_ids"]
        ids = torch.tensor(p + a, dtype=torch.long)
        if max_length is not None:
            ids = ids[:max_length]
        if ids.numel() >= 2:  # a causal-LM loss needs at least one next-token target
            out.append(Encoded(ids, min(len(p), ids.numel())))
    if not out:
        raise ConfigError("calibration texts tokenise to nothing usable (each needs at least 2 tokens)")
    return out
