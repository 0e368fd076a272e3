"""The driver end to end: outputs that load and generate, policies, provenance, every bad input, and
interrupted merges that leave no output folder."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from merge_helpers import load_tensors as _load

from l2s_lib import provenance, tiny
from l2s_lib.checkpoints import ShardedWriter
from l2s_lib.errors import CheckpointError, ConfigError, NonFiniteError
from l2s_lib.fingerprint import model_fingerprint
from l2s_lib.merge import merge, stream


def _cfg(s1, s2, method="task_arithmetic", model_params=None, **extra):
    return {"merge_method": method, "base_model": str(s1),
            "models": [{"model": str(s2), "parameters": model_params if model_params is not None else {"weight": 0.7}}],
            **extra}


def _variant(src, dst, edit_config=None, edit_tensors=None):
    """A copy of a tiny checkpoint with its config or tensors edited."""
    shutil.copytree(src, dst)
    if edit_config:
        cfg = json.loads((dst / "config.json").read_text())
        edit_config(cfg)
        (dst / "config.json").write_text(json.dumps(cfg))
    if edit_tensors:
        tensors = load_file(dst / "model.safetensors")
        edit_tensors(tensors)
        save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


@pytest.fixture(scope="module")
def tied_pair(tmp_path_factory):
    """A tied System 1 and an untied System 2 fine-tuned from it (the 1.5B situation of the paper)."""
    root = tmp_path_factory.mktemp("tied_pair")
    s1 = tiny.make_model(root / "system1", seed=7, tie_word_embeddings=True)
    s2 = tiny.make_model(root / "system2", seed=1007, perturb_from=s1, tie_word_embeddings=False)
    return s1, s2


# ---------------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------------


def test_merged_folder_loads_with_transformers_and_generates(tmp_path, tiny_pair):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    s1, s2 = tiny_pair
    out = merge(_cfg(s1, s2, dtype="bfloat16"), tmp_path / "merged", progress=False, max_shard_bytes=60_000)
    assert len(list(out.glob("model-*.safetensors"))) > 1  # sharded, with an index
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(out)
    assert model.config.max_position_embeddings == 2048 and not model.config.tie_word_embeddings
    merged = _load(out)
    assert torch.equal(model.model.layers[1].mlp.up_proj.weight.bfloat16(), merged["model.layers.1.mlp.up_proj.weight"])
    enc = tok.apply_chat_template([{"role": "user", "content": "What is 3 + 4?"}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    gen = model.generate(**enc, max_new_tokens=6, do_sample=False)
    assert gen.shape[1] > enc["input_ids"].shape[1]
    # the same tokens as the merge written by hand (A + 0.7 (B - A) in fp32, rounded once to bf16)
    a, b = _load(s1), _load(s2)
    ref = AutoModelForCausalLM.from_pretrained(s1, dtype=torch.float32)
    ref.load_state_dict({k: (a[k] + 0.7 * (b[k] - a[k])).bfloat16().float() for k in a}, strict=True)
    assert torch.equal(gen, ref.generate(**enc, max_new_tokens=6, do_sample=False))


def test_provenance_records_method_inputs_policies_and_versions(tmp_path, tiny_pair):
    s1, s2 = tiny_pair
    cfg_file = tmp_path / "ties.yaml"
    cfg_file.write_text(yaml.safe_dump(_cfg(s1, s2, "ties", {"density": 0.2}, seed=11,
                                            policies={"trim_mode": "paper"})))
    out = merge(cfg_file, tmp_path / "out", progress=False)
    prov = json.loads((out / "l2s_provenance.json").read_text())
    assert prov["method"]["name"] == "ties" and prov["method"]["parameters"]["lambda"] == 1.0
    assert [i["role"] for i in prov["inputs"]] == ["base", "models[0]"]
    assert prov["inputs"][0]["fingerprint"] == model_fingerprint(s1)
    assert prov["inputs"][1]["fingerprint"] == model_fingerprint(s2)
    assert prov["inputs"][1]["parameters"] == {"weight": 1.0, "density": 0.2}
    assert prov["policies"]["trim_mode"] == "paper" and prov["policies"]["compute_dtype"] == "float32"
    assert prov["policies"]["tie_policy"] == "follow_base" and prov["policies"]["tokenizer_source"] == "base"
    assert prov["seed"] == 11 and prov["device"] == "cpu"
    assert {"torch", "safetensors", "transformers", "python"} <= set(prov["versions"])
    # the one provenance of the library: the same commit and versions as every result sidecar
    assert prov["versions"] == provenance.versions() and prov["git"] == provenance.git_sha()
    assert prov["decisions"]["config"]["config_source"] == "patched"
    assert prov["decisions"]["tokenizer"]["from"] == str(s1)
    assert prov["resolved_config"]["models"][0]["parameters"]["density"] == 0.2


def test_config_source_and_context_patch(tmp_path, tiny_pair):
    s1, s2 = tiny_pair
    long_ctx = _variant(s2, tmp_path / "s2long", edit_config=lambda c: c.update(max_position_embeddings=131072))
    out = merge(_cfg(s1, long_ctx), tmp_path / "patched", progress=False)
    cfg = json.loads((out / "config.json").read_text())
    prov = json.loads((out / "l2s_provenance.json").read_text())
    assert cfg["max_position_embeddings"] == 131072
    assert prov["decisions"]["config"]["max_position_embeddings"] == {"from": 2048, "to": 131072}
    out = merge(_cfg(s1, long_ctx, policies={"config_source": "base"}), tmp_path / "base", progress=False)
    assert json.loads((out / "config.json").read_text())["max_position_embeddings"] == 2048
    out = merge(_cfg(s1, long_ctx, policies={"max_position_embeddings": 12288}), tmp_path / "fixed", progress=False)
    assert json.loads((out / "config.json").read_text())["max_position_embeddings"] == 12288
    out = merge(_cfg(s1, long_ctx, tokenizer_source=str(long_ctx)), tmp_path / "tok", progress=False)
    prov = json.loads((out / "l2s_provenance.json").read_text())
    assert prov["decisions"]["tokenizer"]["from"] == str(long_ctx)


def test_tie_policies_on_a_tied_base_and_an_untied_model(tmp_path, tied_pair):
    s1, s2 = tied_pair
    base, model = _load(s1), _load(s2)
    assert "lm_head.weight" not in base and "lm_head.weight" in model
    follow = merge(_cfg(s1, s2), tmp_path / "follow", progress=False)
    merged = _load(follow)
    assert "lm_head.weight" not in merged  # the paper: tied output, System 2's head dropped
    assert json.loads((follow / "config.json").read_text())["tie_word_embeddings"] is True
    prov = json.loads((follow / "l2s_provenance.json").read_text())
    assert prov["decisions"]["tied_embeddings"]["dropped_lm_head_of"] == ["models[0]"]

    untie = merge(_cfg(s1, s2, policies={"tie_policy": "untie"}), tmp_path / "untie", progress=False)
    merged = _load(untie)
    e = base["model.embed_tokens.weight"]
    assert torch.equal(merged["lm_head.weight"], (model["lm_head.weight"] - e) * 0.7 + e)
    assert torch.equal(merged["model.embed_tokens.weight"], (model["model.embed_tokens.weight"] - e) * 0.7 + e)
    assert json.loads((untie / "config.json").read_text())["tie_word_embeddings"] is False
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(untie, dtype=torch.float32)
    assert torch.equal(m.lm_head.weight, merged["lm_head.weight"])


def test_blocks_of_rows_give_the_same_result(tmp_path, tiny_pair, monkeypatch):
    s1, s2 = tiny_pair
    whole = _load(merge(_cfg(s1, s2), tmp_path / "whole", progress=False))
    monkeypatch.setattr(stream, "BLOCK_ELEMENTS", 1000)  # the 512x64 embedding in 33 blocks
    monkeypatch.setattr(stream, "PREFETCH_BYTES", 10_000)
    blocks = _load(merge(_cfg(s1, s2), tmp_path / "blocks", progress=False))
    assert all(torch.equal(whole[k], blocks[k]) for k in whole)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method, params", [("task_arithmetic", {"weight": 0.7}), ("ties", {"density": 0.2}),
                                           ("dare_linear", {"weight": 0.5, "density": 0.7}),
                                           ("dare_ties", {"density": 0.7, "trim_density": 0.2})])
def test_cuda_path_gives_the_cpu_tensors(tmp_path, tiny_pair_bf16, method, params):
    s1, s2 = tiny_pair_bf16
    cpu = _load(merge(_cfg(s1, s2, method, params), tmp_path / "cpu", progress=False))
    gpu = _load(merge(_cfg(s1, s2, method, params), tmp_path / "gpu", device="cuda", progress=False))
    assert all(torch.equal(cpu[k], gpu[k]) for k in cpu)


# ---------------------------------------------------------------------------------------------------
# Bad inputs
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("edit, match", [
    (lambda c: c.update(merge_method="frankenmerge"), "unknown merge method 'frankenmerge'; available: .*ties"),
    (lambda c: c["models"][0]["parameters"].update(alpha=0.7), "unknown parameter.*alpha; allowed: weight"),
    (lambda c: c.update(merge_method="ties", models=[{"model": c["models"][0]["model"],
                                                      "parameters": {"density": 1.5}}]),
     r"density' = 1.5 is out of range \(float in \[0, 1\]\)"),
    (lambda c: c["models"][0]["parameters"].update(weight=[0.1, 0.9]), "list, gradient"),
    (lambda c: c.update(slices=[]), "slices"),
    (lambda c: c.update(tokenizer_source="union"), "union is not supported"),
    (lambda c: c.update(tokenizer_source="some/other"), "must be 'base' or one of the input models"),
    (lambda c: c.update(bogus=1), r"unknown key\(s\) bogus; allowed: merge_method"),
    (lambda c: c.pop("base_model"), "needs a base_model"),
    (lambda c: c.update(policies={"trim_mode": "fast"}), "trim_mode' = 'fast' is not allowed .*'exact', 'paper', 'global'"),
    (lambda c: c.update(policies={"scope": {"heads": False}}), r"unknown class\(es\) heads; allowed: embeddings"),
    (lambda c: c.update(policies={"tie": "x"}), "unknown parameter.*tie; allowed: compute_dtype"),
    (lambda c: c.update(dtype="int8"), "dtype 'int8' is not allowed"),
    (lambda c: c.update(seed=-1), "seed must be a non-negative integer"),
    (lambda c: c.update(merge_method="dare_linear", models=[{"model": c["models"][0]["model"],
                                                             "parameters": {"density": 0.0}}]), "density must be > 0"),
    (lambda c: c.update(merge_method="slerp", models=[{"model": c["models"][0]["model"]}] * 2), "at most 1 model"),
    (lambda c: c.update(merge_method="average", models=[{"model": m["model"], "parameters": {"weight": w}}
                                                         for m, w in zip(c["models"] * 2, (1.0, -1.0))]),
     "weights sum to 0"),
    (lambda c: c.update(models=[]), "needs at least 1 model"),
])
def test_bad_configs_fail_before_any_work_with_what_is_allowed(tmp_path, tiny_pair, edit, match):
    cfg = _cfg(*tiny_pair)
    edit(cfg)
    with pytest.raises(ConfigError, match=match):
        merge(cfg, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_bad_checkpoints_say_exactly_what_differs(tmp_path, tiny_pair):
    s1, s2 = tiny_pair
    wider = _variant(s2, tmp_path / "wider", edit_config=lambda c: c.update(hidden_size=128, num_attention_heads=8))
    with pytest.raises(CheckpointError, match="hidden_size: base=64, models\\[0\\]=128; num_attention_heads"):
        merge(_cfg(s1, wider), tmp_path / "o1", progress=False)
    fewer = _variant(s2, tmp_path / "fewer", edit_tensors=lambda t: t.pop("model.norm.weight"))
    with pytest.raises(CheckpointError, match=r"models\[0\] lacks 1 tensor\(s\) of base: model.norm.weight"):
        merge(_cfg(s1, fewer), tmp_path / "o2", progress=False)
    reshaped = _variant(s2, tmp_path / "reshaped",
                        edit_tensors=lambda t: t.update({"model.norm.weight": torch.zeros(65)}))
    with pytest.raises(CheckpointError, match=r"model.norm.weight: base \[64\] vs models\[0\] \[65\]"):
        merge(_cfg(s1, reshaped), tmp_path / "o3", progress=False)
    with pytest.raises(CheckpointError, match="no such model folder"):
        merge(_cfg(s1, tmp_path / "missing"), tmp_path / "o4", progress=False)
    with pytest.raises(ConfigError, match="does not exist"):
        merge(tmp_path / "nope.yaml", tmp_path / "o5", progress=False)
    assert not any(tmp_path.glob("o*"))


@pytest.mark.parametrize("method, params", [("task_arithmetic", {"weight": 0.7}), ("ties", {"density": 0.2})])
def test_nan_or_inf_is_an_error_naming_the_tensor(tmp_path, tiny_pair, method, params):
    s1, s2 = tiny_pair
    name = "model.layers.1.self_attn.k_proj.weight"

    def poison(t):
        t[name][3, 5] = float("nan")

    bad = _variant(s2, tmp_path / "nan", edit_tensors=poison)
    with pytest.raises(NonFiniteError, match=rf"{name}: input models\[0\] contains NaN or Inf"):
        merge(_cfg(s1, bad, method, params), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob("out.tmp-*"))
    with pytest.raises(NonFiniteError, match="merged tensor contains NaN or Inf"):  # an overflowing weight
        merge(_cfg(s1, s2, "task_arithmetic", {"weight": 1e30}, parameters={"lambda": 1e30}), tmp_path / "out",
              progress=False)


def test_existing_output_and_missing_cuda_are_refused(tmp_path, tiny_pair):
    s1, s2 = tiny_pair
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("a previous output")
    with pytest.raises(CheckpointError, match="exists; pass --overwrite"):
        merge(_cfg(s1, s2), tmp_path / "out", progress=False)
    assert (tmp_path / "out" / "old.txt").read_text() == "a previous output"  # refused: untouched
    merge(_cfg(s1, s2), tmp_path / "out", progress=False, overwrite=True)
    assert not (tmp_path / "out" / "old.txt").exists()  # replaced as a whole
    assert json.loads((tmp_path / "out" / "l2s_provenance.json").read_text())["method"]["name"] == "task_arithmetic"
    fresh = _load(merge(_cfg(s1, s2), tmp_path / "fresh", progress=False))
    assert all(torch.equal(v, fresh[k]) for k, v in _load(tmp_path / "out").items())
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            merge(_cfg(s1, s2), tmp_path / "gpu", device="cuda", progress=False)
    with pytest.raises(ConfigError, match="not supported"):
        merge(_cfg(s1, s2), tmp_path / "tpu", device="meta", progress=False)


# ---------------------------------------------------------------------------------------------------
# Interrupted merges
# ---------------------------------------------------------------------------------------------------


def test_exception_mid_stream_leaves_no_output(tmp_path, tiny_pair, monkeypatch):
    s1, s2 = tiny_pair
    calls = {"n": 0}
    real_write = ShardedWriter.write

    def failing_write(self, name, tensor):
        calls["n"] += 1
        if calls["n"] == 10:
            raise OSError("disk full (injected)")
        return real_write(self, name, tensor)

    monkeypatch.setattr(ShardedWriter, "write", failing_write)
    with pytest.raises(OSError, match="injected"):
        merge(_cfg(s1, s2), tmp_path / "out", progress=False)
    assert 10 <= calls["n"] <= 11  # the writer thread may have taken the next tensor already
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob("out.tmp-*"))


_SLOW_MERGE = textwrap.dedent("""
    import sys, time
    from l2s_lib.merge import methods_task_vector as m
    real = m.TaskArithmetic.merge_tensor
    def slow(self, *a, **k):
        print("tensor", flush=True)
        time.sleep(0.2)
        return real(self, *a, **k)
    m.TaskArithmetic.merge_tensor = slow
    from l2s_lib.cli import main
    sys.exit(main(["merge", sys.argv[1], sys.argv[2], "--no-progress"]))
""")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_merge_killed_midway_leaves_no_output_folder(tmp_path, tiny_pair, sig):
    s1, s2 = tiny_pair
    cfg = tmp_path / "ta.yaml"
    cfg.write_text(yaml.safe_dump(_cfg(s1, s2)))
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_MERGE, str(cfg), str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    for _ in range(3):  # three tensors merged, 24 to go
        assert proc.stdout.readline().strip() == "tensor"
    proc.send_signal(sig)
    code = proc.wait(timeout=60)
    assert not out.exists()
    if sig == signal.SIGTERM:  # handled: the temporary folder is removed too
        assert code == 130 and "interrupted" in proc.stderr.read()
        assert not list(tmp_path.glob("out.tmp-*"))
    else:  # a killed process cannot clean up; the next merge to the same target sweeps its folder
        assert list(tmp_path.glob("out.tmp-*"))
        merge(cfg, out, progress=False)
        assert out.is_dir() and not list(tmp_path.glob("out.tmp-*"))
    proc.stdout.close()
    proc.stderr.close()
