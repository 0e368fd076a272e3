"""``compute_dtype: paper_bf16_arith`` against a transcription of the paper code's steps, bit for bit.

The reference below re-implements, on whole bf16 state dicts, what hahahawu/Long-to-Short-via-Model-Merging
does (``src/task_vector.py``, ``src/merging_methods.py``, ``src/mask_weights_utils.py``, commit 6bc078e):
``TaskVector`` (``B - A``), ``combine_with_pretrained_model`` (``A + alpha * tau``), ``ties_merging`` (per-tensor
kthvalue trim, sign election, division by the fp32 count, an fp32 result copied into the bf16 model) and
``mask_model_weights`` (``tau * (1 - mask)``, ``torch.div(., 1 - p)``, ``A + 1.0 * .`` written back into the
model). The random drop masks are the engine's own (the paper code draws unseeded ones), given to the reference.
"""

from __future__ import annotations

import pytest
import torch
from merge_helpers import load_tensors, same_tensors

from l2s_lib.merge import merge
from l2s_lib.merge.base import MergeContext
from l2s_lib.merge.methods_task_vector import dare_keep

# --- the paper code's steps, transcribed --------------------------------------------------------------


def paper_task_vector(pre: dict, ft: dict) -> dict:
    return {n: ft[n] - pre[n] for n in pre}


def paper_combine(pre: dict, tv: dict, scaling: float) -> dict:
    return {n: pre[n] + scaling * tv[n] for n in tv}


def paper_ties(pre: dict, fts: list[dict], mask_rate: float, scaling: float) -> dict:
    tvs = [paper_task_vector(pre, ft) for ft in fts]
    merged = {}
    for key in sorted(tvs[0]):
        masked = []
        for tv in tvs:
            param = tv[key]
            flat = param.view(-1)
            k = int(flat.numel() * mask_rate)
            if k > 0:
                kth = flat.abs().kthvalue(k=k).values
                masked.append(param * (param.abs() >= kth).to(param.dtype))
            else:
                masked.append(param)
        sign = torch.sign(sum(masked))
        sign[sign == 0] = 1.0
        preserved = [mp * (((sign > 0) & (mp > 0)) | ((sign < 0) & (mp < 0))).to(mp.dtype) for mp in masked]
        count = sum([(p != 0).float() for p in preserved])
        merged[key] = sum(preserved) / torch.clamp(count, min=1.0)
    return paper_combine(pre, merged, scaling)


def paper_mask(pre: dict, ft: dict, mask_rate: float, drop: dict) -> dict:
    """``mask_model_weights`` (delta_weight, random, rescale) with the drop masks given: the new model B'."""
    tv = paper_task_vector(pre, ft)
    masked = {n: torch.div(tv[n] * (1 - drop[n]), 1 - mask_rate) for n in tv}
    return paper_combine(pre, masked, 1.0)


def to_bf16(params: dict) -> dict:
    """``copy_params_to_model`` into the bf16 model: one rounding of whatever dtype the method returned."""
    return {n: t.to(torch.bfloat16) for n, t in params.items()}


def engine_drop_masks(shapes: dict, density: float, seed: int = 0) -> dict:
    """The engine's DARE drop masks (1 = dropped) as the bf16 tensors the paper code multiplies with."""
    ctx = MergeContext(params={}, model_params=[], seed=seed)
    return {n: (~dare_keep(s, density, n, 0, ctx)).to(torch.bfloat16) for n, s in shapes.items()}


# --- the engine ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pair_tensors(tiny_pair_bf16):
    s1, s2 = tiny_pair_bf16
    return load_tensors(s1), load_tensors(s2)


def engine(tmp_path, pair, method, model_params, params=None, policies=None):
    s1, s2 = pair
    cfg = {"merge_method": method, "base_model": str(s1), "models": [{"model": str(s2), "parameters": model_params}],
           "parameters": params or {}, "seed": 0,
           "policies": {"compute_dtype": "paper_bf16_arith", "trim_mode": "paper"} | (policies or {})}
    out = tmp_path / f"{method}-{abs(hash(repr(cfg))) % 10**8}"
    return load_tensors(merge(cfg, out, progress=False))


@pytest.mark.parametrize("k,alpha", [(0.8, 1.0), (0.25, 0.55), (0.2, 0.7)])
def test_ties_is_the_paper_code_at_any_alpha(tmp_path, tiny_pair_bf16, pair_tensors, k, alpha):
    a, b = pair_tensors
    got = engine(tmp_path, tiny_pair_bf16, "ties", {"weight": 1.0, "density": round(1 - k, 12)}, {"lambda": alpha})
    ref = to_bf16(paper_ties(a, [b], k, alpha))
    same_tensors(got, ref)
    if alpha != 1.0:
        # Rounding alpha * tau to bf16 before adding (what this mode did before) is a different result: the
        # test can tell the two apart.
        tvs = paper_ties(a, [b], k, 1.0)
        early = {n: a[n] + (alpha * (tvs[n] - a[n]).to(torch.bfloat16)) for n in a}
        assert any(not torch.equal(early[n], ref[n]) for n in ref)


def test_dare_ta_is_the_paper_code_given_the_masks(tmp_path, tiny_pair_bf16, pair_tensors):
    a, b = pair_tensors
    p, alpha = 0.3, 0.7
    got = engine(tmp_path, tiny_pair_bf16, "dare_task_arithmetic", {"weight": alpha, "density": 1 - p})
    b_masked = paper_mask(a, b, p, engine_drop_masks({n: t.shape for n, t in a.items()}, 1 - p))
    ref = to_bf16(paper_combine(a, paper_task_vector(a, b_masked), alpha))
    same_tensors(got, ref)
    # the write-back matters: A + alpha * masked delta without re-deriving it differs somewhere
    drop = engine_drop_masks({n: t.shape for n, t in a.items()}, 1 - p)
    direct = {n: a[n] + alpha * torch.div((b[n] - a[n]) * (1 - drop[n]), 1 - p) for n in a}
    assert any(not torch.equal(direct[n], ref[n]) for n in ref)


def test_dare_ties_is_the_paper_code_given_the_masks(tmp_path, tiny_pair_bf16, pair_tensors):
    a, b = pair_tensors
    p, k, alpha = 0.3, 0.8, 1.0
    got = engine(tmp_path, tiny_pair_bf16, "dare_ties", {"weight": 1.0, "density": 1 - p, "trim_density": 1 - k},
                 {"lambda": alpha})
    b_masked = paper_mask(a, b, p, engine_drop_masks({n: t.shape for n, t in a.items()}, 1 - p))
    same_tensors(got, to_bf16(paper_ties(a, [b_masked], k, alpha)))


def test_paper_arith_refuses_unequal_weights(tmp_path, tiny_pair_bf16):
    from l2s_lib.errors import ConfigError

    s1, s2 = tiny_pair_bf16
    cfg = {"merge_method": "ties", "base_model": str(s1),
           "models": [{"model": str(s2), "parameters": {"weight": 1.0, "density": 0.5}},
                      {"model": str(s2), "parameters": {"weight": 0.5, "density": 0.5}}],
           "policies": {"compute_dtype": "paper_bf16_arith"}}
    with pytest.raises(ConfigError, match="one coefficient for all models"):
        merge(cfg, tmp_path / "out", progress=False)


def test_dare_on_average_is_the_paper_code_given_the_masks(tmp_path, tiny_pair_bf16, pair_tensors):
    a, b = pair_tensors
    p = 0.3
    got = engine(tmp_path, tiny_pair_bf16, "dare_average", {"density": 1 - p})
    shapes = {n: t.shape for n, t in a.items()}
    # --models_to_merge S1,S2 --weight_mask_rates p,p --mask_apply_method average_merging
    a_masked = paper_mask(a, a, p, engine_drop_masks(shapes, 1 - p, seed=1))  # S1's task vector is zero
    b_masked = paper_mask(a, b, p, engine_drop_masks(shapes, 1 - p))
    ref = {n: torch.stack([a_masked[n], b_masked[n]], dim=0).mean(dim=0) for n in a}
    same_tensors(got, to_bf16(ref))
    # written as TA with weight 0.5 instead, the paper arithmetic rounds differently somewhere
    ta_half = engine(tmp_path, tiny_pair_bf16, "dare_linear", {"weight": 0.5, "density": 1 - p})
    assert any(not torch.equal(ta_half[n], ref[n]) for n in ref)


def test_dare_on_average_is_dare_linear_at_half_weight_on_the_fp32_path(tmp_path, tiny_pair_bf16):
    fp32 = {"compute_dtype": "float32"}
    avg = engine(tmp_path, tiny_pair_bf16, "dare_average", {"density": 0.7}, policies=fp32)
    half = engine(tmp_path, tiny_pair_bf16, "dare_linear", {"weight": 0.5, "density": 0.7}, policies=fp32)
    same_tensors(avg, half)


def test_average_and_ta_are_the_paper_code(tmp_path, tiny_pair_bf16, pair_tensors):
    a, b = pair_tensors
    s1, s2 = tiny_pair_bf16
    cfg = {"merge_method": "average", "models": [{"model": str(s1)}, {"model": str(s2)}],
           "policies": {"compute_dtype": "paper_bf16_arith"}}
    got = load_tensors(merge(cfg, tmp_path / "avg", progress=False))
    same_tensors(got, {n: torch.stack([a[n], b[n]], dim=0).mean(dim=0) for n in a})  # average_merging
    ta = engine(tmp_path, tiny_pair_bf16, "task_arithmetic", {"weight": 0.7})
    same_tensors(ta, paper_combine(a, paper_task_vector(a, b), 0.7))
