"""Repeatable organism training: the settings that make a rebuild give the same bytes, and what is recorded.

A training run is repeatable when every kernel it launches is deterministic. PyTorch's
``torch.use_deterministic_algorithms(True)`` makes the ops that have a deterministic variant use it (on CUDA:
``index_add``/``scatter_add`` in the backward of ``gather`` and of the embedding, the cuBLAS reductions) and
raises on any op that has none, so an unrepeatable kernel stops a run instead of silently changing it. cuBLAS
needs a fixed workspace for that (``CUBLAS_WORKSPACE_CONFIG=:4096:8``, read when the CUDA context starts, which is
why each job runs in its own process and ``configure`` is called before the first CUDA call). Other sources,
checked here:

- attention: training runs with PyTorch's ``math`` SDPA backend only (``attention()``): it is a composition of
  matmuls and a softmax; the fused flash / memory-efficient backward kernels accumulate with atomics;
- the optimizer: fused AdamW is one elementwise kernel per parameter group (no reduction across threads), so it
  stays deterministic and is kept; gradient clipping uses ``foreach`` norms (ordered reductions);
- TF32 is switched off for matmuls and convolutions so that the result does not depend on a global default;
- cuDNN (unused by these models) is put in deterministic, non-benchmark mode anyway.

Determinism is per (hardware, software): ``environment()`` records the library versions and device name
written beside every checkpoint, and ``sha256`` the hash of each weight file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
from pathlib import Path

import torch

CUBLAS_WORKSPACE = ":4096:8"


def configure(deterministic: bool = True, warn_only: bool = False) -> dict:
    """Switch PyTorch to deterministic kernels (or back to its defaults); returns ``settings()``.

    Call it before the process's first CUDA call: cuBLAS reads ``CUBLAS_WORKSPACE_CONFIG`` when its handle is
    created. With ``deterministic=False`` the library defaults are restored (to measure what determinism costs).
    ``warn_only``: an op without a deterministic variant warns instead of raising (the study's generation: a
    forward pass has no atomics-based reductions, and a rebuild's identical rows are checked, not assumed).
    """
    if deterministic:
        if torch.cuda.is_available() and torch.cuda.is_initialized() \
                and os.environ.get("CUBLAS_WORKSPACE_CONFIG") != CUBLAS_WORKSPACE:
            from l2s_lib.errors import ConfigError

            raise ConfigError("deterministic training: CUDA was initialised before CUBLAS_WORKSPACE_CONFIG was "
                              f"set; set CUBLAS_WORKSPACE_CONFIG={CUBLAS_WORKSPACE} or train in a fresh process")
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_WORKSPACE
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    return settings()


def attention(deterministic: bool = True):
    """Context for training steps: only the ``math`` SDPA backend when deterministic (see the module docstring)."""
    if not deterministic:
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.MATH])


def settings() -> dict:
    """The determinism-relevant settings in force now (recorded with every checkpoint)."""
    return {
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "training_sdpa_backend": "math" if torch.are_deterministic_algorithms_enabled() else "default",
    }


def environment(device: torch.device | str) -> dict:
    """Library versions and the device a checkpoint was trained on (with ``l2s_lib.provenance``'s versions)."""
    from l2s_lib import provenance

    dev = torch.device(device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else (platform.processor() or platform.machine())
    return {"device": dev.type, "device_name": name, "cuda": torch.version.cuda if dev.type == "cuda" else None,
            "versions": provenance.versions(), "git": provenance.git_sha()}


def sha256(path: str | Path) -> str:
    """sha256 of a whole file (hex)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(8 * 2**20), b""):
            h.update(chunk)
    return h.hexdigest()


def weights_sha256(folder: str | Path) -> str:
    """sha256 of a checkpoint folder's weights (``model.safetensors``; several shards: of their hashes in order)."""
    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        from l2s_lib.errors import CheckpointError

        raise CheckpointError(f"no safetensors weights in {folder}")
    if len(files) == 1:
        return sha256(files[0])
    return hashlib.sha256("".join(sha256(f) for f in files).encode()).hexdigest()
