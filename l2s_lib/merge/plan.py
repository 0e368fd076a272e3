"""Validation and planning of a merge, before any tensor is read: what the output will hold.

- ``check_architectures``: the architecture fields of every input (hidden size, layers, heads,
  vocabulary, RoPE base ...) agree; every difference is listed.
- ``plan_tensors``: the tensor names and shapes agree; which tensors the output gets (a ``TensorPlan``
  each: stored names in every input, shape, output dtype) and how tied embeddings are handled
  (``tie_policy``).
- ``output_config`` / ``output_generation_config``: the config.json and generation_config.json the
  output gets, each with a record of how it was chosen (for the provenance).

The driver (``merge.driver``) calls these in order; the stream (``merge.stream``) then follows the plans.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from l2s_lib.checkpoints import EMBED_NAME, GENERATION_CONFIG, HEAD_NAME, ModelCheckpoint
from l2s_lib.errors import CheckpointError
from l2s_lib.merge.config import MergeConfig

#: Fields that must agree between the inputs (compared where a config has them).
ARCH_FIELDS = (
    "model_type", "architectures", "hidden_size", "intermediate_size", "num_hidden_layers",
    "num_attention_heads", "num_key_value_heads", "head_dim", "vocab_size", "rope_theta",
)

COMPUTE_DTYPES = {"float32": torch.float32, "float64": torch.float64, "paper_bf16_arith": torch.bfloat16}
OUTPUT_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class TensorPlan:
    """One output tensor: where its inputs are stored, its shape and output dtype."""

    name: str
    shape: tuple[int, ...]
    out_dtype: torch.dtype
    base_name: str | None  # stored name in the base (None when the kernel gets no base)
    model_names: list[str]  # stored name in each model
    copy_from_reference: bool = False  # non-float tensors are copied, not merged

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def _arch_value(config: dict[str, Any], key: str) -> Any:
    if key == "rope_theta" and "rope_theta" not in config:
        rp = config.get("rope_parameters") or config.get("rope_scaling") or {}
        return rp.get("rope_theta") if isinstance(rp, dict) else None
    return config.get(key)


def check_architectures(inputs: list[tuple[str, ModelCheckpoint]]) -> None:
    """Raise ``CheckpointError`` listing every architecture field on which the inputs disagree."""
    (ref_label, ref), others = inputs[0], inputs[1:]
    diffs = []
    for label, src in others:
        for key in ARCH_FIELDS:
            a, b = _arch_value(ref.config, key), _arch_value(src.config, key)
            if a is not None and b is not None and a != b:
                diffs.append(f"{key}: {ref_label}={a!r}, {label}={b!r}")
    if diffs:
        raise CheckpointError("the inputs have different architectures: " + "; ".join(diffs)
                              + f" ({ref_label} = {ref.ref}; " + ", ".join(f"{l} = {s.ref}" for l, s in others) + ")")


def plan_tensors(
    inputs: list[tuple[str, ModelCheckpoint]],
    reference: ModelCheckpoint,
    tie_policy: str,
    out_dtype: torch.dtype | None,
    kernel_gets_base: bool,
) -> tuple[dict[str, TensorPlan], dict[str, Any]]:
    """Check names and shapes, decide the output tensors and the fate of the output head.

    ``follow_base``: the output has a separate ``lm_head`` iff the reference (base) has one; a model's own
    head is dropped when the base is tied (the paper's 1.5B merges). ``untie``: the output has an
    ``lm_head`` as soon as one input has one; for a tied input its head is its embedding.
    """
    ref_label = next(l for l, s in inputs if s is reference)
    core = [n for n in reference.tensor_names() if n != HEAD_NAME]
    core_set = set(core)
    problems = []
    for label, src in inputs:
        if src is reference:
            continue
        names = set(src.tensor_names()) - {HEAD_NAME}
        missing, extra = sorted(core_set - names), sorted(names - core_set)
        if missing:
            problems.append(f"{label} lacks {len(missing)} tensor(s) of {ref_label}: {_few(missing)}")
        if extra:
            problems.append(f"{label} has {len(extra)} tensor(s) that {ref_label} lacks: {_few(extra)}")
    if problems:
        raise CheckpointError("tensor names differ: " + "; ".join(problems))

    has_head = {label: HEAD_NAME in src for label, src in inputs}
    out_head = HEAD_NAME in reference or (tie_policy == "untie" and any(has_head.values()))
    head_src = {}
    for label, src in inputs:
        if HEAD_NAME in src:
            head_src[label] = HEAD_NAME
        elif EMBED_NAME in src:
            head_src[label] = EMBED_NAME  # a tied model's output head is its input embedding
    names = core + ([HEAD_NAME] if out_head else [])

    mismatches = []
    plans: dict[str, TensorPlan] = {}
    base_label = inputs[0][0] if inputs[0][0] == "base" else None
    model_inputs = [(l, s) for l, s in inputs if l != "base"]
    for name in names:
        stored = {label: (head_src.get(label) if name == HEAD_NAME else name) for label, _ in inputs}
        if any(v is None for v in stored.values()):
            raise CheckpointError(f"{name}: an input has neither lm_head.weight nor {EMBED_NAME}")
        ref_info = reference.info(stored[ref_label])
        for label, src in inputs:
            shape = src.info(stored[label]).shape
            if shape != ref_info.shape:
                mismatches.append(f"{name}: {ref_label} {list(ref_info.shape)} vs {label} {list(shape)}")
        is_float = ref_info.dtype.is_floating_point
        plans[name] = TensorPlan(
            name=name,
            shape=ref_info.shape,
            out_dtype=(out_dtype or ref_info.dtype) if is_float else ref_info.dtype,
            base_name=stored[base_label] if (kernel_gets_base and base_label) else None,
            model_names=[stored[l] for l, _ in model_inputs],
            copy_from_reference=not is_float,
        )
    if mismatches:
        raise CheckpointError(f"tensor shapes differ ({len(mismatches)}): {_few(mismatches, 8)}")

    record = {
        "policy": tie_policy,
        "output_tied": not out_head,
        "inputs_tied": {label: not has_head[label] for label, _ in inputs},
    }
    dropped = [label for label, _ in inputs if has_head[label] and not out_head]
    if dropped:
        record["dropped_lm_head_of"] = dropped
        record["note"] = ("the output ties its head to the merged embedding (follow_base, as the paper did); "
                          "the separate lm_head of " + ", ".join(dropped) + " is not used")
    from_embedding = [label for label, _ in inputs if out_head and not has_head[label]]
    if from_embedding:
        record["lm_head_from_embedding_of"] = from_embedding
    return plans, record


def output_config(cfg: MergeConfig, inputs, reference: ModelCheckpoint, models: list[ModelCheckpoint],
                  out_tied: bool, out_dtype: torch.dtype) -> tuple[dict[str, Any], dict[str, Any]]:
    """The output's config.json and a record of how it was chosen (``config_source`` policy)."""
    source = cfg.policies["config_source"]
    origin = models[0] if source == "model" else reference
    out = copy.deepcopy(origin.config)
    record: dict[str, Any] = {"config_source": source, "from": origin.ref}
    if source == "patched":
        values = [s.config.get("max_position_embeddings") for _, s in inputs]
        values = [v for v in values if isinstance(v, int)]
        target = cfg.policies.get("max_position_embeddings") or (max(values) if values else None)
        old = out.get("max_position_embeddings")
        if target is not None and target != old:
            out["max_position_embeddings"] = target
            record["max_position_embeddings"] = {"from": old, "to": target}
            record["note"] = (f"max_position_embeddings raised from {old} to {target} so that generation budgets "
                              "beyond the base's context fit (the paper saved System 1's config, 4096 positions "
                              "for the Math models, yet reports answers longer than that)")
        else:
            record["note"] = "max_position_embeddings already allows the budget; config unchanged"
    out["tie_word_embeddings"] = out_tied
    name = str(out_dtype).removeprefix("torch.")
    if "torch_dtype" in out:
        out["torch_dtype"] = name
    else:
        out["dtype"] = name
    record["tie_word_embeddings"] = out_tied
    record["dtype"] = name
    return out, record


def output_generation_config(inputs, tok_src: ModelCheckpoint) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The output's generation_config.json and a record of it: the tokenizer source's file, with
    ``eos_token_id`` listing the end-of-sequence / end-of-turn ids of *every* input.

    A merge keeps one input's tokenizer and generation config, but it may end its turn the way another
    input does (System 2 of the paper ends turns with its own token, while Qwen2.5-Math's config lists
    ``<|endoftext|>`` only): without the other ids generation would run on to the budget. The inputs share
    one vocabulary (checked with the architectures), so their ids mean the same tokens. None when no input
    has a generation config or declares a stop id.
    """
    from l2s_lib.tokenization import checkpoint_stop_ids

    src_file = Path(tok_src.path) / GENERATION_CONFIG
    out: dict[str, Any] = json.loads(src_file.read_text()) if src_file.is_file() else {}
    ids: list[int] = []
    added: dict[str, list[int]] = {}
    for label, src in [("tokenizer source", tok_src)] + [(lbl, s) for lbl, s in inputs if s is not tok_src]:
        for i in checkpoint_stop_ids(src.path):
            if i not in ids:
                ids.append(i)
                added.setdefault(src.ref, []).append(i)
    if not out and not ids:
        return None, None
    if ids:
        out["eos_token_id"] = ids if len(ids) > 1 else ids[0]
    return out, {"from": tok_src.ref, "eos_token_id": ids, "stop_ids_by_input": added}


def _few(items: list[str], n: int = 5) -> str:
    return ", ".join(items[:n]) + (f" (+{len(items) - n} more)" if len(items) > n else "")

