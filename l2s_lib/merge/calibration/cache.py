"""The cache of calibration statistics: keyed by what determines them, written atomically.

Statistics live under ``paths.cache_dir()/calibration/<kind>/<key>.json`` (and ``.safetensors`` for
tensors). The key hashes the model's content fingerprint, the calibration set's hash, the pass options
and ``STATS_VERSION``, so a sweep over omega or T reuses them and a change of the code that computes
them does not.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from l2s_lib import paths
from l2s_lib.files import atomic_write, atomic_write_text
from l2s_lib.fingerprint import data_fingerprint

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
        data["tensors"] = load_file(str(tf))
    return data


def cache_save(kind: str, key: str, meta: dict[str, Any], tensors: dict[str, torch.Tensor] | None = None) -> None:
    """Write a statistic atomically (tensors first, the JSON that marks it complete last)."""
    if tensors is not None:
        cpu = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
        atomic_write(_cache_file(kind, key, ".safetensors"), lambda tmp: save_file(cpu, str(tmp)))
    atomic_write_text(_cache_file(kind, key, ".json"), json.dumps(meta, sort_keys=True, indent=1))

