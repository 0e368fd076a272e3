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


def test_merge_math_reduces_to_its_endpoints():
    g = torch.Generator().manual_seed(0)
    a = {"w": torch.randn(8, 8, generator=g), "b": torch.randn(8, generator=g)}
    b = {k: v + torch.randn(v.shape, generator=g) for k, v in a.items()}
    for k in a:
        assert torch.equal(study.merge_ta(a, b, 0.0)[k], a[k])
        assert torch.allclose(study.merge_ta(a, b, 1.0)[k], b[k])
        assert torch.allclose(study.merge_ties(a, b, 0.0, 0.7)[k], study.merge_ta(a, b, 0.7)[k])
    kept = study.trim(b["w"] - a["w"], 0.25)
    assert int((kept != 0).sum()) == 16
    assert kept.abs().min() == 0 and (kept[kept != 0].abs().min() >= (b["w"] - a["w"])[kept == 0].abs().max())


def test_scoring_first_pass_flip_and_reflection():
    text = " 3+4=7. So the answer is 7. Wait, let me double-check: 3+4=8. So the answer is 8, not 7. \\boxed{8}"
    r = study.score(text, 7, 30)
    assert r == {"correct": False, "first_correct": True, "flip": True, "length": 30, "reflect": True}
    assert study.score(" 3+4=7. \\boxed{7}", 7, 9)["reflect"] is False




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
