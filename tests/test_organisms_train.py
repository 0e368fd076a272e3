"""Organism training and merge math: loss goes down, DPO runs, the CLI rebuilds a size, merges reduce right."""

from __future__ import annotations

import json

import pytest
import torch

from l2s_lib.organisms import configs, study, train, world

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _tiny_model():
    from transformers import Qwen2ForCausalLM

    enc = train.Encoder()
    cfg = configs.qwen2_config(configs.Size("t", 32, 64, 1, 2, 1, 1.0), len(enc.vocab), enc.eos_id, enc.pad_id)
    torch.manual_seed(0)
    return Qwen2ForCausalLM(cfg), enc


def test_a_few_training_steps_lower_the_loss():
    model, enc = _tiny_model()
    losses = train.train_sft(model, "system1", configs.Stage(25, 1e-2, batch_size=8, warmup=3), seed=0,
                             world=world.ADAPTIVE, max_level=2, device=torch.device("cpu"), enc=enc,
                             progress=False)
    assert all(map(lambda x: x == x, losses))
    assert sum(losses[-5:]) / 5 < sum(losses[:3]) / 3 - 0.5


def test_dpo_steps_are_finite():
    model, enc = _tiny_model()
    losses = train.train_dpo(model, configs.Stage(2, 1e-3, batch_size=2, warmup=1), beta=0.1, nll=1.0, seed=0,
                             world=world.ADAPTIVE, max_level=2, device=torch.device("cpu"), enc=enc,
                             progress=False)
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))


def test_cli_train_rebuilds_a_size_end_to_end(tmp_path):
    from l2s_lib.cli import main

    out = tmp_path / "org"
    assert main(["organisms", "train", "--size", "1m", "--steps-factor", "0.002", "--batch-size", "2",
                 "--out", str(out)]) == 0
    for role in ("base", "system1", "system2", "dpo"):
        meta = json.loads((out / role / "organism.json").read_text())
        assert meta["role"] == role and (out / role / "model.safetensors").exists()
    log = json.loads((out / "train_log.json").read_text())
    assert set(log["stages"]) == {"base", "system1", "system2", "dpo"}
    model = train.load_model(out / "system2")
    assert next(model.parameters()).dtype == torch.float32
    assert model.config.tie_word_embeddings


def test_cli_benchmark_writes_a_heldout_set(tmp_path):
    from l2s_lib.cli import main

    out = tmp_path / "b.jsonl"
    assert main(["organisms", "benchmark", "--seed", "5", "--per-level", "3", "--out", str(out)]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 15 and all(world.split_of(r["problem"]) == "heldout" for r in rows)


def test_study_merges_are_the_engines_ta_and_ties(tmp_path):
    """The study's configs through the engine: TA alpha 0 / 1 give the endpoints, TIES k=0 is TA, and TIES keeps
    the (1 - k) fraction of each task vector's entries (the engine's exact top-k trim)."""
    from safetensors.torch import load_file

    model, enc = _tiny_model()
    a_dir = train.save_checkpoint(model, tmp_path / "a", {"role": "system1"})
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g))
    b_dir = train.save_checkpoint(model, tmp_path / "b", {"role": "system2"})
    a, b = load_file(a_dir / "model.safetensors"), load_file(b_dir / "model.safetensors")
    w = lambda d: load_file(next(d.glob("*.safetensors")))  # noqa: E731
    m0 = w(study.merge(study.ta_config(a_dir, b_dir, 0.0), tmp_path / "m0"))
    m1 = w(study.merge(study.ta_config(a_dir, b_dir, 1.0), tmp_path / "m1"))
    m7 = w(study.merge(study.ta_config(a_dir, b_dir, 0.7), tmp_path / "m7"))
    t0 = w(study.merge(study.ties_config(a_dir, b_dir, 0.0, 0.7), tmp_path / "t0"))
    t8 = w(study.merge(study.ties_config(a_dir, b_dir, 0.75, 1.0), tmp_path / "t8"))
    name = "model.layers.0.mlp.down_proj.weight"
    for k in a:
        assert torch.equal(m0[k], a[k].float()) and torch.equal(m1[k], b[k].float())
        assert torch.allclose(t0[k], m7[k])
    delta, kept = (b[name].float() - a[name].float()), t8[name] - a[name].float()
    assert int((kept != 0).sum()) == delta.numel() // 4
    assert kept[kept != 0].abs().min() >= delta[kept == 0].abs().max()


def test_first_pass_and_flip_come_from_eval_records():
    import pandas as pd

    from l2s_lib.organisms import prompts

    flip = " 3+4=7. So the answer is 7. Wait, let me double-check: 3+4=8. So the answer is 8, not 7. \\boxed{8}"
    rec = pd.DataFrame([
        {"question": "3+4", "reference": "7", "correct": False, "n_tokens": 30, "reflective": True, "level": 1,
         "response": flip},
        {"question": "3+4", "reference": "7", "correct": True, "n_tokens": 9, "reflective": False, "level": 1,
         "response": " 3+4=7. \\boxed{7}"},
    ])
    r = study.rows_from_records(rec)
    assert {k: r[0][k] for k in study.METRICS} == {"correct": False, "first_correct": True, "flip": True,
                                                   "length": 30, "reflect": True}
    assert r[1]["first_correct"] and not r[1]["flip"] and not r[1]["reflect"]
    # a prefilled planted error: the first answer is the planted (wrong) one, so no flip
    forced = study.rows_from_records(rec.iloc[1:], prompts.forced_prefix)
    assert not forced[0]["first_correct"] and not forced[0]["flip"]
    assert prompts.forced_prefix("3+4") == prompts.forced_prefix("3+4") != prompts.forced_prefix("3+5")


def test_loss_log_reads_back_in_blocks_and_stops_on_a_non_finite_loss():
    from l2s_lib.errors import NonFiniteError

    log = train.LossLog("stage", every=3)
    for x in (3.0, 2.0):
        log.add(torch.tensor(x))
    assert log.values == []  # still on the device: nothing waited for the GPU yet
    log.add(torch.tensor(1.0))
    assert log.values == [3.0, 2.0, 1.0]
    log.add(torch.tensor(float("nan")))
    with pytest.raises(NonFiniteError, match="stage: loss is nan at step 3"):
        log.flush()


def test_sweep_jobs_parse_and_bad_ones_say_what_is_allowed():
    from l2s_lib.errors import ConfigError
    from l2s_lib.organisms import sweep

    assert sweep.parse_job("tiring:100m:2:0.5") == ("tiring", "100m", 2, 0.5)
    assert sweep.parse_job("slip:1m:0", 1.0) == ("slip", "1m", 0, 1.0)
    for bad in ("tiring:2m:0", "fast:1m:0", "tiring:1m"):
        with pytest.raises(ConfigError, match="style:size:seed"):
            sweep.parse_job(bad)


def test_training_twice_gives_identical_weights_and_records_them(tmp_path):
    """Deterministic training: the same (size, seed, recipe) twice gives byte-identical checkpoints, every stage;
    the log and each organism.json record the hashes, versions and determinism settings."""
    from l2s_lib.organisms import determinism

    recipe = configs.DEFAULT_RECIPE.scaled(0.004, batch_size=4)
    logs = []
    for run in ("a", "b"):
        train.train_organism("1m", tmp_path / run, seed=3, recipe=recipe, control=True, progress=False)
        logs.append(json.loads((tmp_path / run / "train_log.json").read_text()))
    roles = {"base", "system1", "system2", "dpo", "system2_equal"}
    assert set(logs[0]["sha256"]) == roles and logs[0]["sha256"] == logs[1]["sha256"]
    for role in roles:
        assert logs[0]["sha256"][role] == determinism.sha256(tmp_path / "b" / role / "model.safetensors")
    assert len(set(logs[0]["sha256"].values())) == len(roles)  # every stage changed the weights
    meta = json.loads((tmp_path / "a" / "system2" / "organism.json").read_text())
    assert meta["determinism"]["deterministic_algorithms"] is True
    assert meta["determinism"]["cublas_workspace_config"] == determinism.CUBLAS_WORKSPACE
    assert meta["versions"]["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert logs[0]["environment"]["device"] == "cpu"
    # another seed is another draw
    train.train_organism("1m", tmp_path / "c", seed=4, recipe=recipe, progress=False)
    other = json.loads((tmp_path / "c" / "train_log.json").read_text())["sha256"]
    assert other["system1"] != logs[0]["sha256"]["system1"]


def test_cli_sweep_trains_a_job_per_process_and_records_it(tmp_path):
    from l2s_lib.cli import main

    out = tmp_path / "out"
    assert main(["organisms", "sweep", "--jobs", "tiring:1m:0:0.002", "--device", "cpu", "--train-only",
                 "--out", str(out), "--ckpt", str(tmp_path / "ck")]) == 0
    job = json.loads((out / "jobs.jsonl").read_text())
    assert job["job"] == "tiring:1m:0:0.002" and job["deterministic"] and job["study_seconds"] is None
    assert set(job["sha256"]) == {"base", "system1", "system2", "dpo", "system2_equal"}
    assert json.loads((out / "sweep.json").read_text())["command"].startswith("l2s organisms sweep --jobs")
    assert (out / "study.csv").read_text().startswith("style,size,seed,model")


def test_sweep_ladder_jobs_and_bad_input():
    import argparse

    from l2s_lib.errors import ConfigError
    from l2s_lib.organisms import sweep

    ap = argparse.ArgumentParser()
    sweep.add_arguments(ap)
    args = ap.parse_args(["--ladder", "1m", "6m", "--seeds", "0", "1", "--out", "o", "--ckpt", "c"])
    assert sweep.job_list(args) == ["tiring:1m:0", "tiring:1m:1", "tiring:6m:0", "tiring:6m:1"]
    with pytest.raises(ConfigError, match="no job"):
        sweep.job_list(ap.parse_args(["--out", "o", "--ckpt", "c"]))
