"""Checkpoints: open a model lazily by folder or hub id (``read``), and write a merged one atomically (``write``)."""

from __future__ import annotations

from l2s_lib.checkpoints.read import (
    EMBED_NAME,
    GENERATION_CONFIG,
    HEAD_NAME,
    INDEX_FILE,
    PROVENANCE_FILE,
    SINGLE_FILE,
    TOKENIZER_FILES,
    ModelCheckpoint,
    TensorInfo,
    dtype_from_safetensors,
    dtype_to_safetensors,
    open_model,
    parameter_count,
    read_safetensors_header,
    resolve_model,
)
from l2s_lib.checkpoints.write import ShardedWriter

__all__ = [
    "EMBED_NAME", "GENERATION_CONFIG", "HEAD_NAME", "INDEX_FILE", "PROVENANCE_FILE", "SINGLE_FILE",
    "TOKENIZER_FILES", "ModelCheckpoint", "ShardedWriter", "TensorInfo", "dtype_from_safetensors",
    "dtype_to_safetensors", "open_model", "parameter_count", "read_safetensors_header", "resolve_model",
]
