"""The transformers backend on a tiny local Qwen2: determinism, batching, EOS ids, stop strings, counts."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from l2s_lib.errors import ConfigError
from l2s_lib.eval.generation import (
    SEEDING_RULE,
    DecodingParams,
    HFBackend,
    RowSampler,
    VLLMBackend,
    eos_token_ids,
    finish,
    make_backend,
    resolve_dtype,
    sample_seed,
)
from l2s_lib.eval.prompts import build_prompt

QUESTIONS = [
    "What is 2+3?",
    "Solve for x: 2x + 3 = 11.",
    "Natalia sold clips to 48 of her friends in April, and then half as many in May. How many in total?",
    "1+1",
    "Wait, let me double-check the answer 42 once more, and recap the steps.",
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model_dir(tiny_pair):
    return tiny_pair[0]


@pytest.fixture(scope="module")
def unbatched(model_dir):
    backend = HFBackend(model_dir, batch_size=1)
    prompts = [build_prompt("qwen25-math-cot", q, backend.tokenizer) for q in QUESTIONS]
    return backend, prompts, dict(backend.generate(prompts, DecodingParams(max_new_tokens=32), progress=False))


def test_greedy_is_deterministic_and_batched_equals_unbatched(model_dir, unbatched):
    _, prompts, one_by_one = unbatched
    for batch_size in (2, 5):
        batched = dict(HFBackend(model_dir, batch_size=batch_size).generate(prompts, DecodingParams(max_new_tokens=32),
                                                                             progress=False))
        assert batched == one_by_one
    again = dict(HFBackend(model_dir, batch_size=1).generate(prompts, DecodingParams(max_new_tokens=32), progress=False))
    assert again == one_by_one
    # A random tiny model never emits EOS in 32 tokens: every response is cut by the cap.
    assert {g.finish_reason for g in one_by_one.values()} == {"length"}
    assert {g.n_tokens for g in one_by_one.values()} == {32}
    assert all(g.n_tokens_retok == len(unbatched[0].tokenizer(g.text, add_special_tokens=False)["input_ids"])
               for g in one_by_one.values())


def test_generation_config_eos_ids_stop_generation(model_dir, unbatched, tmp_path):
    """An id listed only in generation_config.json's eos_token_id ends generation, in batches too."""
    backend, prompts, reference = unbatched
    with torch.inference_mode():
        ids = backend.model.generate(**backend.tokenizer(prompts[0], return_tensors="pt"), max_new_tokens=32,
                                     do_sample=False)[0, -32:].tolist()
    extra = ids[5]  # a token the model emits early in the first answer
    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    cfg = json.loads((copy / "generation_config.json").read_text())
    cfg["eos_token_id"] = [cfg["eos_token_id"], extra]
    (copy / "generation_config.json").write_text(json.dumps(cfg))

    with_eos = HFBackend(copy, batch_size=3)
    assert eos_token_ids(with_eos.tokenizer, with_eos.model.generation_config)[-1] == extra
    out = dict(with_eos.generate(prompts, DecodingParams(max_new_tokens=32), progress=False))
    first = out[0]
    assert first.finish_reason == "eos" and first.n_tokens == ids.index(extra)
    for i, g in out.items():
        assert reference[i].text.startswith(g.text)
        assert g.finish_reason == ("eos" if g.n_tokens < 32 else "length")


def test_stop_strings_cut_the_text(model_dir, unbatched):
    backend, prompts, reference = unbatched
    stop = reference[2].text[8:12]
    assert stop.strip(), "fixture: pick a visible stop string"
    out = dict(HFBackend(model_dir, batch_size=5).generate(prompts, DecodingParams(max_new_tokens=32, stop=(stop,)),
                                                           progress=False))
    for i, g in out.items():
        full = reference[i].text
        if stop in full:
            assert g.finish_reason == "stop" and g.text == full[: full.index(stop)]
        else:
            assert g == reference[i]
    assert out[2].n_tokens < 32  # generation itself stopped (not only the text cut), padded afterwards


def test_sampling_is_seeded(model_dir, unbatched):
    _, prompts, _ = unbatched
    backend = HFBackend(model_dir, batch_size=5)
    params = DecodingParams(max_new_tokens=16, temperature=1.0, top_p=0.95, seed=3)
    a = dict(backend.generate(prompts, params, progress=False))
    b = dict(backend.generate(prompts, params, progress=False))
    assert a == b


def test_sampled_answer_depends_on_its_seed_only(model_dir, unbatched):
    """Per-row seeding: an answer is the same alone or in any batch, and different seeds give other answers."""
    _, prompts, greedy = unbatched
    params = DecodingParams(max_new_tokens=16, temperature=1.0, top_p=0.95, top_k=20, seed=3)
    # Each prompt twice with different seeds, as an evaluation with two samples per question does.
    doubled = [p for p in prompts for _ in range(2)]
    seeds = [sample_seed(3, q, s) for q in range(len(prompts)) for s in range(2)]
    batched = dict(HFBackend(model_dir, batch_size=4).generate(doubled, params, progress=False, seeds=seeds))
    alone = {j: dict(HFBackend(model_dir, batch_size=1).generate([doubled[j]], params, progress=False,
                                                                 seeds=[seeds[j]]))[0] for j in (0, 5, 9)}
    for j, g in alone.items():
        assert batched[j] == g
    assert sum(batched[2 * q].text != batched[2 * q + 1].text for q in range(len(prompts))) >= 3
    assert sum(batched[2 * q].text != greedy[q].text for q in range(len(prompts))) >= 3


def test_row_sampler_keeps_top_k_and_follows_the_distribution():
    """The sampler draws within the top-k tokens, and its frequencies follow the warped softmax."""
    import math

    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    params = DecodingParams(max_new_tokens=1, temperature=1.0, top_k=2)
    counts = torch.zeros(4)
    for s in range(2000):
        out = RowSampler(params, [s], "cpu")(None, logits.clone())
        assert torch.isfinite(out).sum() == 1
        counts[out.argmax()] += 1
    assert counts[2:].sum() == 0  # outside the top 2
    # 0.5 / 0.8 = 0.625 of the draws: within 4 standard errors of 2000 Bernoulli draws.
    assert abs(counts[0] / 2000 - 0.625) < 4 * math.sqrt(0.625 * 0.375 / 2000)
    with pytest.raises(ConfigError, match="greedy"):
        RowSampler(DecodingParams(max_new_tokens=1), [0], "cpu")


def test_sample_seeds_and_cache_keys():
    assert sample_seed(0, "q1", 0) == sample_seed(0, "q1", 0) < 2**63
    assert len({sample_seed(seed, q, s) for seed in (0, 1) for q in ("1", "2", 1) for s in range(4)}) == 2 * 2 * 4
    greedy = DecodingParams(max_new_tokens=8)
    # A greedy key is the one written before top_k existed; a sampled one names top_k and the seeding rule.
    assert greedy.as_dict() == {"max_new_tokens": 8, "temperature": 0.0, "top_p": 1.0, "seed": 0, "stop": ()}
    sampled = DecodingParams(max_new_tokens=8, temperature=0.6, top_p=0.95, top_k=20).as_dict()
    assert sampled["top_k"] == 20 and sampled["seeding"] == SEEDING_RULE
    with pytest.raises(ConfigError, match="top_k"):
        DecodingParams(max_new_tokens=8, top_k=-1)
    with pytest.raises(ConfigError, match="sample index"):
        sample_seed(0, "q", -1)


def test_vllm_request_construction_with_a_fake_engine(model_dir, monkeypatch):
    """The vLLM path against vLLM's API (SamplingParams keywords, LLM.generate with one params object per
    request), with a fake module: greedy is one shared object, sampling one n=1 request per answer and seed."""
    import sys
    import types

    calls = []

    class SamplingParams:
        FIELDS = {"n", "temperature", "top_p", "top_k", "seed", "max_tokens", "stop", "stop_token_ids",
                  "skip_special_tokens"}

        def __init__(self, **kw):
            assert set(kw) <= self.FIELDS, set(kw) - self.FIELDS
            self.__dict__.update(kw)

    class LLM:
        def __init__(self, **kw):
            self.kw = kw

        def generate(self, requests, sampling, use_tqdm=True):
            calls.append((requests, sampling))
            per = sampling if isinstance(sampling, list) else [sampling] * len(requests)
            assert len(per) == len(requests)
            eos = per[0].stop_token_ids[0]
            out = []
            for r, sp in zip(requests, per):
                ids = [10 + (sp.seed or 0) % 50, 11, eos]
                o = types.SimpleNamespace(token_ids=ids, text=f"seed {sp.seed}", finish_reason="stop", stop_reason=None)
                out.append(types.SimpleNamespace(outputs=[o]))
            return out

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=LLM, SamplingParams=SamplingParams))
    backend = VLLMBackend(model_dir, chunk_size=3)
    prompts = [f"prompt {i}" for i in range(4)]
    seeds = [sample_seed(0, i // 2, i % 2) for i in range(4)]
    params = DecodingParams(max_new_tokens=7, temperature=0.6, top_p=0.95, top_k=20)
    out = dict(backend.generate(prompts, params, progress=False, seeds=seeds))
    assert [len(r) for r, _ in calls] == [3, 1]  # chunks of 3 prompts
    sent = [sp for _, chunk in calls for sp in chunk]
    assert [sp.seed for sp in sent] == seeds
    assert all((sp.n, sp.temperature, sp.top_p, sp.top_k, sp.max_tokens) == (1, 0.6, 0.95, 20, 7) for sp in sent)
    assert calls[0][0][0] == {"prompt_token_ids": backend.tokenizer("prompt 0")["input_ids"]}
    assert out[1].text == f"seed {seeds[1]}" and out[1].n_tokens == 2 and out[1].finish_reason == "eos"
    calls.clear()
    dict(backend.generate(prompts, DecodingParams(max_new_tokens=7), progress=False))
    greedy = calls[0][1]
    assert not isinstance(greedy, list) and (greedy.temperature, greedy.top_k, greedy.n) == (0.0, -1, 1)
    no_limit = VLLMBackend.sampling_params(SamplingParams, DecodingParams(max_new_tokens=7, temperature=1.0), [5], [0])
    assert no_limit[0].top_k == -1 and no_limit[0].seed == 5


def test_finish_counts_exclude_eos_and_padding(unbatched):
    tok = unbatched[0].tokenizer
    eos, pad = tok.convert_tokens_to_ids("<|im_end|>"), tok.pad_token_id
    body = tok("The answer is 7", add_special_tokens=False)["input_ids"]
    g = finish(tok, body + [eos, pad, pad], [eos], (), pad)
    assert (g.text, g.n_tokens, g.finish_reason) == ("The answer is 7", len(body), "eos")
    g = finish(tok, body, [eos], (), pad)
    assert (g.n_tokens, g.finish_reason) == (len(body), "length")
    g = finish(tok, body + [pad, pad], [eos], (" is",), pad)  # ended by a stop string, then padded
    assert (g.text, g.n_tokens, g.finish_reason) == ("The answer", len(body), "stop")


def test_bad_parameters():
    with pytest.raises(ConfigError, match="max_new_tokens"):
        DecodingParams(max_new_tokens=0)
    with pytest.raises(ConfigError, match="top_p"):
        DecodingParams(max_new_tokens=5, top_p=0)
    with pytest.raises(ConfigError, match="allowed: hf, vllm"):
        make_backend("tgi", "x")
    with pytest.raises(ConfigError, match="unknown dtype"):
        resolve_dtype("int8", "cpu")
    assert resolve_dtype("auto", "cpu") == "float32" and resolve_dtype("auto", "cuda:0") == "bfloat16"
    assert resolve_dtype("bf16", "cpu") == "bfloat16"


def test_vllm_backend_needs_vllm(model_dir):
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="pip install 'l2s-lib\\[vllm\\]'"):
            make_backend("vllm", model_dir)
        pytest.skip("vLLM not installed: only its clear error is tested")
    if not torch.cuda.is_available():
        pytest.skip("vLLM needs a GPU")
    backend = make_backend("vllm", model_dir, dtype="float32", tensor_parallel_size=1, gpu_memory_utilization=0.2)
    prompts = [build_prompt("qwen25-math-cot", q, backend.tokenizer) for q in QUESTIONS]
    out = dict(backend.generate(prompts, DecodingParams(max_new_tokens=16), progress=False))
    assert sorted(out) == list(range(len(QUESTIONS))) and all(g.n_tokens <= 16 for g in out.values())


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu_in_fp32(model_dir, unbatched):
    _, prompts, reference = unbatched
    out = dict(HFBackend(model_dir, device="cuda", dtype="float32", batch_size=5).generate(
        prompts, DecodingParams(max_new_tokens=32), progress=False))
    assert sum(out[i] == reference[i] for i in out) >= len(out) - 1  # kernels differ; near-ties may flip one


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_sampling_is_per_row_seeded(model_dir, unbatched):
    """On CUDA each row samples from its own CUDA generator: an answer is the same alone and in a batch."""
    _, prompts, _ = unbatched
    params = DecodingParams(max_new_tokens=16, temperature=0.6, top_p=0.95, top_k=20, seed=0)
    seeds = [sample_seed(0, q, 0) for q in range(len(prompts))]
    cuda = dict(HFBackend(model_dir, device="cuda", dtype="float32", batch_size=5).generate(
        prompts, params, progress=False, seeds=seeds))
    for i in (0, 3):
        alone = dict(HFBackend(model_dir, device="cuda", dtype="float32", batch_size=1).generate(
            [prompts[i]], params, progress=False, seeds=[seeds[i]]))[0]
        assert alone == cuda[i]
    again = dict(HFBackend(model_dir, device="cuda", dtype="float32", batch_size=2).generate(
        prompts, params, progress=False, seeds=seeds))
    assert again == cuda
