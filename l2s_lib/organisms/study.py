"""Greedy evaluation of organisms and the in-memory merge study (TA and TIES over System 1 -> System 2).

The eval harness (``l2s_lib.eval``) is the reference evaluator of the compendium; this module is the fast inner
loop of the organism design iterations: batched greedy decoding with ``model.generate`` and the same metrics
(last ``\\boxed{}`` graded as an integer, paper reflection keywords). Merges here are computed in memory with
the engine's math (TA: ``M = A + alpha (B - A)``; TIES with one task vector: ``M = A + alpha * trim(B - A)``
keeping the ``density`` fraction of largest ``|B - A|`` per tensor), from the bf16 weights as saved.

Per response it records: final correctness, first-pass correctness (the first ``answer is N`` or ``\\boxed{N}``),
a *flip* (first answer right, final answer wrong), length in tokens and reflection.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import torch

from l2s_lib.organisms import world as world_mod, writers

BOXED = re.compile(r"\\boxed\{(-?\d+)\}")
FIRST = re.compile(r"answer is (-?\d+)|\\boxed\{(-?\d+)\}")
#: Reflection keywords of the paper (footnote 3); a response is reflective when it contains one.
REFLECT = re.compile(r"wait|re-examine|recap|double-check|let me (?:just )?check|let me (?:just )?verify", re.I)

TA_ALPHAS = tuple(round(0.5 + 0.05 * i, 2) for i in range(11))
#: TIES settings (trim ratio k = fraction removed, alpha): k swept at alpha 1.0, plus the paper's 14B/32B pairs.
TIES_SETTINGS = tuple((k, 1.0) for k in (0.2, 0.35, 0.5, 0.65, 0.8)) + ((0.2, 0.5), (0.25, 0.55))
#: Alphas of the equal-rate control sweep (fewer: it only has to locate where reflection comes from).
CONTROL_ALPHAS = (0.6, 0.7, 0.8, 0.9)


def final_answer(text: str) -> int | None:
    m = BOXED.findall(text)
    return int(m[-1]) if m else None


def first_answer(text: str) -> int | None:
    m = FIRST.search(text)
    if not m:
        return None
    return int(m.group(1) if m.group(1) is not None else m.group(2))


def score(text: str, answer: int, n_tokens: int) -> dict:
    """Per-response metrics of a completion ``text`` of ``n_tokens`` tokens for a problem whose answer is ``answer``."""
    fin, first = final_answer(text), first_answer(text)
    return {"correct": fin == answer, "first_correct": first == answer,
            "flip": first == answer and fin != answer, "length": n_tokens,
            "reflect": bool(REFLECT.search(text))}


@torch.no_grad()
def generate(model, prompts: list[str], *, batch_size: int = 256, max_new_tokens: int = 320,
             progress: bool = False) -> list[tuple[str, int]]:
    """Greedy completions of ``prompts`` as (text, number of generated tokens before EOS).

    Decodes with ``eval.decoding.StaticDecoder`` (the same tokens as ``generate`` in float32, many times
    faster) where it supports the model, else with transformers' ``generate``.
    """
    from tqdm.auto import tqdm

    from l2s_lib.eval.decoding import StaticDecoder, unsupported_reason
    from l2s_lib.organisms.train import Encoder

    enc = Encoder()
    inv = {i: t for t, i in enc.vocab.items()}
    dev = next(model.parameters()).device
    out: list[tuple[str, int]] = []
    static = StaticDecoder(model) if unsupported_reason(model) is None else None
    for i in tqdm(range(0, len(prompts), batch_size), disable=not progress, desc="generate"):
        chunk = [enc(p) for p in prompts[i:i + batch_size]]
        if static is not None:
            done = dict(static.generate(chunk, max_new_tokens, [enc.eos_id], enc.pad_id))
            rows = [done[j] for j in range(len(chunk))]
        else:
            rows = _generate_hf(model, chunk, enc, dev, max_new_tokens)
        for row in rows:
            toks = []
            for t in row:
                if t in (enc.eos_id, enc.pad_id):
                    break
                toks.append(t)
            out.append(("".join(inv[t] for t in toks), len(toks)))
    return out


def _generate_hf(model, chunk: list[list[int]], enc, dev, max_new_tokens: int) -> list[list[int]]:
    """transformers ``generate`` on one left-padded batch: the generated ids of each row."""
    n = max(map(len, chunk))
    ids = torch.full((len(chunk), n), enc.pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for j, x in enumerate(chunk):  # left padding
        ids[j, n - len(x):] = torch.tensor(x)
        mask[j, n - len(x):] = 1
    gen = model.generate(input_ids=ids.to(dev), attention_mask=mask.to(dev), do_sample=False,
                         max_new_tokens=max_new_tokens, eos_token_id=enc.eos_id, pad_token_id=enc.pad_id)
    return gen[:, n:].tolist()


def evaluate_rows(model, problems: list[world_mod.Problem], prefixes: list[str] | None = None,
                  **kw) -> list[dict]:
    """Per-problem metrics (with ``level``) of greedy completions; ``prefixes`` are prefilled after the prompt."""
    prompts = [writers.prompt(p.question) + (prefixes[i] if prefixes else "") for i, p in enumerate(problems)]
    rows = []
    for p, pre, (text, n) in zip(problems, prefixes or [""] * len(problems), generate(model, prompts, **kw)):
        r = score(pre + text, p.answer, n)
        r.update(level=p.level, text=text)
        rows.append(r)
    return rows


def summarize(rows: list[dict]) -> list[dict]:
    """Per-level and overall means of correct, first_correct, flip, length, reflect."""
    out = []
    levels = sorted({r["level"] for r in rows})
    for lv in levels + ["all"]:
        sel = [r for r in rows if lv == "all" or r["level"] == lv]
        n = len(sel)
        out.append({"level": lv, "n": n, **{k: sum(float(r[k]) for r in sel) / n
                                          for k in ("correct", "first_correct", "flip", "length", "reflect")}})
    return out


def forced_error_rows(model, problems: list[world_mod.Problem], seed: int = 0, **kw) -> list[dict]:
    """Repair test: a first pass with a planted error is prefilled; ``correct`` = the model still ends right."""
    rng = random.Random(seed)
    prefixes = [writers.forced_error_prefix(p, rng)[0] for p in problems]
    return evaluate_rows(model, problems, prefixes, **kw)


def load_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors in fp32 (from the bf16 safetensors)."""
    from safetensors.torch import load_file

    sd = {}
    for f in sorted(Path(path).glob("*.safetensors")):
        sd.update({k: v.float() for k, v in load_file(f).items()})
    return sd


def merge_ta(a: dict, b: dict, alpha: float) -> dict:
    """Task arithmetic with one task vector: ``A + alpha (B - A)`` (alpha 1 gives B, 0 gives A)."""
    return {k: a[k] + alpha * (b[k] - a[k]) for k in a}


def trim(delta: torch.Tensor, density: float) -> torch.Tensor:
    """``delta`` with all but its ``density`` fraction of largest-magnitude entries set to zero."""
    k = int(round(density * delta.numel()))
    if k >= delta.numel():
        return delta
    if k <= 0:
        return torch.zeros_like(delta)
    thresh = delta.abs().flatten().kthvalue(delta.numel() - k + 1).values
    return torch.where(delta.abs() >= thresh, delta, torch.zeros_like(delta))


def merge_ties(a: dict, b: dict, k: float, alpha: float) -> dict:
    """TIES with one task vector (sign election is trivial): ``A + alpha * trim(B - A, density=1-k)``."""
    return {n: a[n] + alpha * trim(b[n] - a[n], 1.0 - k) for n in a}


def study_problems(seed: int, per_level: int = 100, levels=world_mod.LEVELS) -> list[world_mod.Problem]:
    """A held-out problem set for the study loop (per level ``per_level`` problems)."""
    return world_mod.sample_unique({lv: per_level for lv in levels}, seed=seed, split="heldout")
