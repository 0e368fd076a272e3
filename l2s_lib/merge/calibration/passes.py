"""The calibration passes of the data-informed merges (AIM, Sens-Merging).

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
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from l2s_lib.errors import ConfigError
from l2s_lib.merge.calibration.cache import cache_key, cache_load, cache_save
from l2s_lib.merge.calibration.data import CalibrationSet, Encoded, encode_pairs
from l2s_lib.tokenization import load_tokenizer

LOSS_MASKS = ("all", "answer")
DTYPES = ("auto", "float32", "bfloat16", "float16")


# ---------------------------------------------------------------------------------------------------
# Model loading
# ---------------------------------------------------------------------------------------------------


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


def free_memory() -> None:
    """Give a dropped model's memory back (call after the caller's ``del model``, before the next load)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


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
