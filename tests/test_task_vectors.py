import pytest
import torch

from l2s_lib.analysis import task_vectors as tv


def test_kind_and_layer_parsing():
    assert tv.tensor_kind("model.layers.3.self_attn.q_proj.weight") == "attn_q"
    assert tv.tensor_kind("model.layers.3.self_attn.q_proj.bias") == "attn_q_bias"
    assert tv.tensor_kind("model.layers.0.mlp.down_proj.weight") == "mlp_down"
    assert tv.tensor_kind("model.norm.weight") == "norm"
    assert tv.layer_index("model.layers.12.mlp.up_proj.weight") == 12
    assert tv.layer_index("model.embed_tokens.weight") is None


def test_spectrum_of_a_rank_one_matrix():
    u, v = torch.randn(40, 1), torch.randn(1, 30)
    s = tv.spectrum_stats(u @ v)
    assert s["effective_rank"] == pytest.approx(1.0, abs=1e-3)
    assert s["stable_rank"] == pytest.approx(1.0, abs=1e-4)
    assert s["rank_frac_90"] == pytest.approx(1 / 30)


def test_spectrum_of_an_orthogonal_matrix_is_flat():
    q, _ = torch.linalg.qr(torch.randn(32, 32, dtype=torch.float64))
    s = tv.spectrum_stats(q)
    assert s["effective_rank"] == pytest.approx(32, rel=1e-4)
    assert s["rank_frac_50"] == pytest.approx(16 / 32)


def test_top_mass_fraction():
    d = torch.tensor([10.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    assert tv.top_mass_fraction(d, 0.2) == pytest.approx(1.0)
    assert tv.top_mass_fraction(torch.ones(10), 0.2) == pytest.approx(0.2)


def test_anatomy_on_a_tiny_pair(tiny_pair):
    s1, s2 = tiny_pair
    df = tv.anatomy(s1, s2, progress=False)
    assert len(df) > 10 and df["tau_norm"].gt(0).all()
    # the fixture's S2 is S1 plus 5% of each tensor's RMS in Gaussian noise
    assert df["relative_norm"].between(0.01, 0.2).all()
    two_d = df[df["ndim"] == 2]
    assert two_d["effective_rank"].notna().all()
    layers = tv.by_layer(df)
    assert set(layers["layer"]) == {0, 1}
    same = tv.anatomy(s1, s1, progress=False)
    assert same["tau_norm"].eq(0).all()
