"""Stop tokens of a merge: its generation config lists the end-of-turn ids of both inputs, and the backend
stops on whichever comes first (a System 2 that ends turns with a token System 1 does not know)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from l2s_lib import tiny
from l2s_lib.eval.generation import DecodingParams, HFBackend
from l2s_lib.eval.prompts import build_prompt
from l2s_lib.merge import merge
from l2s_lib.tokenization import checkpoint_stop_ids, load_tokenizer

QUESTION = "What is 3 + 4?"


def _merge(s1, s2, out):
    cfg = {"merge_method": "task_arithmetic", "base_model": str(s1),
           "models": [{"model": str(s2), "parameters": {"weight": 0.5}}]}
    return merge(cfg, out, progress=False)


def _free_run(folder, n=16) -> list[int]:
    """Greedy ids of the merged model with no stop id at all."""
    from transformers import AutoModelForCausalLM, GenerationConfig

    tok = load_tokenizer(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ids = torch.tensor([tok(build_prompt("qwen25-math-cot", QUESTION, tok))["input_ids"]])
    cfg = GenerationConfig(max_new_tokens=n, min_new_tokens=n, do_sample=False, eos_token_id=None,
                           pad_token_id=tok.pad_token_id)
    with torch.inference_mode():
        return model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=cfg)[0, ids.shape[1]:].tolist()


def _set_eos(folder, token_id):
    for name in ("generation_config.json", "config.json"):
        cfg = json.loads((folder / name).read_text())
        cfg["eos_token_id"] = token_id
        (folder / name).write_text(json.dumps(cfg))


def test_merge_stops_at_either_inputs_end_of_turn(tmp_path, one_torch_thread):
    s1, s2 = tiny.make_pair(tmp_path / "pair", seed=3)
    s1_eos = checkpoint_stop_ids(s1)
    # What the merge writes greedily; System 2 is then made to end its turns with one of those tokens, so
    # the merged model reaches it (merge weights do not depend on the generation config).
    ids = _free_run(_merge(s1, s2, tmp_path / "probe"))
    k = next(i for i in range(2, len(ids)) if ids[i] not in ids[:i] and ids[i] not in s1_eos)
    s2b = tmp_path / "system2_own_eos"
    shutil.copytree(s2, s2b)
    _set_eos(s2b, ids[k])
    assert checkpoint_stop_ids(s2b)[0] == ids[k] and ids[k] not in s1_eos

    merged = _merge(s1, s2b, tmp_path / "merged")
    gen_cfg = json.loads((merged / "generation_config.json").read_text())
    assert set(s1_eos) | {ids[k]} <= set(gen_cfg["eos_token_id"])
    prov = json.loads((merged / "l2s_provenance.json").read_text())["decisions"]["generation_config"]
    assert ids[k] in prov["stop_ids_by_input"][str(s2b)]

    params = DecodingParams(max_new_tokens=len(ids))
    prompt = build_prompt("qwen25-math-cot", QUESTION, load_tokenizer(merged))
    (_, stopped), = HFBackend(merged).generate([prompt], params, progress=False)
    assert stopped.finish_reason == "eos" and stopped.n_tokens == k
    # The same weights with System 1's generation config only run on past System 2's end of turn.
    shutil.copyfile(s1 / "generation_config.json", merged / "generation_config.json")
    (_, ran_on), = HFBackend(merged).generate([prompt], params, progress=False)
    assert ran_on.n_tokens > k


def test_chat_template_end_of_turn_is_a_stop_id(tmp_path):
    """Qwen2.5-Math base lists <|endoftext|> only; prompted in ChatML it ends turns with <|im_end|>."""
    folder = tiny.make_model(tmp_path / "m")
    tok = load_tokenizer(folder)
    im_end, eot = tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")
    _set_eos(folder, eot)
    assert checkpoint_stop_ids(folder) == [eot, im_end]
    from l2s_lib.eval.generation import eos_token_ids
    from transformers import GenerationConfig

    tok.eos_token = "<|endoftext|>"
    assert set(eos_token_ids(tok, GenerationConfig(eos_token_id=eot))) == {eot, im_end}
