"""Helpers shared by the merge tests: read a merged folder's tensors, compare tensor sets bit for bit,
and run a one-model merge of a (System 1, System 2) pair through the driver."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from l2s_lib.merge import merge


def load_tensors(folder: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of every safetensors shard in ``folder``."""
    out: dict[str, torch.Tensor] = {}
    for f in sorted(Path(folder).glob("*.safetensors")):
        out |= load_file(f)
    return out


def same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    """Assert the same names and bit-identical tensors (naming the first that differ)."""
    assert sorted(a) == sorted(b)
    bad = [k for k in a if not torch.equal(a[k], b[k])]
    assert not bad, f"{len(bad)} tensors differ, e.g. {bad[:3]}"


def merge_pair(tmp_path: Path, pair, method: str, model_params=None, params=None, policies=None, name=None,
               device: str = "cpu", **extra) -> dict[str, torch.Tensor]:
    """Merge System 2 of ``pair`` into System 1 (the base) with ``method``; return the merged tensors."""
    s1, s2 = pair
    cfg = {"merge_method": method, "base_model": str(s1),
           "models": [{"model": str(s2), "parameters": model_params or {}}], **extra}
    if params:
        cfg["parameters"] = params
    if policies:
        cfg["policies"] = policies
    out = Path(tmp_path) / (name or f"{method}-{device}-{abs(hash(repr(cfg))) % 10**8}")
    return load_tensors(merge(cfg, out, device=device, progress=False))
