"""Calibration data (format, loader, s1K mapping) and the calibration passes on tiny checkpoints."""

from __future__ import annotations

import gc
import json
import weakref
from pathlib import Path

import pytest
import torch

from l2s_lib.errors import ConfigError
from l2s_lib.fingerprint import model_fingerprint
from l2s_lib.merge import calibration as cal
from l2s_lib.tokenization import load_tokenizer

FIXTURE = Path(__file__).parent / "fixtures" / "calibration" / "arithmetic.jsonl"


# --- format and loader -----------------------------------------------------------------------------


def test_read_fixture_and_select_is_seeded():
    records = cal.read_jsonl(FIXTURE)
    assert len(records) == 12 and all(len(r.long_answer) > len(r.short_answer) for r in records)
    a = cal.select(records, 5, seed=1)
    assert a == cal.select(records, 5, seed=1) and a != cal.select(records, 5, seed=2)
    assert len(set(a)) == 5 and cal.select(records, None, 0) == records
    with pytest.raises(ConfigError, match="1..12"):
        cal.select(records, 13, 0)


def test_sides_and_fingerprint():
    short = cal.load_calibration(FIXTURE, "short", 4, 0)
    long = cal.load_calibration(FIXTURE, "long", 4, 0)
    both = cal.load_calibration(FIXTURE, "both", 4, 0)
    assert len(short.pairs) == len(long.pairs) == 4 and len(both.pairs) == 8
    assert [q for q, _ in short.pairs] == [q for q, _ in long.pairs]  # same questions, other answers
    assert both.pairs[0] == short.pairs[0] and both.pairs[1] == long.pairs[0]
    assert len({short.fingerprint, long.fingerprint, both.fingerprint}) == 3
    assert cal.load_calibration(FIXTURE, "short", 4, 0).fingerprint == short.fingerprint
    assert cal.load_calibration(FIXTURE, "short", 4, 1).fingerprint != short.fingerprint
    prov = short.provenance()
    assert prov["sha256_16"] == short.fingerprint and prov["source"] == "tests/fixtures/calibration/arithmetic.jsonl"
    with pytest.raises(ConfigError, match="short, long, both"):
        cal.load_calibration(FIXTURE, "medium", 4, 0)


def test_relative_source_resolves_against_the_repository(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert cal.resolve_source("tests/fixtures/calibration/arithmetic.jsonl") == ("jsonl", FIXTURE.resolve())
    assert cal.resolve_source("hf:simplescaling/s1K")[0] == "hub"
    with pytest.raises(ConfigError, match="neither a jsonl file nor a hub dataset"):
        cal.resolve_source("no/such/file.jsonl")


def test_bad_lines_are_reported_with_their_number(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text(json.dumps({"question": "q", "short_answer": "a", "long_answer": "b"}) + "\n"
                 + json.dumps({"question": "q", "short_answer": "a"}) + "\n")
    with pytest.raises(ConfigError, match=r"bad.jsonl:2: .*long_answer"):
        cal.read_jsonl(f)
    f.write_text("{not json\n")
    with pytest.raises(ConfigError, match="bad.jsonl:1: not valid JSON"):
        cal.read_jsonl(f)


def test_s1k_field_mapping_through_datasets(tmp_path):
    """The real ``datasets`` loader on a local folder with s1K's columns (no network)."""
    folder = tmp_path / "s1k"
    folder.mkdir()
    rows = [{"question": f"q{i}", "solution": f"sol{i}", "thinking_trajectories": [f"think{i}"],
             "attempt": f"att{i}", "cot_type": "math"} for i in range(3)]
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    records = cal.load_s1k(str(folder))
    assert records[1] == cal.CalibrationRecord("q1", "att1", "think1\n\natt1")
    with pytest.raises(ConfigError, match="lacks column"):
        cal.load_s1k(str(folder), fields={"question": "problem", "short_answer": "attempt", "long_answer": "attempt"})


# --- tokenisation ----------------------------------------------------------------------------------


def test_encode_pairs_marks_the_answer_and_truncates(tiny_pair):
    tok = load_tokenizer(tiny_pair[0])
    pairs = cal.load_calibration(FIXTURE, "long", 3, 0).pairs
    enc = cal.encode_pairs(tok, pairs, "plain")
    q_ids = tok(pairs[0][0] + "\n", add_special_tokens=False)["input_ids"]
    assert enc[0].answer_start == len(q_ids) and enc[0].ids[: len(q_ids)].tolist() == q_ids
    assert tok.decode(enc[0].ids[enc[0].answer_start:]) == pairs[0][1]
    short = cal.encode_pairs(tok, pairs, "plain", max_length=16)
    assert all(e.ids.numel() == 16 for e in short)
    chat = cal.encode_pairs(tok, pairs, "chat")
    assert tok.decode(chat[0].ids).startswith("<|im_start|>user\n") and chat[0].ids[-1] == tok.eos_token_id


# --- AIM statistics --------------------------------------------------------------------------------


def test_aim_statistics_cover_the_right_modules_and_batching_is_exact(tiny_pair):
    calib = cal.load_calibration(FIXTURE, "both", 6, 0)
    one = cal.aim_activation_statistics(tiny_pair[0], calib, block_size=64, batch_size=1, progress=False)
    many = cal.aim_activation_statistics(tiny_pair[0], calib, block_size=64, batch_size=8, progress=False)
    assert "lm_head" in one and "model.norm" in one and "model.layers.1.mlp.down_proj" in one
    assert "model.layers.0.input_layernorm" in one and not any("embed" in k for k in one)
    assert one["model.layers.0.mlp.down_proj"].shape == (128,) and one["model.layers.0.self_attn.q_proj"].shape == (64,)
    torch.testing.assert_close(one["model.layers.0.self_attn.q_proj"], one["model.layers.0.self_attn.k_proj"])
    for k in one:
        torch.testing.assert_close(one[k], many[k], rtol=1e-5, atol=1e-6)
        assert torch.isfinite(one[k]).all() and (one[k] >= 0).all()
    imp = cal.saliency(one["model.layers.0.mlp.down_proj"])
    assert float(imp.max()) == 1.0 and float(imp.min()) >= 0.0


def test_blocks_concatenate_and_keep_the_remainder():
    enc = [cal.Encoded(torch.arange(10), 3), cal.Encoded(torch.arange(7), 2)]
    blocks = cal.make_blocks(enc, 4)
    assert [b.numel() for b in blocks] == [4, 4, 4, 4, 1]
    assert [b.numel() for b in cal.make_blocks(enc, 8, skip_longer=True)] == [7]
    with pytest.raises(ConfigError, match="no calibration text fits"):
        cal.make_blocks(enc, 5, skip_longer=True)


# --- Sens statistics -------------------------------------------------------------------------------


def test_sensitivity_is_per_sample_abs_theta_times_grad(tiny_pair):
    calib = cal.load_calibration(FIXTURE, "short", 2, 0)
    tok = load_tokenizer(tiny_pair[0])
    enc = cal.encode_pairs(tok, calib.pairs, "plain", 64)
    model = cal.load_causal_lm(tiny_pair[0], torch.device("cpu"), torch.float32)
    sens = cal.sensitivity_pass(model, enc, progress=False)
    assert set(sens) == {"model.embed_tokens", "model.layers.0", "model.layers.1", "model.norm", "lm_head"}
    expected = 0.0
    for e in enc:  # by hand, group model.norm: one sample at a time
        model.zero_grad()
        model(input_ids=e.ids[None], labels=e.ids[None]).loss.backward()
        expected += float((model.model.norm.weight.detach() * model.model.norm.weight.grad).abs().sum())
    assert sens["model.norm"] == pytest.approx(expected / len(enc), rel=1e-5)
    assert sens["model.norm"] != pytest.approx(0.0)
    answer_only = cal.sensitivity_pass(model, enc, loss_on="answer", progress=False)
    assert answer_only["model.layers.0"] != pytest.approx(sens["model.layers.0"])


def test_batched_hidden_states_match_one_at_a_time(tiny_pair):
    tok = load_tokenizer(tiny_pair[0])
    enc = cal.encode_pairs(tok, cal.load_calibration(FIXTURE, "both", 4, 0).pairs, "plain")
    assert len({e.ids.numel() for e in enc}) > 1  # padding really happens
    model = cal.load_causal_lm(tiny_pair[0], torch.device("cpu"), torch.float32)
    batched = cal.final_hidden_states(model, enc, batch_size=8, progress=False)
    single = cal.final_hidden_states(model, enc, batch_size=1, progress=False)
    for b, s, e in zip(batched, single, enc):
        assert b.shape == (e.ids.numel(), 64)
        torch.testing.assert_close(b, s, rtol=1e-4, atol=1e-5)
    head = model.lm_head.weight.detach()
    assert cal.logit_distance(single, head, single, head) == 0.0
    assert cal.logit_distance(single, head, single, head * 1.1) > 0


def test_sens_statistics_are_cached(tiny_pair, monkeypatch):
    s1, s2 = tiny_pair
    parts = [cal.SensParticipant("base", s1, model_fingerprint(s1), cal.load_calibration(FIXTURE, "long", 3, 0)),
             cal.SensParticipant("model0", s2, model_fingerprint(s2), cal.load_calibration(FIXTURE, "short", 3, 0))]
    real, alive = cal.load_causal_lm, []

    def one_at_a_time(*a, **k):
        gc.collect()
        assert all(r() is None for r in alive), "a previously loaded model is still in memory"
        model = real(*a, **k)
        alive.append(weakref.ref(model))
        return model

    monkeypatch.setattr(cal.passes, "load_causal_lm", one_at_a_time)
    first = cal.sens_statistics(parts, tokenizer_path=s1, max_length=64, progress=False)
    assert first["passes"] == 2 and first["cache_hits"] == 0 and len(alive) == 2
    d = first["distances"]
    assert d[0][0] == d[1][1] == 0.0 and d[0][1] > 0 and d[1][0] > 0
    assert all(v > 0 for s in first["sensitivities"] for v in s.values())

    def no_model(*a, **k):
        raise AssertionError("a cached statistic must not load a model")

    monkeypatch.setattr(cal.passes, "load_causal_lm", no_model)
    again = cal.sens_statistics(parts, tokenizer_path=s1, max_length=64, progress=False)
    assert again["passes"] == 0 and again["cache_hits"] == 3
    assert again["sensitivities"] == first["sensitivities"] and again["distances"] == first["distances"]
    with pytest.raises(AssertionError):  # other options are another statistic
        cal.sens_statistics(parts, tokenizer_path=s1, max_length=32, progress=False)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_calibration_passes_on_cuda_match_cpu(tiny_pair):
    calib = cal.load_calibration(FIXTURE, "short", 4, 0)
    cpu = cal.aim_activation_statistics(tiny_pair[0], calib, block_size=64, dtype="float32", progress=False)
    gpu = cal.aim_activation_statistics(tiny_pair[0], calib, block_size=64, dtype="float32", device="cuda",
                                        progress=False)
    for k in cpu:
        torch.testing.assert_close(gpu[k], cpu[k], rtol=1e-3, atol=1e-5)
    tok = load_tokenizer(tiny_pair[0])
    enc = cal.encode_pairs(tok, calib.pairs, "plain", 64)
    sens = [cal.sensitivity_pass(cal.load_causal_lm(tiny_pair[0], torch.device(d), torch.float32), enc, device=d,
                                 progress=False) for d in ("cpu", "cuda")]
    for g in sens[0]:
        assert sens[1][g] == pytest.approx(sens[0][g], rel=1e-3)
