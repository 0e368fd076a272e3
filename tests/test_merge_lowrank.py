"""LoRE-Merging, Twin-Merging (SVD part) and Iso-C: limits from METHODS.md section 10, and tiny checkpoints."""

from __future__ import annotations

import pytest
import torch

from merge_helpers import load_tensors as _tensors

from l2s_lib.errors import ConfigError
from l2s_lib.merge.base import MergeContext, validate_params
from l2s_lib.merge.registry import get_method
from l2s_lib.merge import methods_lowrank as ml


def run(method: str, name: str, base, models, params=None, model_params=None, policies=None):
    cls = get_method(method)
    mp = [validate_params(cls.model_params, m, "test") for m in (model_params or [{}] * len(models))]
    ctx = MergeContext(params=validate_params(cls.params, params, "test"), model_params=mp, policies=policies or {})
    return cls().merge_tensor(name, base, models, ctx)


@pytest.fixture
def pair():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(48, 32, generator=g) * 0.02
    b = a + torch.randn(48, 32, generator=g) * 0.005
    return a, b


@pytest.fixture
def vec_pair():
    g = torch.Generator().manual_seed(1)
    a = 1 + torch.randn(32, generator=g) * 0.02
    return a, a + torch.randn(32, generator=g) * 0.01


def ta(a, b, alpha):
    return a + alpha * (b - a)


def rank(x, tol=1e-5):
    s = torch.linalg.svdvals(x.double())
    return int((s > tol * s[0]).sum()) if s[0] > 0 else 0


# --- LoRE ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [0.3, 0.7])
def test_lore_ta_with_threshold_zero_is_ta(pair, vec_pair, alpha):
    for name, (a, b) in (("model.layers.0.mlp.up_proj.weight", pair), ("model.norm.weight", vec_pair)):
        m = run("lore", name, None, [a, b], {"threshold": 0.0}, [{"weight": 1 - alpha}, {"weight": alpha}])
        torch.testing.assert_close(m, ta(a, b, alpha), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("threshold", [0.0, 0.05, 0.5, 10.0])
def test_lore_with_equal_weights_is_the_average_whatever_the_threshold(pair, threshold):
    a, b = pair
    m = run("lore", "model.layers.0.mlp.up_proj.weight", None, [a, b], {"threshold": threshold})
    torch.testing.assert_close(m, (a + b) / 2, atol=1e-7, rtol=1e-5)


def test_lore_large_threshold_gives_the_midpoint_and_moderate_one_lowers_the_rank(pair):
    a, b = pair
    w = [{"weight": 0.3}, {"weight": 0.7}]
    name = "model.layers.0.mlp.up_proj.weight"
    torch.testing.assert_close(run("lore", name, None, [a, b], {"threshold": 1.0}, w), (a + b) / 2)
    m = run("lore", name, None, [a, b], {"threshold": 0.3}, w)
    excess = m - (a + b) / 2  # (2 alpha - 1) SVT_t((B - A)/2)
    assert 0 < rank(excess) < rank(b - a)
    # the closed form: (2 alpha - 1) * SVT with t = 0.3 sigma_max((B-A)/2)
    d = (b - a) / 2
    t = 0.3 * float(torch.linalg.svdvals(d)[0])
    torch.testing.assert_close(excess, 0.4 * ml.svt(d, t), atol=1e-7, rtol=1e-4)


def test_lore_closed_form_equals_the_coordinate_descent(pair):
    a, b = pair
    name = "model.layers.0.self_attn.q_proj.weight"
    w = [{"weight": 0.2}, {"weight": 0.8}]
    fast = run("lore", name, None, [a, b], {"threshold": 0.1}, w)
    slow = run("lore", name, None, [a, b], {"threshold": 0.1, "closed_form_two": False}, w)
    torch.testing.assert_close(fast, slow, atol=1e-7, rtol=1e-5)


def test_lore_three_inputs_theta0_plus_mean_delta_is_the_mean(pair):
    a, b = pair
    c = a - 0.5 * (b - a) + 0.001
    theta0, deltas, t = ml.lore_decompose([a, b, c], 0.2, iterations=5)
    assert t > 0 and all(rank(d) < min(a.shape) for d in deltas)
    torch.testing.assert_close(theta0 + sum(deltas) / 3, (a + b + c) / 3, atol=1e-7, rtol=1e-5)


def test_lore_vector_policies(vec_pair):
    a, b = vec_pair
    w = [{"weight": 0.0}, {"weight": 1.0}]
    shrunk = run("lore", "model.norm.weight", None, [a, b], {"threshold": 0.5}, w)
    kept = run("lore", "model.norm.weight", None, [a, b], {"threshold": 0.5, "vector_policy": "passthrough"}, w)
    torch.testing.assert_close(kept, b)
    # group shrink of (B-A)/2 by half its norm: M = mid + 0.5 (B-A)/2
    torch.testing.assert_close(shrunk, (a + b) / 2 + 0.25 * (b - a), atol=1e-7, rtol=1e-5)


def test_lore_needs_two_models_and_rejects_bad_values():
    assert get_method("lore").min_models == 2 and not get_method("lore").needs_base
    with pytest.raises(ConfigError, match="threshold_mode"):
        validate_params(get_method("lore").params, {"threshold_mode": "fraction"}, "test")
    with pytest.raises(ConfigError, match="out of range"):
        validate_params(get_method("lore").params, {"threshold": -1.0}, "test")


# --- Twin ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lam", [0.3, 0.7])
def test_twin_full_rank_is_system2_and_rank_zero_is_ta(pair, vec_pair, lam):
    a, b = pair
    name = "model.layers.1.mlp.down_proj.weight"
    torch.testing.assert_close(run("twin", name, a, [b], {"lambda": lam, "rank_ratio": 1.0}), b, atol=1e-7, rtol=1e-5)
    torch.testing.assert_close(run("twin", name, a, [b], {"lambda": lam, "rank": 10**6}), b, atol=1e-7, rtol=1e-5)
    torch.testing.assert_close(run("twin", name, a, [b], {"lambda": lam, "rank": 0}), ta(a, b, lam))
    va, vb = vec_pair  # 1-D: the full residual (expert, the repository) or the shared TA
    torch.testing.assert_close(run("twin", "model.norm.weight", va, [vb], {"lambda": lam, "rank": 0}), vb)
    torch.testing.assert_close(run("twin", "model.norm.weight", va, [vb], {"lambda": lam, "rank": 0,
                                                                        "vector_policy": "shared"}), ta(va, vb, lam))


def test_twin_intermediate_rank_is_spectrally_selective_ta(pair):
    a, b = pair
    m = run("twin", "model.layers.0.self_attn.o_proj.weight", a, [b], {"lambda": 0.6, "rank_ratio": 0.25})
    r = ml.twin_rank(a.shape, 0.25, None)
    assert r == 8
    # M = A + lambda delta + (1 - lambda) P_r(delta)
    torch.testing.assert_close(m, ta(a, b, 0.6) + 0.4 * ml.truncate(b - a, r), atol=1e-7, rtol=1e-5)
    assert rank(m - ta(a, b, 0.6)) == r


def test_twin_scope_policy_excludes_embeddings(pair):
    a, b = pair
    name = "model.embed_tokens.weight"
    out = run("twin", name, a, [b], {"rank": 0}, policies={"scope": {"embeddings": False}})
    torch.testing.assert_close(out, b)  # out of the SVD scope: full residual (vector_policy expert)
    out = run("twin", name, a, [b], {"rank": 0, "svd_scope": "linear_only", "vector_policy": "shared"})
    torch.testing.assert_close(out, ta(a, b, 0.7))


# --- Iso-C -----------------------------------------------------------------------------------------


def test_iso_c_flattens_the_spectrum_and_differs_from_ta(pair):
    a, b = pair
    name = "model.layers.0.mlp.gate_proj.weight"
    m = run("iso_c", name, a, [b], {"alpha": 1.3})
    s_delta = torch.linalg.svdvals((b - a).double())
    s_update = torch.linalg.svdvals(((m - a) / 1.3).double())
    torch.testing.assert_close(s_update, torch.full_like(s_update, float(s_delta.mean())), atol=1e-8, rtol=1e-4)
    # same singular subspaces as delta: the update is delta's polar factor times mean(S)
    u, s, vh = torch.linalg.svd((b - a).double(), full_matrices=False)
    torch.testing.assert_close((m - a).double(), 1.3 * s.mean() * u @ vh, atol=1e-8, rtol=1e-4)
    assert not torch.allclose(m, ta(a, b, 1.3), atol=1e-6)
    # Frobenius norm: mean(S) sqrt(r) <= ||delta||_F
    assert float((m - a).norm() / 1.3) < float((b - a).norm())


def test_iso_c_vectors_are_ta_and_the_default_scope_decomposes_embeddings(pair, vec_pair):
    va, vb = vec_pair
    torch.testing.assert_close(run("iso_c", "model.norm.weight", va, [vb], {"alpha": 0.8}), ta(va, vb, 0.8))
    a, b = pair
    # the official code decomposes every 2-D tensor: the default scope (all_2d) flattens the embedding too
    default = run("iso_c", "model.embed_tokens.weight", a, [b], {"alpha": 0.8})
    torch.testing.assert_close(default, a + 0.8 * ml.isotropic(b - a))
    assert not torch.allclose(default, ta(a, b, 0.8), atol=1e-6)
    # linear_only (FusionBench's LLM variant) leaves embeddings to the plain task vector
    torch.testing.assert_close(run("iso_c", "model.embed_tokens.weight", a, [b], {"alpha": 0.8,
                                                                              "svd_scope": "linear_only"}), ta(a, b, 0.8))


# --- tiny checkpoints ------------------------------------------------------------------------------


CASES = [
    ("lore", {"threshold": 0.05}, [{"weight": 0.3}, {"weight": 0.7}], False),
    ("twin", {"lambda": 0.7, "rank_ratio": 0.1}, [{}], True),
    ("iso_c", {"alpha": 1.0}, [{}], True),
]


@pytest.mark.parametrize("method,params,model_params,with_base", CASES)
def test_methods_on_tiny_checkpoints(tiny_pair_bf16, method, params, model_params, with_base):
    """Every tensor of a bf16 pair: fp32 compute, same shapes, finite, deterministic, not equal to S1 or S2."""
    s1, s2 = (_tensors(p) for p in tiny_pair_bf16)
    results = []
    for _ in range(2):
        merged = {}
        for name, a in s1.items():
            a32, b32 = a.float(), s2[name].float()
            merged[name] = run(method, name, a32 if with_base else None, [b32] if with_base else [a32, b32],
                               params, model_params)
        results.append(merged)
    for name, m in results[0].items():
        assert m.shape == s1[name].shape and m.dtype == torch.float32, name
        assert torch.isfinite(m).all(), name
        assert torch.equal(m, results[1][name]), name
    moved = [n for n, m in results[0].items() if s1[n].ndim == 2 and not torch.allclose(m, s1[n].float())]
    assert len(moved) == sum(t.ndim == 2 for t in s1.values())


# --- through the driver ----------------------------------------------------------------------------


def _configs(s1, s2):
    return {
        "lore": {"merge_method": "lore", "base_model": str(s1),
                 "models": [{"model": str(s1), "parameters": {"weight": 0.3}},
                            {"model": str(s2), "parameters": {"weight": 0.7}}], "parameters": {"threshold": 0.05}},
        "twin": {"merge_method": "twin", "base_model": str(s1), "models": [{"model": str(s2)}],
                 "parameters": {"rank_ratio": 0.25}},
        "iso_c": {"merge_method": "iso_c", "base_model": str(s1), "models": [{"model": str(s2)}],
                  "policies": {"scope": {"norms": False}}},
    }


@pytest.mark.parametrize("method", ["lore", "twin", "iso_c"])
def test_driver_end_to_end_bf16(tiny_pair_bf16, tmp_path, method):
    """The streaming driver on a bf16 pair: bf16 output, same names and shapes, finite, bit-identical reruns."""
    from l2s_lib.merge import merge

    s1, s2 = tiny_pair_bf16
    cfg = _configs(s1, s2)[method]
    out1 = merge(cfg, tmp_path / "a", progress=False)
    out2 = merge(cfg, tmp_path / "b", progress=False)
    t1, t2, ref = _tensors(out1), _tensors(out2), _tensors(s1)
    assert set(t1) == set(ref)
    for name, m in t1.items():
        assert m.dtype == torch.bfloat16 and m.shape == ref[name].shape, name
        assert torch.isfinite(m.float()).all() and torch.equal(m, t2[name]), name
    prov = (out1 / "l2s_provenance.json").read_text()
    assert f'"name": "{method}"' in prov


def test_paper_configs_validate():
    from l2s_lib import paths
    from l2s_lib.merge import load_config

    files = {f.name: f for f in paths.MERGE_CONFIGS.glob("paper_*.yaml")}
    mine = [n for n in files if n.endswith(("_aim_ties.yaml", "_sens.yaml", "_lore.yaml", "_twin.yaml", "_iso_c.yaml"))]
    assert {"paper_7b_aim_ties.yaml", "paper_7b_sens.yaml", "paper_7b_lore.yaml", "paper_7b_twin.yaml",
            "paper_7b_iso_c.yaml"} <= set(mine)
    for n in mine:
        cfg = load_config(files[n])
        assert cfg.merge_method in {"aim_ties", "sens", "lore", "twin", "iso_c"}
    lore = load_config(files["paper_7b_lore.yaml"])
    assert [m.parameters["weight"] for m in lore.models] == [pytest.approx(0.3), pytest.approx(0.7)]


def test_svd_of_wide_matrices_goes_through_the_transpose():
    x = torch.randn(12, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    u, s, vh = ml.svd(x, "float64")
    assert u.shape == (12, 12) and s.shape == (12,) and vh.shape == (12, 40)
    torch.testing.assert_close((u * s) @ vh, x)
    torch.testing.assert_close(vh @ vh.T, torch.eye(12, dtype=torch.float64))
    torch.testing.assert_close(s, torch.linalg.svdvals(x))
