"""Checkpoints: lazy reading (single file, shards, row blocks), refusals, atomic sharded writing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from l2s_lib import checkpoints as ck
from l2s_lib.errors import CheckpointError


def _safe_open_all(folder):
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(str(f), "pt") as h:
            for k in h.keys():
                out[k] = h.get_tensor(k)
    return out


def test_open_local_reads_the_same_bytes_as_safe_open(tiny_pair_bf16):
    s1, _ = tiny_pair_bf16
    m = ck.open_model(s1)
    ref = _safe_open_all(s1)
    assert sorted(m.tensor_names()) == sorted(ref)
    for name, t in ref.items():
        got = m.get_tensor(name)
        assert got.dtype == t.dtype == torch.bfloat16 and torch.equal(got, t), name
    emb = ref[ck.EMBED_NAME]
    assert torch.equal(m.get_rows(ck.EMBED_NAME, 3, 17), emb[3:17])
    assert m.config["model_type"] == "qwen2" and not m.tied and m.stored_dtype == torch.bfloat16


def test_sharded_checkpoint_is_read_through_its_index(tmp_path, tiny_pair):
    s1, _ = tiny_pair
    ref = _safe_open_all(s1)
    # Reshard the same tensors into three files with an index, as large hub checkpoints are.
    names = sorted(ref)
    parts = [names[0::3], names[1::3], names[2::3]]
    folder = tmp_path / "sharded"
    folder.mkdir()
    shutil.copy(s1 / "config.json", folder)
    weight_map = {}
    for i, part in enumerate(parts, 1):
        fname = f"model-{i:05d}-of-00003.safetensors"
        save_file({n: ref[n] for n in part}, folder / fname)
        weight_map |= {n: fname for n in part}
    (folder / ck.INDEX_FILE).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    m = ck.open_model(folder)
    assert sorted(m.tensor_names()) == names
    assert all(torch.equal(m.get_tensor(n), ref[n]) for n in names)
    (folder / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing: model-00002-of-00003"):
        ck.open_model(folder)


def test_refusals_say_why_and_what_to_do(tmp_path, tiny_pair):
    s1, _ = tiny_pair
    pickle_only = tmp_path / "pickled"
    pickle_only.mkdir()
    shutil.copy(s1 / "config.json", pickle_only)
    (pickle_only / "pytorch_model.bin").write_bytes(b"not really a pickle")
    with pytest.raises(CheckpointError, match="pickle.*save_pretrained"):
        ck.open_model(pickle_only)
    with pytest.raises(CheckpointError, match="no such model folder"):
        ck.open_model(tmp_path / "does" / "not" / "exist")
    no_config = tmp_path / "noconfig"
    no_config.mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        ck.open_model(no_config)
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(CheckpointError, match="must be a folder"):
        ck.open_model(a_file)


def test_hub_id_offline_gives_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    with pytest.raises(CheckpointError, match="cannot be downloaded.*HF_HUB_OFFLINE"):
        ck.open_model("l2s-test-org/no-such-model")


def test_one_resolver_for_merges_and_evaluations(monkeypatch, tiny_pair, tmp_path):
    from l2s_lib.eval import runner

    s1 = tiny_pair[0]
    assert ck.resolve_model(s1) == (s1.resolve(), None)
    assert runner.resolve_model_dir(s1) == s1.resolve() == ck.open_model(s1).path
    fetched = []
    monkeypatch.setattr(ck.read, "_download", lambda repo_id: fetched.append(repo_id) or tmp_path)
    assert runner.resolve_model_dir("org/name") == tmp_path and ck.resolve_model("org/name") == (tmp_path, "org/name")
    assert fetched == ["org/name", "org/name"]
    for bad in ("./missing", "a/b/c", "/abs/missing", "bad id!"):
        with pytest.raises(CheckpointError, match="no such model folder"):
            runner.resolve_model_dir(bad)
        with pytest.raises(CheckpointError, match="no such model folder"):
            ck.open_model(bad)
    assert not fetched[2:]  # path-like references never reach the hub


def test_writer_plans_shards_writes_blocks_and_renames(tmp_path):
    target = tmp_path / "out"
    tensors = {
        "a": torch.arange(12, dtype=torch.float32).reshape(3, 4),
        "b": torch.randn(5, 6).bfloat16(),
        "c": torch.tensor([1, 2, 3], dtype=torch.int64),
    }
    with ck.ShardedWriter(target, max_shard_bytes=64) as w:
        shards = w.plan([(n, t.dtype, tuple(t.shape)) for n, t in tensors.items()])
        assert len(shards) == 3  # 48 + 60 + 24 bytes with a 64-byte limit
        w.write("a", tensors["a"])
        w.write_rows("b", 0, tensors["b"][:2])
        w.write_rows("b", 2, tensors["b"][2:])
        w.write("c", tensors["c"])
        w.write_json("config.json", {"x": 1})
        with pytest.raises(RuntimeError, match="dtype"):
            w.write("c", tensors["c"].float())
        out = w.commit()
    assert out == target.resolve() and not list(tmp_path.glob("out.tmp-*"))
    got = _safe_open_all(target)
    assert all(torch.equal(got[n], t) for n, t in tensors.items())
    index = json.loads((target / ck.INDEX_FILE).read_text())
    assert set(index["weight_map"]) == set(tensors)
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in tensors.values())


def test_writer_refuses_existing_output_and_overwrites_only_when_asked(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(CheckpointError, match="exists.*--overwrite"):
        ck.ShardedWriter(target)
    with ck.ShardedWriter(target, overwrite=True) as w:
        w.plan([("a", torch.float32, (2,))])
        w.write("a", torch.ones(2))
        w.commit()
    assert not (target / "old.txt").exists() and (target / "model-00001-of-00001.safetensors").is_file()


def test_incomplete_or_failed_writes_leave_nothing(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError, match="incomplete"):
        with ck.ShardedWriter(target) as w:
            w.plan([("a", torch.float32, (2,)), ("b", torch.float32, (3,))])
            w.write("a", torch.ones(2))
            w.commit()
    assert not target.exists() and not list(tmp_path.glob("out.tmp-*"))


def test_tmp_folder_of_a_killed_writer_is_swept(tmp_path):
    target = tmp_path / "out"
    code = (
        "import sys, os; from l2s_lib.checkpoints import ShardedWriter;"
        f"w = ShardedWriter({str(target)!r}); print(w.tmp, flush=True); os._exit(0)"
    )
    tmp = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert os.path.isdir(tmp) and not target.exists()  # a process that dies cannot clean up ...
    with ck.ShardedWriter(target) as w:  # ... but the next writer of the same target does
        assert not os.path.exists(tmp)
        w.abort()
    assert not target.exists()


def test_parameter_count_matches_transformers(tiny_pair):
    from transformers import AutoModelForCausalLM

    from l2s_lib.checkpoints import parameter_count

    assert parameter_count(tiny_pair[0]) == AutoModelForCausalLM.from_pretrained(tiny_pair[0]).num_parameters()


def test_writer_flushes_each_shard_as_soon_as_it_is_complete(tmp_path):
    """A finished shard is fsynced and closed while later shards are still being written."""
    import torch

    from l2s_lib.checkpoints import ShardedWriter

    a, b = torch.ones(4, 4), torch.zeros(4, 4)
    with ShardedWriter(tmp_path / "out", max_shard_bytes=64) as w:
        files = w.plan([("a", torch.float32, (4, 4)), ("b", torch.float32, (4, 4))])
        assert len(files) == 2 and len(w._fds) == 2
        w.write_rows("a", 0, a[:2])
        assert len(w._fds) == 2  # half a shard: still open
        w.write_rows("a", 2, a[2:])
        assert [p.name for p in w._fds] == [files[1]]
        w.write("b", b)
        assert not w._fds
        out = w.commit()
    from safetensors.torch import load_file

    assert torch.equal(load_file(out / files[0])["a"], a) and torch.equal(load_file(out / files[1])["b"], b)
