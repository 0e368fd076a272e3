"""The static greedy decoder: the same tokens as transformers' ``generate`` (shipped organisms, fp32), row
dropping, the decoder choice and its record, the default batch size."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from l2s_lib import organisms
from l2s_lib.errors import ConfigError
from l2s_lib.eval.benchmarks import get_benchmark, load_benchmark
from l2s_lib.eval.decoding import NAME, StaticDecoder, supports, unsupported_reason
from l2s_lib.eval.generation import DecodingParams, HFBackend, eos_token_ids, prompt_ids
from l2s_lib.eval.prompts import get_prompt

ROOT = Path(__file__).resolve().parent.parent
ORGANISMS = ROOT / "data" / "organisms"

pytestmark = pytest.mark.usefixtures("one_torch_thread")

organisms.register_eval()  # the shipped organisms' org_levels problems, as the pipeline registers them


def _problems(per_level: int):
    bench = get_benchmark("org_levels")
    probs = load_benchmark(bench)
    chosen, seen = [], {}
    for p in probs:  # the first problems of every level: short and long answers in one batch
        if seen.get(p.level, 0) < per_level:
            chosen.append(p)
            seen[p.level] = seen.get(p.level, 0) + 1
    return bench, chosen


def _hf_ids(model, encoded, max_new_tokens, eos_ids, pad_id):
    """Reference: transformers ``generate`` on one left-padded batch, each row cut after its first EOS."""
    width = max(map(len, encoded))
    ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, e in enumerate(encoded):
        ids[r, width - len(e):] = torch.tensor(e)
        mask[r, width - len(e):] = 1
    dev = next(model.parameters()).device
    with torch.inference_mode():
        out = model.generate(input_ids=ids.to(dev), attention_mask=mask.to(dev), do_sample=False, max_new_tokens=max_new_tokens,
                             eos_token_id=eos_ids, pad_token_id=pad_id, top_k=None, top_p=None, temperature=None)
    rows = []
    for row in out[:, width:].tolist():
        cut = next((k for k, t in enumerate(row) if t in eos_ids), None)
        rows.append(row[: cut + 1] if cut is not None else row)
    return rows


@pytest.mark.parametrize("size,per_level,loop", [("1m", 20, "eager"), ("6m", 8, "eager"), ("1m", 9, "bucketed")])
def test_static_decoder_gives_generates_tokens_on_the_organisms(size, per_level, loop):
    """Both loops (``bucketed`` is the CUDA one, run here without graphs) against ``generate``."""
    folder = ORGANISMS / size / "system2"
    backend = HFBackend(folder, device="cpu", dtype="float32")
    bench, problems = _problems(per_level)
    template = get_prompt(bench.prompt)
    encoded = [prompt_ids(backend.tokenizer, template.build(p.question, backend.tokenizer)) for p in problems]
    assert len({len(e) for e in encoded}) > 1, "fixture: prompts of several lengths (left padding)"
    eos = eos_token_ids(backend.tokenizer, backend.model.generation_config)
    pad = backend.tokenizer.pad_token_id
    reference = _hf_ids(backend.model, encoded, bench.max_new_tokens, eos, pad)
    got = dict(StaticDecoder(backend.model, loop=loop).generate(encoded, bench.max_new_tokens, eos, pad))
    assert sorted(got) == list(range(len(encoded)))
    assert [got[i] for i in range(len(encoded))] == reference
    lengths = {len(r) for r in reference}
    assert len(lengths) > 3 and all(r[-1] in eos for r in reference), "fixture: rows end with EOS at many steps"


def test_length_cap_and_single_rows_match_generate():
    """Rows cut by max_new_tokens, rows ending at the first step, and a batch of one."""
    folder = ORGANISMS / "1m" / "system2"
    backend = HFBackend(folder, device="cpu", dtype="float32")
    _, problems = _problems(2)
    template = get_prompt("organism")
    encoded = [prompt_ids(backend.tokenizer, template.build(p.question, backend.tokenizer)) for p in problems]
    eos = eos_token_ids(backend.tokenizer, backend.model.generation_config)
    pad = backend.tokenizer.pad_token_id
    dec = StaticDecoder(backend.model)
    bucketed = StaticDecoder(backend.model, loop="bucketed")
    for cap in (1, 7, 11):  # 11: a cap that is not a multiple of the bucketed loop's SYNC_EVERY
        assert dict(bucketed.generate(encoded, cap, eos, pad)) == dict(dec.generate(encoded, cap, eos, pad))
    for cap in (1, 7):
        got = dict(dec.generate(encoded, cap, eos, pad))
        assert [got[i] for i in range(len(encoded))] == _hf_ids(backend.model, encoded, cap, eos, pad)
        assert all(len(g) == cap for g in got.values())
    # The model's own first answer token as an extra EOS id: every row stops at step one.
    first = _hf_ids(backend.model, encoded[:1], 1, eos, pad)[0][0]
    got = dict(dec.generate(encoded, 50, eos + [first], pad))
    assert [got[i] for i in range(len(encoded))] == _hf_ids(backend.model, encoded, 50, eos + [first], pad)
    one = dict(dec.generate(encoded[3:4], 320, eos, pad))
    assert one[0] == _hf_ids(backend.model, encoded[3:4], 320, eos, pad)[0]


def test_backend_uses_the_static_decoder_and_generations_equal_the_reference():
    folder = ORGANISMS / "6m" / "system2"
    bench, problems = _problems(4)
    fast = HFBackend(folder, device="cpu", dtype="float32")
    ref = HFBackend(folder, device="cpu", dtype="float32", decoder="generate", batch_size=7)
    prompts = [get_prompt(bench.prompt).build(p.question, fast.tokenizer) for p in problems]
    params = DecodingParams(max_new_tokens=bench.max_new_tokens)
    a = dict(fast.generate(prompts, params, progress=False))
    b = dict(ref.generate(prompts, params, progress=False))
    assert fast.last_decoder == NAME and ref.last_decoder == "generate"
    assert a == b and {g.finish_reason for g in a.values()} == {"eos"}


def test_decoder_choice_falls_back_and_static_refuses_what_it_cannot_do(tiny_pair):
    model_dir = tiny_pair[0]
    backend = HFBackend(model_dir)
    assert unsupported_reason(backend.model) is None
    assert backend.choose_decoder(DecodingParams(max_new_tokens=4)) == NAME
    sampled = DecodingParams(max_new_tokens=4, temperature=0.7)
    stopped = DecodingParams(max_new_tokens=4, stop=("\nQuestion:",))
    assert not supports(backend.model, sampled) and not supports(backend.model, stopped)
    assert backend.choose_decoder(sampled) == "generate" and backend.choose_decoder(stopped) == "generate"
    strict = HFBackend(model_dir, decoder="static")
    with pytest.raises(ConfigError, match="stop strings"):
        strict.choose_decoder(stopped)
    with pytest.raises(ConfigError, match="unknown decoder"):
        HFBackend(model_dir, decoder="fast")
    # A model of another architecture is refused with the reason.
    assert "Qwen2ForCausalLM" in unsupported_reason(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="Qwen2ForCausalLM"):
        StaticDecoder(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="unknown loop"):
        StaticDecoder(backend.model, loop="fast")


def test_default_batch_size_follows_the_cache_budget(tiny_pair):
    backend = HFBackend(tiny_pair[0])
    params = DecodingParams(max_new_tokens=320)
    assert backend.default_batch_size("generate", params, 40) == 8
    static = backend.default_batch_size(NAME, params, 40)
    cfg = backend.model.config
    per_row = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * (cfg.hidden_size // cfg.num_attention_heads) \
        * 4 * 360
    assert static == min(256, (1 << 30) // per_row)
    huge = DecodingParams(max_new_tokens=10_000_000)
    assert backend.default_batch_size(NAME, huge, 40) == 1


def test_evaluate_records_the_decoder(tmp_path):
    from l2s_lib.eval.runner import evaluate

    folder = ORGANISMS / "1m" / "system2"
    res = evaluate(folder, "org_levels", limit=6, use_cache=True, cache_dir=tmp_path, progress=False)
    assert res.settings["benchmarks"]["org_levels"]["decoder"] == NAME
    again = evaluate(folder, "org_levels", limit=6, use_cache=True, cache_dir=tmp_path, progress=False)
    assert again.settings["benchmarks"]["org_levels"]["decoder"] is None  # everything came from the cache
    ref = evaluate(folder, "org_levels", limit=6, use_cache=False, decoder="generate", progress=False)
    assert ref.settings["benchmarks"]["org_levels"]["decoder"] == "generate"
    assert ref.records["response"].tolist() == res.records["response"].tolist()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graph_loop_matches_generate_in_fp32():
    folder = ORGANISMS / "6m" / "system2"
    backend = HFBackend(folder, device="cuda", dtype="float32")
    bench, problems = _problems(20)
    template = get_prompt(bench.prompt)
    encoded = [prompt_ids(backend.tokenizer, template.build(p.question, backend.tokenizer)) for p in problems]
    eos = eos_token_ids(backend.tokenizer, backend.model.generation_config)
    pad = backend.tokenizer.pad_token_id
    dec = StaticDecoder(backend.model)
    assert dec.use_cuda_graphs
    got = dict(dec.generate(encoded, bench.max_new_tokens, eos, pad))
    reference = _hf_ids(backend.model, encoded, bench.max_new_tokens, eos, pad)
    same = sum(got[i] == reference[i] for i in range(len(encoded)))
    # Kernels differ between the two paths on the GPU (TF32 is off; reduction orders are not the same), so a
    # near-tie may flip; on the organisms' peaked distributions none is expected.
    assert same >= len(encoded) - 1, f"{same} of {len(encoded)} identical"


def test_the_cache_identity_names_the_decoder_only_where_it_changes_tokens():
    from l2s_lib.eval.generation import HFBackend

    fp32 = {d: HFBackend.__new__(HFBackend) for d in ("auto", "generate")}
    for d, b in fp32.items():
        b.name, b.dtype, b.decoder = "hf", "float32", d
    assert fp32["auto"].identity() == fp32["generate"].identity() == {"backend": "hf", "dtype": "float32"}
    bf16 = HFBackend.__new__(HFBackend)
    bf16.name, bf16.dtype, bf16.decoder = "hf", "bfloat16", "auto"
    assert bf16.identity() == {"backend": "hf", "dtype": "bfloat16", "decoder": "auto"}
