"""Anatomy of the task vector tau = System 2 - System 1, tensor by tensor.

Section 4.3 of the paper attributes the weak showing of the SVD methods (LoRE, Twin) to the task vector
of a long-CoT fine-tune not being low-rank. This module measures that directly, streaming over the two
checkpoints (one tensor pair in memory at a time):

- size: Frobenius norms of tau and of the base tensor, and their ratio;
- spectrum (2-D tensors): singular values of tau, effective rank (Roy & Vetterli 2007: exp of the entropy
  of the normalised singular values), stable rank ||tau||_F^2 / sigma_1^2, and the rank fraction needed
  to capture 50% / 90% of the energy (sum of sigma^2);
- sparsity: the fraction of tau's L1 mass held by its largest 20% entries (what TIES keeps at density 0.2),
  and the fraction of exact zeros (bf16 lattices make ties and zeros common, METHODS.md 0.5).
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

_LAYER = re.compile(r"\.layers\.(\d+)\.")
_KINDS = (
    ("embed_tokens", "embedding"),
    ("lm_head", "lm_head"),
    ("q_proj", "attn_q"),
    ("k_proj", "attn_k"),
    ("v_proj", "attn_v"),
    ("o_proj", "attn_o"),
    ("gate_proj", "mlp_gate"),
    ("up_proj", "mlp_up"),
    ("down_proj", "mlp_down"),
    ("norm", "norm"),
)


def tensor_kind(name: str) -> str:
    """A coarse kind for a Qwen2 tensor name (``attn_q``, ``mlp_down``, ``embedding``, ``norm`` ...)."""
    for key, kind in _KINDS:
        if key in name:
            return kind + ("_bias" if name.endswith(".bias") else "")
    return "other"


def layer_index(name: str) -> int | None:
    """The transformer block of a tensor, or None for embeddings, final norm and head."""
    m = _LAYER.search(name)
    return int(m.group(1)) if m else None


def spectrum_stats(delta: torch.Tensor) -> dict[str, float]:
    """Singular-value statistics of a 2-D tensor (computed in fp32, or fp64 for tiny ones)."""
    s = torch.linalg.svdvals(delta.float())
    energy = s.pow(2)
    total = energy.sum()
    if total <= 0:
        return {"sigma_max": 0.0, "effective_rank": 0.0, "stable_rank": 0.0, "rank_frac_50": 0.0,
                "rank_frac_90": 0.0, "full_rank": float(min(delta.shape))}
    p = s / s.sum()
    p = p[p > 0]
    eff_rank = torch.exp(-(p * p.log()).sum()).item()
    cum = torch.cumsum(energy, 0) / total
    k50 = int(torch.searchsorted(cum, torch.tensor(0.5)).item()) + 1
    k90 = int(torch.searchsorted(cum, torch.tensor(0.9)).item()) + 1
    n = min(delta.shape)
    return {
        "sigma_max": s[0].item(),
        "effective_rank": eff_rank,
        "stable_rank": (total / energy[0]).item(),
        "rank_frac_50": k50 / n,
        "rank_frac_90": k90 / n,
        "full_rank": float(n),
    }


def top_mass_fraction(delta: torch.Tensor, keep: float = 0.2) -> float:
    """Share of sum|tau| held by the ``keep`` fraction of entries of largest magnitude."""
    a = delta.abs().flatten().float()
    total = a.sum()
    if total <= 0:
        return 0.0
    k = max(1, int(round(keep * a.numel())))
    return (torch.topk(a, k).values.sum() / total).item()


def anatomy(system1: str | Path, system2: str | Path, spectra: bool = True, progress: bool = True) -> pd.DataFrame:
    """One row per tensor of the two checkpoints with the statistics above (tidy DataFrame)."""
    from l2s_lib.checkpoints import open_model

    a_ck, b_ck = open_model(system1), open_model(system2)
    names = [n for n in a_ck.tensor_names() if n in set(b_ck.tensor_names())]
    rows = []
    for name in tqdm(names, desc="task vector", disable=not progress):
        a = a_ck.get_tensor(name).float()
        b = b_ck.get_tensor(name).float()
        if a.shape != b.shape:
            raise ValueError(f"{name}: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")
        d = b - a
        row = {
            "tensor": name,
            "kind": tensor_kind(name),
            "layer": layer_index(name),
            "ndim": d.ndim,
            "numel": d.numel(),
            "base_norm": a.norm().item(),
            "tau_norm": d.norm().item(),
            "relative_norm": (d.norm() / a.norm().clamp_min(1e-12)).item(),
            "top20_mass": top_mass_fraction(d, 0.2),
            "zero_frac": (d == 0).float().mean().item(),
        }
        if spectra and d.ndim == 2:
            row |= spectrum_stats(d)
        rows.append(row)
    return pd.DataFrame(rows)


def by_layer(df: pd.DataFrame) -> pd.DataFrame:
    """Per block and kind: the task vector's norm relative to the base (sqrt of summed squares)."""
    blocks = df.dropna(subset=["layer"]).copy()
    blocks["tau_sq"] = blocks["tau_norm"] ** 2
    blocks["base_sq"] = blocks["base_norm"] ** 2
    g = blocks.groupby(["layer", "kind"], as_index=False)[["tau_sq", "base_sq"]].sum()
    g["relative_norm"] = (g["tau_sq"] / g["base_sq"]).pow(0.5)
    g["layer"] = g["layer"].astype(int)
    return g[["layer", "kind", "relative_norm"]]
