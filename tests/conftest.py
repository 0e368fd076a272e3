"""Shared fixtures: tiny Qwen2 checkpoints built once per session, and output isolation."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _isolated_outputs(tmp_path, monkeypatch):
    """Every test writes results, figures and caches under its own temporary folder."""
    monkeypatch.setenv("L2S_OUTPUT_ROOT", str(tmp_path / "out"))


@pytest.fixture(scope="session")
def tiny_pair(tmp_path_factory):
    """(System 1, System 2) tiny Qwen2 checkpoints in fp32: S2 = S1 + a seeded perturbation."""
    from l2s_lib import tiny

    return tiny.make_pair(tmp_path_factory.mktemp("tiny_pair"), seed=0)


@pytest.fixture(scope="session")
def tiny_pair_bf16(tmp_path_factory):
    """The same kind of pair stored in bf16, as real checkpoints are."""
    import torch

    from l2s_lib import tiny

    return tiny.make_pair(tmp_path_factory.mktemp("tiny_pair_bf16"), seed=1, dtype=torch.bfloat16)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run several times faster on one thread (no thread hand-off per 64-wide matmul)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
