"""Invariances of the task-vector methods, end to end through the driver, and their kernels."""

from __future__ import annotations

import pytest
import torch

from l2s_lib.merge import merge
from l2s_lib.merge.base import MergeContext
from merge_helpers import load_tensors as _load
from merge_helpers import merge_pair as _merge
from merge_helpers import same_tensors as _same

from l2s_lib.merge.methods_task_vector import dare, dare_keep, kth_smallest, trim_exact, trim_paper, _abs_blocks


@pytest.fixture(scope="module")
def pair_tensors(tiny_pair_bf16):
    s1, s2 = tiny_pair_bf16
    return _load(s1), _load(s2)


def test_task_arithmetic_endpoints_and_midpoint(tmp_path, tiny_pair_bf16, pair_tensors):
    base, model = pair_tensors
    _same(_merge(tmp_path, tiny_pair_bf16, "task_arithmetic", {"weight": 0.0}), base)
    # bf16 inputs on the fp32 path: B - A is exact, so A + 1*(B - A) is B bit for bit.
    _same(_merge(tmp_path, tiny_pair_bf16, "task_arithmetic", {"weight": 1.0}), model)
    ta_half = _merge(tmp_path, tiny_pair_bf16, "task_arithmetic", {"weight": 0.5})
    s1, s2 = tiny_pair_bf16
    avg = _load(merge({"merge_method": "average", "models": [{"model": str(s1)}, {"model": str(s2)}]},
                      tmp_path / "avg", progress=False))
    _same(ta_half, avg)
    # lambda scales like weight
    _same(_merge(tmp_path, tiny_pair_bf16, "task_arithmetic", {"weight": 0.5}, {"lambda": 2.0}), model)


def test_ties_with_nothing_trimmed_is_task_arithmetic(tmp_path, tiny_pair_bf16):
    ta = _merge(tmp_path, tiny_pair_bf16, "task_arithmetic", {"weight": 0.7})
    for mode in ("exact", "paper", "global"):
        ties = _merge(tmp_path, tiny_pair_bf16, "ties", {"density": 1.0}, {"lambda": 0.7},
                      policies={"trim_mode": mode})
        _same(ties, ta)


def test_dare_with_nothing_dropped_is_its_parent(tmp_path, tiny_pair_bf16):
    ta = _merge(tmp_path, tiny_pair_bf16, "task_arithmetic", {"weight": 0.7})
    _same(_merge(tmp_path, tiny_pair_bf16, "dare_linear", {"weight": 0.7, "density": 1.0}), ta)
    ties = _merge(tmp_path, tiny_pair_bf16, "ties", {"density": 0.3}, {"lambda": 0.7, "normalize": False})
    dt = _merge(tmp_path, tiny_pair_bf16, "dare_ties", {"density": 1.0, "trim_density": 0.3}, {"lambda": 0.7})
    _same(dt, ties)


def test_slerp_endpoints(tmp_path, tiny_pair_bf16, pair_tensors):
    base, model = pair_tensors
    _same(_merge(tmp_path, tiny_pair_bf16, "slerp", params={"t": 0.0}), base)
    _same(_merge(tmp_path, tiny_pair_bf16, "slerp", params={"t": 1.0}), model)
    mid = _merge(tmp_path, tiny_pair_bf16, "slerp", params={"t": 0.5})
    name = "model.layers.0.mlp.up_proj.weight"
    a, b, m = base[name].float(), model[name].float(), mid[name].float()
    # On the arc, the midpoint's norm lies between the endpoints' (the chord's would dip below).
    assert min(a.norm(), b.norm()) * 0.999 <= m.norm() <= max(a.norm(), b.norm()) * 1.001


def test_ties_trims_to_the_density_in_every_mode(tmp_path, tiny_pair, ):
    s1, s2 = tiny_pair
    base, model = _load(s1), _load(s2)
    name = "model.layers.1.mlp.down_proj.weight"
    delta = model[name] - base[name]
    n = delta.numel()
    kept = {}
    for mode in ("exact", "paper", "global"):
        out = _merge(tmp_path, tiny_pair, "ties", {"density": 0.2}, policies={"trim_mode": mode})
        kept[mode] = int((out[name] != base[name]).sum())
    assert kept["exact"] == int(0.2 * n)
    c = int(n * 0.8)  # the paper keeps |d| >= the c-th smallest: n - c + 1 entries without ties
    assert kept["paper"] == n - c + 1
    # Global: one threshold over the whole model, so a single tensor keeps roughly, not exactly, 20%.
    assert 0.05 * n < kept["global"] < 0.6 * n and kept["global"] != kept["exact"]


def test_global_threshold_is_the_exact_model_wide_order_statistic(tmp_path, tiny_pair):
    s1, s2 = tiny_pair
    base, model = _load(s1), _load(s2)
    deltas = torch.cat([(model[k] - base[k]).abs().reshape(-1) for k in sorted(base)])
    c = int(deltas.numel() * 0.8)
    threshold = deltas.sort().values[c - 1]
    out = _merge(tmp_path, tiny_pair, "ties", {"density": 0.2}, policies={"trim_mode": "global"})
    for k in base:
        d = model[k] - base[k]
        expect = base[k] + d * (d.abs() >= threshold)
        assert torch.equal(out[k], expect), k


def test_scope_policy_leaves_out_of_scope_tensors_dense(tmp_path, tiny_pair):
    s1, s2 = tiny_pair
    base, model = _load(s1), _load(s2)
    out = _merge(tmp_path, tiny_pair, "ties", {"density": 0.2},
                 policies={"scope": {"embeddings": False, "norms": False, "biases": False}})
    for k in base:
        changed = int((out[k] != base[k]).sum())
        if k.endswith(("embed_tokens.weight", "lm_head.weight", ".bias")) or base[k].ndim == 1:
            assert torch.equal(out[k], model[k] - base[k] + base[k]), k  # plain TA(1)
        else:
            assert changed <= int(0.2 * base[k].numel()), k


def test_dare_drop_rate_rescale_and_seeding(tmp_path, tiny_pair):
    s1, s2 = tiny_pair
    base, model = _load(s1), _load(s2)
    a = _merge(tmp_path, tiny_pair, "dare_linear", {"density": 0.7}, seed=3, name="dare-a")
    b = _merge(tmp_path, tiny_pair, "dare_linear", {"density": 0.7}, seed=3, name="dare-b")
    c = _merge(tmp_path, tiny_pair, "dare_linear", {"density": 0.7}, seed=4, name="dare-c")
    _same(a, b)
    name = "model.embed_tokens.weight"
    assert not torch.equal(a[name], c[name])
    d = model[name] - base[name]
    kept = a[name] != base[name]
    assert abs(kept.float().mean().item() - 0.7) < 0.01  # 32768 entries: sd of the rate is 0.0025
    # survivors rescaled by 1/(1-p): A + delta / 0.7, computed as the kernel does
    assert torch.equal(a[name][kept], (base[name] + d / 0.7)[kept])


def test_dare_kernel_is_unbiased_and_l1_rescale_restores_the_norm():
    delta = torch.randn(200, 300)
    mean = torch.zeros_like(delta)
    for s in range(40):
        ctx = MergeContext(params={}, model_params=[], seed=s)
        mean += dare(delta, dare_keep(delta.shape, 0.6, "t", 0, ctx), 0.6, "inverse") / 40
    assert (mean - delta).abs().mean() < 0.15 * delta.abs().mean()
    ctx = MergeContext(params={}, model_params=[], seed=0)
    out = dare(delta, dare_keep(delta.shape, 0.6, "t", 0, ctx), 0.6, "l1")
    assert torch.allclose(out.abs().sum(), delta.abs().sum(), rtol=1e-5)


def test_selection_kernels_match_sorting():
    torch.manual_seed(0)
    x = torch.randn(30011)
    x[:500] = 0.25  # ties at a likely boundary
    for k in (1, 7, 15000, 30011):
        assert kth_smallest(lambda: _abs_blocks(x), x.numel(), k)[0] == float(x.abs().sort().values[k - 1])
    for density in (0.01, 0.2, 0.97):
        kk = max(1, int(density * x.numel()))
        idx = torch.sort(x.abs(), descending=True, stable=True).indices[:kk]
        expect = torch.zeros_like(x)
        expect[idx] = x[idx]
        assert torch.equal(trim_exact(x, density), expect)
        c = int(x.numel() * round(1 - density, 12))
        t = x.abs().kthvalue(c).values
        assert torch.equal(trim_paper(x, density), x * (x.abs() >= t))
    assert torch.equal(trim_exact(x, 0.0), torch.zeros_like(x)) and trim_exact(x, 1.0) is x


def test_paper_bf16_arithmetic_policy(tmp_path, tiny_pair_bf16, pair_tensors):
    base, model = pair_tensors
    out = _merge(tmp_path, tiny_pair_bf16, "task_arithmetic", {"weight": 0.7},
                 policies={"compute_dtype": "paper_bf16_arith"})
    fp32 = _merge(tmp_path, tiny_pair_bf16, "task_arithmetic", {"weight": 0.7})
    differ = 0
    for k in base:
        a, b = base[k], model[k]
        assert torch.equal(out[k], a + (b - a) * 0.7), k  # every step rounded to bf16, as the paper code
        differ += int((out[k] != fp32[k]).sum())
    assert differ > 0  # and it is not the fp32 path


def test_context_generator_is_per_name_and_reproducible():
    ctx = MergeContext(params={}, model_params=[], seed=5)
    a = torch.rand(4, generator=ctx.generator("x"))
    assert torch.equal(a, torch.rand(4, generator=ctx.generator("x")))
    assert not torch.equal(a, torch.rand(4, generator=ctx.generator("y")))


def test_random_draws_do_not_depend_on_the_compute_device(monkeypatch):
    """DARE's uniforms come from a CPU generator seeded per (seed, name, salt) and are moved to the compute
    device afterwards, so a CUDA merge draws the bits of a CPU merge (the CUDA end-to-end check is
    test_merge_driver.test_cuda_path_gives_the_cpu_tensors)."""
    from l2s_lib.merge.base import tensor_seed

    cpu = MergeContext(params={}, model_params=[], seed=3)
    expect = torch.rand((5, 7), generator=torch.Generator().manual_seed(tensor_seed(3, "w", "dare:0")))
    assert torch.equal(cpu.random_uniform((5, 7), "w", "dare:0"), expect)

    draws = []
    real_rand = torch.rand

    def spy(*args, **kwargs):
        draws.append((kwargs.get("generator").device, kwargs.get("device")))
        return real_rand(*args, **kwargs)

    monkeypatch.setattr(torch, "rand", spy)
    # "meta" stands for any accelerator: the draw must not happen there, only the move
    other = MergeContext(params={}, model_params=[], seed=3, device=torch.device("meta"))
    moved = other.random_uniform((5, 7), "w", "dare:0")
    assert moved.device.type == "meta" and moved.shape == (5, 7)
    keep = dare_keep((5, 7), 0.7, "w", 0, other)
    assert keep.device.type == "meta" and keep.dtype == torch.bool
    assert draws == [(torch.device("cpu"), None)] * 2
    assert other.generator("w").device.type == "cpu"
