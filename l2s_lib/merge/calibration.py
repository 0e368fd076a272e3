"""Calibration data and the calibration passes of the data-informed merges (AIM, Sens-Merging).

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

The passes:

- AIM (``aim_activation_statistics``): the base model's per-input-channel mean |activation| for every
  module with a weight except embeddings (linears, RMSNorms, lm_head), on texts concatenated and cut
  into fixed-length blocks, so blocks batch without padding;
- Sens (``sens_sensitivities``, ``final_hidden_states``, ``logit_distance``): per-sample first-order
  sensitivity ``sum |theta * grad|`` per layer group, and mean per-token logit distances between models
  on each other's calibration data.

Every pass loads exactly one model (with transformers, on the requested device) and frees it before
returning. Results are cached under ``paths.cache_dir()/calibration`` keyed by the model's content
fingerprint, the calibration set's hash and the pass options, so a sweep over omega or T reuses them.
"""

from __future__ import annotations

import gc
import json
import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from tqdm.auto import tqdm

from l2s_lib import paths
from l2s_lib.errors import ConfigError
from l2s_lib.fingerprint import data_fingerprint

SIDES = ("short", "long", "both")
TEMPLATES = ("plain", "chat")
LOSS_MASKS = ("all", "answer")
DTYPES = ("auto", "float32", "bfloat16", "float16")
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


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto``: bf16 on CUDA (real models), fp32 on CPU (exact, and bf16 matmuls are slow on CPU)."""
    if name not in DTYPES:
        raise ConfigError(f"calibration dtype '{name}' is not allowed; one of {', '.join(DTYPES)}")
    if name == "auto":
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    return getattr(torch, name)


def load_causal_lm(path: str | Path, device: torch.device, dtype: torch.dtype):
    """One causal LM (safetensors only, no remote code) in eval mode on ``device``."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, use_safetensors=True,
                                                 trust_remote_code=False)
    return model.to(device).eval()


def load_tokenizer(path: str | Path):
    from l2s_lib.tokenization import load_tokenizer as load

    return load(path)


def free_memory() -> None:
    """Give a dropped model's memory back (call after the caller's ``del model``, before the next load)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------------
# Cache
# ---------------------------------------------------------------------------------------------------


#: Bumped when the code that turns calibration data into statistics changes what it computes. 2: tokenizers
#: are loaded faithfully to tokenizer.json (``l2s_lib.tokenization``); statistics of version 1 were computed on
#: mis-tokenised text for checkpoints with a custom tokenizer on a Qwen2 architecture (the organisms).
STATS_VERSION = 2


def cache_key(kind: str, **parts: Any) -> str:
    """The cache key of a calibration statistic: a hash of what determines it (models, data, options, code)."""
    return data_fingerprint({"kind": kind, "version": STATS_VERSION, **parts}, length=24)


def _cache_file(kind: str, key: str, suffix: str) -> Path:
    return paths.cache_dir() / "calibration" / kind / f"{key}{suffix}"


def cache_load(kind: str, key: str) -> dict[str, Any] | None:
    """A cached statistic (tensors and/or JSON) or None."""
    jf = _cache_file(kind, key, ".json")
    if not jf.is_file():
        return None
    data = json.loads(jf.read_text())
    tf = _cache_file(kind, key, ".safetensors")
    if tf.is_file():
        from safetensors.torch import load_file

        data["tensors"] = load_file(str(tf))
    return data


def cache_save(kind: str, key: str, meta: dict[str, Any], tensors: dict[str, torch.Tensor] | None = None) -> None:
    """Write a statistic atomically (tensors first, the JSON that marks it complete last)."""
    jf = _cache_file(kind, key, ".json")
    jf.parent.mkdir(parents=True, exist_ok=True)
    if tensors is not None:
        from safetensors.torch import save_file

        tf = _cache_file(kind, key, ".safetensors")
        tmp = tf.with_name(tf.name + f".tmp-{os.getpid()}")
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp))
        os.replace(tmp, tf)
    tmp = jf.with_name(jf.name + f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(meta, sort_keys=True, indent=1))
    os.replace(tmp, jf)


# ---------------------------------------------------------------------------------------------------
# AIM: per-input-channel activation statistics of the base model
# ---------------------------------------------------------------------------------------------------


def aim_modules(model) -> dict[str, torch.nn.Module]:
    """The modules AIM relaxes: every module with a ``weight`` parameter whose name has no ``embed``.

    For Qwen2 that is q/k/v/o/gate/up/down, the RMSNorms and lm_head [AIM code: ``relax_on_merged``].
    """
    out = {}
    for name, module in model.named_modules():
        w = getattr(module, "weight", None)
        if name and isinstance(w, torch.nn.Parameter) and "embed" not in name:
            out[name] = module
    return out


def make_blocks(encoded: Sequence[Encoded], block_size: int, skip_longer: bool = False) -> list[torch.Tensor]:
    """Concatenate texts and cut them into ``block_size`` blocks (AIM's original packing).

    The original skips texts longer than one block; s1K answers are mostly longer than 512 tokens, so
    that is off by default (``skip_longer``). The last, shorter block is kept so a few short samples
    still give statistics.
    """
    kept = [e.ids for e in encoded if not (skip_longer and e.ids.numel() > block_size)]
    if not kept:
        raise ConfigError(f"no calibration text fits in a block of {block_size} tokens (skip_longer is on)")
    flat = torch.cat(kept)
    return list(flat.split(block_size))


@torch.no_grad()
def aim_activation_statistics(model_path: str | Path, calib: CalibrationSet, *, device: torch.device | str = "cpu",
                              dtype: str = "auto", block_size: int = 512, batch_size: int = 8,
                              template: str = "plain", skip_longer: bool = False,
                              progress: bool = True) -> dict[str, torch.Tensor]:
    """``{module name: sum over blocks of mean over tokens |module input|}`` (fp32, shape ``[in]``).

    Full blocks are batched (they have equal length, so no padding changes the statistics); the
    per-block token mean is taken before summing over blocks, as in the original. lm_head's input is
    the backbone's final (normed) hidden state, read from the backbone output so the vocabulary
    projection is never computed.
    """
    device = torch.device(device)
    tokenizer = load_tokenizer(model_path)
    blocks = make_blocks(encode_pairs(tokenizer, calib.pairs, template), block_size, skip_longer)
    model = load_causal_lm(model_path, device, resolve_dtype(dtype, device))
    stats: dict[str, torch.Tensor] = {}
    head_name = next((n for n, m in model.named_modules() if m is model.get_output_embeddings()), "lm_head")

    def hook_for(name):
        def hook(module, args, kwargs):
            x = args[0] if args else next(v for v in kwargs.values() if isinstance(v, torch.Tensor))
            s = x.detach().float().abs().mean(dim=1).sum(dim=0)  # [B, T, in] -> per-block mean, summed
            stats[name] = stats[name] + s if name in stats else s
        return hook

    handles = [m.register_forward_pre_hook(hook_for(n), with_kwargs=True)
               for n, m in aim_modules(model).items() if n != head_name]
    backbone = model.base_model
    try:
        groups = _batches_of_equal_length(blocks, batch_size)
        for batch in tqdm(groups, desc="AIM activations", disable=not progress, leave=False):
            ids = torch.stack(batch).to(device)
            h = backbone(input_ids=ids).last_hidden_state
            s = h.float().abs().mean(dim=1).sum(dim=0)
            stats[head_name] = stats[head_name] + s if head_name in stats else s
    finally:
        for h in handles:
            h.remove()
    out = {k: v.cpu() for k, v in stats.items()}
    del model, backbone, handles
    free_memory()
    return out


def _batches_of_equal_length(blocks: Sequence[torch.Tensor], batch_size: int) -> list[list[torch.Tensor]]:
    by_len: dict[int, list[torch.Tensor]] = {}
    for b in blocks:
        by_len.setdefault(b.numel(), []).append(b)
    return [group[i:i + batch_size] for group in by_len.values() for i in range(0, len(group), batch_size)]


def saliency(stat: torch.Tensor) -> torch.Tensor:
    """AIM's importance ``I = |a| / max |a|`` in [0, 1] (all zeros when the module saw no activation)."""
    a = stat.abs()
    m = a.max()
    return a / m if m > 0 else torch.zeros_like(a)


# ---------------------------------------------------------------------------------------------------
# Sens-Merging: per-sample sensitivities and cross-model logit distances
# ---------------------------------------------------------------------------------------------------


def sens_group(name: str) -> str:
    """The layer group of a parameter: ``model.layers.N`` for a transformer block, else its module path
    (``model.embed_tokens``, ``model.norm``, ``lm_head``), the Sens reimplementation's grouping."""
    parts = name.split(".")
    if len(parts) >= 3 and parts[1] == "layers" and parts[2].isdigit():
        return ".".join(parts[:3])
    return ".".join(parts[:-1]) if len(parts) > 1 else name


def sensitivity_pass(model, encoded: Sequence[Encoded], *, device: torch.device | str = "cpu",
                     loss_on: str = "all", progress: bool = True) -> dict[str, float]:
    """``{group: (1/m) sum over samples of sum over the group's weights |theta * dL/dtheta|}`` for a loaded model.

    One forward + backward per sample (batch size 1): ``|theta * g|`` is not linear in g, so the
    per-sample value cannot be recovered from a batch gradient; a batch would compute
    ``|theta * sum g|`` instead (METHODS.md section 8, pitfalls). What is batched is everything that is
    linear: the cross-model logit passes (``final_hidden_states``). Gradients are upcast to fp32 before
    |.| and the sum. ``loss_on = answer`` masks the question tokens out of the loss. A tied lm_head is
    one parameter with the embedding, so its gradient lands in the ``model.embed_tokens`` group.
    """
    if loss_on not in LOSS_MASKS:
        raise ConfigError(f"loss_on '{loss_on}' is not allowed; one of {', '.join(LOSS_MASKS)}")
    device = torch.device(device)
    params = [(n, p) for n, p in model.named_parameters()]
    totals = {sens_group(n): 0.0 for n, _ in params}
    used = 0
    for enc in tqdm(encoded, desc="Sens sensitivities", disable=not progress, leave=False):
        ids = enc.ids.unsqueeze(0).to(device)
        labels = ids.clone()
        if loss_on == "answer":
            labels[:, : enc.answer_start] = -100
            if (labels[:, 1:] != -100).sum() == 0:
                continue  # the answer was truncated away: no loss to differentiate
        model.zero_grad(set_to_none=True)
        with torch.enable_grad():
            loss = model(input_ids=ids, labels=labels, use_cache=False).loss
            loss.backward()
        with torch.no_grad():
            for n, p in params:
                if p.grad is not None:
                    totals[sens_group(n)] += float((p.detach().float() * p.grad.float()).abs().sum())
        used += 1
    model.zero_grad(set_to_none=True)
    if used == 0:
        raise ConfigError("no calibration sample kept any answer token within max_length (loss_on = answer)")
    return {g: v / used for g, v in totals.items()}


@dataclass(frozen=True)
class SensParticipant:
    """One model taking part in Sens-Merging's softmax, with the calibration set it is judged on."""

    label: str
    path: Path
    fingerprint: str
    calib: CalibrationSet


def sens_statistics(participants: Sequence[SensParticipant], *, tokenizer_path: str | Path,
                    device: torch.device | str = "cpu", dtype: str = "auto", template: str = "plain",
                    max_length: int | None = 512, loss_on: str = "all", batch_size: int = 8,
                    gradient_checkpointing: bool = False, progress: bool = True) -> dict[str, Any]:
    """Sens-Merging's statistics: per-participant group sensitivities and the cross-model distances.

    Returns ``{"sensitivities": [{group: S}], "distances": [[g_ij]], "cache_hits": int, "passes": int}``
    where ``g_ij`` (i != j) is the mean per-token logit distance between models i and j on j's data.
    Each model is loaded at most once (one at a time): on its own data it runs the per-sample backward
    passes, and on every participant's data batched forwards whose final hidden states (a few hundred
    MB at 7B) stay on the CPU along with its output head; distances are formed from those after the
    last model is released. Sensitivities are cached per model (fingerprint, calibration hash,
    options) and the distance matrix per participant list, so a sweep over alpha or T loads nothing.
    """
    device = torch.device(device)
    options = {"dtype": dtype, "template": template, "max_length": max_length}
    sens_keys = [cache_key("sens_sensitivity", model=p.fingerprint, calibration=p.calib.fingerprint,
                           options=options | {"loss_on": loss_on}) for p in participants]
    dist_key = cache_key("sens_distance", models=[p.fingerprint for p in participants],
                         calibrations=[p.calib.fingerprint for p in participants], options=options)
    sens: list[dict[str, float] | None] = []
    for key in sens_keys:
        hit = cache_load("sens_sensitivity", key)
        sens.append(hit["sensitivity"] if hit else None)
    dist_hit = cache_load("sens_distance", dist_key)
    distances = dist_hit["distances"] if dist_hit else None
    hits = sum(s is not None for s in sens) + (distances is not None)
    passes = 0

    tokenizer = load_tokenizer(tokenizer_path)
    encoded = [encode_pairs(tokenizer, p.calib.pairs, template, max_length) for p in participants]
    hidden: list[list[list[torch.Tensor]]] = []  # [model][dataset][text] -> [T, d]
    heads: list[torch.Tensor] = []
    for i, part in enumerate(participants):
        if sens[i] is not None and distances is not None:
            continue
        model = load_causal_lm(part.path, device, resolve_dtype(dtype, device))
        passes += 1
        if sens[i] is None:
            if gradient_checkpointing:
                # transformers only checkpoints in training mode; Qwen2's dropouts are 0, so train()
                # changes nothing else.
                model.gradient_checkpointing_enable()
                model.train()
            sens[i] = sensitivity_pass(model, encoded[i], device=device, loss_on=loss_on, progress=progress)
            cache_save("sens_sensitivity", sens_keys[i], {"sensitivity": sens[i], "model": part.label,
                                                          "calibration": part.calib.provenance(), "options": options})
        if distances is None:
            hidden.append([final_hidden_states(model, enc, batch_size, device, progress) for enc in encoded])
            heads.append(model.get_output_embeddings().weight.detach().to("cpu", copy=True))
        del model  # before the next load: never two models at once
        free_memory()
    if distances is None:
        k = len(participants)
        distances = [[0.0] * k for _ in range(k)]
        for i in range(k):
            for j in range(k):
                if i != j:  # g_ij: models i and j compared on j's calibration data
                    distances[i][j] = logit_distance(hidden[i][j], heads[i], hidden[j][j], heads[j], device)
        cache_save("sens_distance", dist_key, {"distances": distances, "models": [p.label for p in participants],
                                               "options": options})
    return {"sensitivities": sens, "distances": distances, "cache_hits": hits, "passes": passes}


@torch.no_grad()
def final_hidden_states(model, encoded: Sequence[Encoded], batch_size: int = 8, device: torch.device | str = "cpu",
                        progress: bool = True) -> list[torch.Tensor]:
    """The backbone's final (normed) hidden states per text, ``[T_i, d]`` on CPU, batched with right padding.

    Right padding with an attention mask leaves every real token's hidden state unchanged (causal
    attention never looks right), so batching is exact up to kernel rounding.
    """
    device = torch.device(device)
    order = sorted(range(len(encoded)), key=lambda i: -encoded[i].ids.numel())  # length-sorted batches
    out: list[torch.Tensor | None] = [None] * len(encoded)
    backbone = model.base_model
    for start in tqdm(range(0, len(order), batch_size), desc="hidden states", disable=not progress, leave=False):
        idx = order[start:start + batch_size]
        lengths = [encoded[i].ids.numel() for i in idx]
        ids = torch.zeros(len(idx), max(lengths), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, i in enumerate(idx):
            ids[row, : lengths[row]] = encoded[i].ids
            mask[row, : lengths[row]] = 1
        h = backbone(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state
        for row, i in enumerate(idx):
            out[i] = h[row, : lengths[row]].to("cpu", copy=True)  # a copy, not a view of the padded batch
    return out  # type: ignore[return-value]


@torch.no_grad()
def logit_distance(h_a: Sequence[torch.Tensor], head_a: torch.Tensor, h_b: Sequence[torch.Tensor],
                   head_b: torch.Tensor, device: torch.device | str = "cpu", chunk: int = 256) -> float:
    """Mean over texts of the mean over tokens of ``||z_a - z_b||_2``, with ``z = h @ head.T`` (logits).

    Logits are formed ``chunk`` tokens at a time in fp32: a full ``[T, vocab]`` logit matrix of a long
    text would take gigabytes.
    """
    device = torch.device(device)
    wa, wb = head_a.to(device, torch.float32), head_b.to(device, torch.float32)
    per_text = []
    for xa, xb in zip(h_a, h_b, strict=True):
        dists = []
        for s in range(0, xa.shape[0], chunk):
            za = xa[s:s + chunk].to(device, torch.float32) @ wa.T
            zb = xb[s:s + chunk].to(device, torch.float32) @ wb.T
            dists.append(torch.linalg.vector_norm(za - zb, dim=-1).double().cpu())
        per_text.append(float(torch.cat(dists).mean()))
    return float(sum(per_text) / len(per_text))


def l2_normalise(values: dict[str, float]) -> dict[str, float]:
    """``v / ||v||_2`` over groups (zeros stay zeros: the ``||S|| = 0`` guard)."""
    norm = math.sqrt(sum(v * v for v in values.values()))
    return {k: (v / norm if norm > 0 else 0.0) for k, v in values.items()}
