"""AIM (on any registered merge) and Sens-Merging: limits, formulas, cache reuse, on tiny checkpoints."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from merge_helpers import load_tensors

from l2s_lib.errors import ConfigError
from l2s_lib.merge import calibration as cal
from l2s_lib.merge import methods_activation as ma
from l2s_lib.merge.base import MergeContext, validate_params
from l2s_lib.merge.registry import get_method

FIXTURE = str(Path(__file__).parent / "fixtures" / "calibration" / "arithmetic.jsonl")


class Source:
    """A minimal ``TensorSource`` over a tiny checkpoint folder."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.config: dict = {}
        self._tensors = load_tensors(self.path)

    def tensor_names(self):
        return list(self._tensors)

    def get_tensor(self, name):
        return self._tensors[name]


class Job:
    def __init__(self, base, models, ctx):
        self.base, self.models, self.ctx = base, models, ctx
        self.names = base.tensor_names()

    def load(self, name):
        return self.base.get_tensor(name).float(), [m.get_tensor(name).float() for m in self.models]


def merge_all(method: str, pair, params=None, model_params=None):
    """Prepare and stream every tensor as the driver does; returns (merged tensors, ctx)."""
    cls = get_method(method)
    base, model = Source(pair[0]), Source(pair[1])
    mp = [validate_params(cls.model_params, model_params or {}, "test")]
    ctx = MergeContext(params=validate_params(cls.params, params, "test"), model_params=mp)
    job = Job(base, [model], ctx)
    inst = cls()
    inst.prepare(job, ctx)
    return {n: inst.merge_tensor(n, *job.load(n), ctx) for n in job.names}, ctx


def reference(method: str, pair, params=None, model_params=None):
    cls = get_method(method)
    base, model = Source(pair[0]), Source(pair[1])
    ctx = MergeContext(params=validate_params(cls.params, params, "test"),
                       model_params=[validate_params(cls.model_params, model_params or {}, "test")])
    return {n: cls().merge_tensor(n, base.get_tensor(n).float(), [model.get_tensor(n).float()], ctx)
            for n in base.tensor_names()}


CALIB = {"calibration": FIXTURE, "calibration_n": 6, "block_size": 64}
TIES = ({"lambda": 1.0}, {"density": 0.2, "weight": 1.0})


# --- AIM -------------------------------------------------------------------------------------------


def test_aim_applies_to_every_listed_data_free_method():
    from l2s_lib.merge import registry

    wrappable = [cls.name for cls, _ in registry.METHODS if not cls.has_prepass and cls.needs_base]
    assert {"ties", "task_arithmetic", "twin", "iso_c", "dare_ties"} <= set(wrappable)
    for name in wrappable:
        cls = get_method(f"aim_{name}")
        assert cls.name == f"aim_{name}" and cls.inner is get_method(name)
        assert cls.has_prepass and cls.needs_base and "omega" in {p.name for p in cls.params}
        assert f"aim_{name}" in registry.available_methods()
    assert get_method("aim_ta") is get_method("aim_task_arithmetic")  # aliases of the wrapped method work
    assert {p.name for p in get_method("aim_ties").model_params} == {p.name for p in get_method("ties").model_params}
    with pytest.raises(ConfigError, match="data-free merge"):
        ma.aim(get_method("sens"))
    with pytest.raises(ConfigError, match="'sens' is not one"):
        get_method("aim_sens")
    assert "aim_average" not in registry.available_methods()  # Average has no base to relax towards


def test_aim_wraps_a_method_defined_outside_the_registry():
    from l2s_lib.merge import methods_task_vector as tv

    custom = tv.task_arithmetic_method("ta_copy", "TA copy", "https://arxiv.org/abs/2212.04089", "TA again.",
                                       params=get_method("ta").params, model_params=get_method("ta").model_params)
    wrapped = ma.aim(custom)
    assert wrapped.name == "aim_ta_copy" and wrapped.inner is custom


def test_aim_with_omega_one_is_its_input_merge(tiny_pair):
    merged, ctx = merge_all("aim_ties", tiny_pair, {**TIES[0], **CALIB, "omega": 1.0}, TIES[1])
    ref = reference("ties", tiny_pair, TIES[0], TIES[1])
    for n in ref:
        torch.testing.assert_close(merged[n], ref[n], rtol=0, atol=0)
    prov = ctx.state["provenance"]["calibration"]["aim"]
    assert prov["sha256_16"] == cal.load_calibration(FIXTURE, "short", 6, 0).fingerprint and prov["texts"] == 6


def test_aim_relaxes_columns_by_base_saliency(tiny_pair):
    params = {**TIES[0], **CALIB, "omega": 0.0}
    merged, ctx = merge_all("aim_ties", tiny_pair, params, TIES[1])
    ref = reference("ties", tiny_pair, TIES[0], TIES[1])
    base = Source(tiny_pair[0])
    imp = ctx.state["aim"].importance
    name = "model.layers.1.mlp.down_proj.weight"
    a = base.get_tensor(name).float()
    col = int(imp["model.layers.1.mlp.down_proj"].argmax())
    torch.testing.assert_close(merged[name][:, col], a[:, col], rtol=0, atol=1e-7)  # omega = 0: A kept
    expected = a + (ref[name] - a) * (1 - imp["model.layers.1.mlp.down_proj"])
    torch.testing.assert_close(merged[name], expected)
    for untouched in ("model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.bias"):
        torch.testing.assert_close(merged[untouched], ref[untouched], rtol=0, atol=0)
    assert not torch.equal(merged["model.norm.weight"], ref["model.norm.weight"])
    assert not torch.equal(merged["lm_head.weight"], ref["lm_head.weight"])
    no_norms, _ = merge_all("aim_ties", tiny_pair, {**params, "relax_norms": False}, TIES[1])
    torch.testing.assert_close(no_norms["model.norm.weight"], ref["model.norm.weight"], rtol=0, atol=0)


def test_aim_reuses_cached_statistics_and_is_deterministic(tiny_pair, monkeypatch):
    params = {"lambda": 0.7, **CALIB, "omega": 0.4}
    first, ctx1 = merge_all("aim_task_arithmetic", tiny_pair, params)
    assert ctx1.state["provenance"]["calibration"]["aim"]["cache_hit"] is False

    def no_model(*a, **k):
        raise AssertionError("the second run must not run a forward pass")

    monkeypatch.setattr(cal.passes, "load_causal_lm", no_model)
    second, ctx2 = merge_all("aim_task_arithmetic", tiny_pair, params)
    sweep, _ = merge_all("aim_task_arithmetic", tiny_pair, {**params, "omega": 0.6})  # omega sweep: cached too
    assert ctx2.state["provenance"]["calibration"]["aim"]["cache_hit"] is True
    for n in first:
        assert torch.equal(first[n], second[n]), n
        assert first[n].shape == second[n].shape and first[n].dtype == torch.float32
        assert torch.isfinite(first[n]).all()
    assert not torch.equal(sweep["model.layers.0.mlp.up_proj.weight"], first["model.layers.0.mlp.up_proj.weight"])
    with pytest.raises(AssertionError):  # another calibration set is another statistic
        merge_all("aim_task_arithmetic", tiny_pair, {**params, "calibration_seed": 3})


# --- Sens ------------------------------------------------------------------------------------------


def test_sens_two_participant_coefficients_are_a_sigmoid():
    sens = [{"g0": 1.0, "g1": 3.0}, {"g0": 2.0, "g1": 1.0}]
    dist = [[0.0, 4.0], [1.0, 0.0]]  # tau raw: base 4, model 1 -> normalised 0.8, 0.2
    out = ma.sens_coefficients(sens, dist, alpha=0.7, temperature=2.0)
    a0 = [1 / math.sqrt(10), 3 / math.sqrt(10)]
    a1 = [2 / math.sqrt(5), 1 / math.sqrt(5)]
    for g, i in (("g0", 0), ("g1", 1)):
        lam = 2 * 0.7 / (1 + math.exp(-(a1[i] * 0.2 - a0[i] * 0.8) / 2.0))
        assert out[g][1] == pytest.approx(lam, rel=1e-12)
        assert out[g][0] + out[g][1] == pytest.approx(2 * 0.7)
    inverse = ma.sens_coefficients(sens, dist, alpha=0.7, temperature=2.0, tau_direction="inverse")
    assert inverse["g0"][1] != pytest.approx(out["g0"][1])
    flat = ma.sens_coefficients(sens, dist, alpha=0.7, temperature=math.inf)
    assert all(c == [0.7, 0.7] for c in flat.values())
    assert ma.sens_coefficients(sens, dist, alpha=0.7, temperature=1e12)["g1"][1] == pytest.approx(0.7)
    assert ma.sens_coefficients(sens, dist, alpha=0.7, temperature=2.0, coefficient="k_sigma")["g0"][1] == \
        pytest.approx(out["g0"][1] / 0.7)


SENS = {"calibration": FIXTURE, "calibration_n": 3, "max_length": 48, "alpha": 0.6}


def test_sens_limits_and_cache(tiny_pair, monkeypatch):
    ta = reference("task_arithmetic", tiny_pair, {}, {"weight": 0.6})
    merged, ctx = merge_all("sens", tiny_pair, {**SENS, "temperature": 2.0})
    coeffs = ctx.state["sens"]["coefficients"]
    assert set(coeffs) == {"model.embed_tokens", "model.layers.0", "model.layers.1", "model.norm", "lm_head"}
    lams = [c[0] for c in coeffs.values()]
    assert all(0 < lam < 1.2 for lam in lams) and len(set(lams)) == len(lams)  # layer-wise, in (0, 2 alpha)
    base = Source(tiny_pair[0])
    name = "model.layers.1.self_attn.v_proj.weight"
    a = base.get_tensor(name).float()
    torch.testing.assert_close(merged[name], a + coeffs["model.layers.1"][0] / 0.6 * (ta[name] - a))
    prov = ctx.state["provenance"]["calibration"]["sens"]
    assert [p["side"] for p in prov["participants"]] == ["long", "short"] and prov["models_loaded"] == 2

    def no_model(*a, **k):
        raise AssertionError("a temperature sweep must not recompute the statistics")

    monkeypatch.setattr(cal.passes, "load_causal_lm", no_model)
    for temperature in (math.inf, 1e9):
        limit, ctx2 = merge_all("sens", tiny_pair, {**SENS, "temperature": temperature})
        assert ctx2.state["provenance"]["calibration"]["sens"]["models_loaded"] == 0
        for n in ta:
            torch.testing.assert_close(limit[n], ta[n], rtol=1e-6, atol=1e-7)
    again, _ = merge_all("sens", tiny_pair, {**SENS, "temperature": 2.0})
    for n in merged:
        assert torch.equal(merged[n], again[n]) and torch.isfinite(merged[n]).all(), n


def test_sens_without_base_and_one_model_is_ta(tiny_pair):
    ta = reference("task_arithmetic", tiny_pair, {}, {"weight": 0.6})
    merged, ctx = merge_all("sens", tiny_pair, {**SENS, "temperature": 0.5, "include_base": False})
    assert all(c == [pytest.approx(0.6)] for c in ctx.state["sens"]["coefficients"].values())
    for n in ta:
        torch.testing.assert_close(merged[n], ta[n], rtol=1e-6, atol=1e-7)


# --- through the driver ----------------------------------------------------------------------------


def test_driver_end_to_end_with_cached_calibration(tiny_pair_bf16, tmp_path, monkeypatch):
    """aim_ties and sens through ``merge``: provenance holds the calibration hash; a rerun loads no model."""
    import json

    from l2s_lib.merge import merge

    s1, s2 = tiny_pair_bf16
    cfgs = {
        "aim_ties": {"merge_method": "aim_ties", "base_model": str(s1),
                     "models": [{"model": str(s2), "parameters": {"density": 0.2}}],
                     "parameters": {**CALIB, "omega": 0.4}, "policies": {"trim_mode": "global"}},
        "sens": {"merge_method": "sens", "base_model": str(s1), "models": [{"model": str(s2)}],
                 "parameters": {**SENS, "temperature": 2.0}},
    }
    first = {k: merge(c, tmp_path / f"{k}1", progress=False) for k, c in cfgs.items()}

    def no_model(*a, **k):
        raise AssertionError("the rerun must use the cached statistics")

    monkeypatch.setattr(cal.passes, "load_causal_lm", no_model)
    for k, c in cfgs.items():
        second = merge(c, tmp_path / f"{k}2", progress=False)
        a, b = Source(first[k]), Source(second)
        for n in a.tensor_names():
            t = a.get_tensor(n)
            assert t.dtype == torch.bfloat16 and torch.isfinite(t.float()).all() and torch.equal(t, b.get_tensor(n)), n
        prov = json.loads((first[k] / "l2s_provenance.json").read_text())["prepass_state"]["provenance"]["calibration"]
        if k == "aim_ties":
            assert prov["aim"]["sha256_16"] == cal.load_calibration(FIXTURE, "short", 6, 0).fingerprint
        else:
            sides = [p["side"] for p in prov["sens"]["participants"]]
            assert sides == ["long", "short"] and all(len(p["sha256_16"]) == 16 for p in prov["sens"]["participants"])


def test_paper_configs_carry_table_7():
    """AIM-TIES omega and Sens alpha, T in configs/merges are the paper's Table 7 values (read from the CSV)."""
    import csv

    from l2s_lib import paths
    from l2s_lib.merge import load_config

    checked = 0
    for row in csv.DictReader((paths.PAPER / "table7_hyperparameters.csv").open()):
        values = dict(kv.split("=") for kv in row["hyperparameters"].split(";"))
        scale = row["scale"].lower().replace(".", "p")
        if row["method"] == "AIM-Ties":
            cfg = load_config(paths.MERGE_CONFIGS / f"paper_{scale}_aim_ties.yaml")
            assert cfg.parameters["omega"] == pytest.approx(float(values["omega"]))
        elif row["method"] == "Sens-Merging":
            cfg = load_config(paths.MERGE_CONFIGS / f"paper_{scale}_sens.yaml")
            assert cfg.parameters["alpha"] == pytest.approx(float(values["alpha"]))
            assert cfg.parameters["temperature"] == pytest.approx(float(values["T"]))
        else:
            continue
        checked += 1
    assert checked == 6
