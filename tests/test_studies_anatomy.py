"""Task-vector anatomy (notebook 06): spectra, the SVD methods' spectral effects, noise reference, conclusion."""

import matplotlib.pyplot as plt
import pandas as pd
import pytest
import torch
import yaml

from l2s_lib import paths
from l2s_lib.analysis import task_vectors as tv
from l2s_lib.studies import anatomy


def test_spectral_effects_on_a_known_spectrum():
    s = torch.tensor([4.0, 2.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    e = anatomy.spectral_effects(s, lore_threshold=0.5, twin_rank_ratio=0.2)
    total = 16 + 4 + 1 + 1
    assert e["twin_rank"] == 2 and e["twin_topr_energy"] == pytest.approx(20 / total)
    # threshold 0.5 * 4 = 2: min(s, 2)^2 = 4 + 4 + 1 + 1
    assert e["lore_removed_energy"] == pytest.approx(10 / total)
    mean = 0.8
    assert e["iso_c_error"] == pytest.approx(float(((s - mean) ** 2).sum()) / total)
    flat = anatomy.spectral_effects(torch.ones(8), 0.01, 0.5)
    assert flat["iso_c_error"] == pytest.approx(0.0) and flat["twin_topr_energy"] == pytest.approx(0.5)
    assert anatomy.spectral_effects(torch.zeros(4), 0.01, 0.1)["iso_c_error"] == 0.0


def test_svd_settings_come_from_the_paper_configs():
    cfg = anatomy.svd_settings("7b")
    lore = yaml.safe_load((paths.MERGE_CONFIGS / "paper_7b_lore.yaml").read_text())["parameters"]
    twin = yaml.safe_load((paths.MERGE_CONFIGS / "paper_7b_twin.yaml").read_text())["parameters"]
    assert cfg == {"lore_threshold": lore["threshold"], "twin_rank_ratio": twin["rank_ratio"]}
    # 1.5B has a LoRE config but no Twin config: Twin falls back to the 7B row (catalog.paper_config)
    assert anatomy.svd_settings("1p5b")["twin_rank_ratio"] == twin["rank_ratio"]


def test_spectra_of_a_tiny_pair_match_the_task_vector_module(tiny_pair):
    s1, s2 = tiny_pair
    sv = anatomy.singular_values(s1, s2, progress=False)
    table = anatomy.spectral_table(sv, "7b").set_index("tensor")
    direct = tv.anatomy(s1, s2, progress=False).set_index("tensor")
    two_d = direct[direct["ndim"] == 2]
    assert set(table.index) == set(two_d.index)
    for col in ("effective_rank", "stable_rank", "rank_frac_50", "rank_frac_90", "sigma_max"):
        assert table.loc[two_d.index, col].to_numpy() == pytest.approx(two_d[col].to_numpy(), rel=1e-4)
    shapes = dict(zip(table.index, anatomy.tensor_shapes(s1, list(table.index))))
    noise = anatomy.noise_reference(list(shapes.values()))
    kinds = anatomy.kind_summary(direct.reset_index(), table.reset_index(), noise, shapes).set_index("kind")
    assert kinds.loc["all 2-D", "n_tensors"] == len(table)
    # the fixture's tau is Gaussian noise: about as high-rank as the Gaussian reference
    assert kinds.loc["all 2-D", "rank_frac_90"] == pytest.approx(kinds.loc["all 2-D", "noise_rank_frac_90"], abs=0.15)
    text = anatomy.conclusion(kinds.reset_index(), None, anatomy.svd_settings("7b"))
    assert "tau is not low-rank" in text and "were not found" in text
    curves = anatomy.spectrum_curves(sv, kinds=["attn_q"])
    assert set(curves["kind"]) == {"attn_q"} and curves["cum_energy"].max() == pytest.approx(1.0)
    fig = anatomy.fig_anatomy(tv.by_layer(direct.reset_index()), anatomy.spectrum_curves(sv), table.reset_index(),
                              anatomy.noise_curve((32, 32)), 0.1)
    assert len(fig.axes) >= 3
    plt.close(fig)


def test_noise_reference_of_a_square_gaussian():
    ref = anatomy.noise_reference([(64, 64), (64, 64), (32, 128)]).set_index(["rows", "cols"])
    assert len(ref) == 2
    assert 0.4 < ref.loc[(64, 64), "rank_frac_90"] < 0.8 and ref.loc[(64, 64), "effective_rank_frac"] > 0.7


def _kinds(frac90):
    return pd.DataFrame([{"kind": "all 2-D", "rank_frac_90": frac90, "noise_rank_frac_90": 0.7,
                          "effective_rank_frac": 0.5, "noise_effective_rank_frac": 0.9, "top20_mass": 0.4,
                          "twin_topr_energy": 0.6, "lore_removed_energy": 0.01, "iso_c_error": 0.3}])


def _average(lore_acc):
    return pd.DataFrame({"model": ["System 2", "Task Arithmetic", "LoRE-Merging", "Twin-Merging"],
                         "avg_accuracy": [90.0, 88.0, lore_acc, 87.5],
                         "length_change_vs_system2_pct": [0.0, -40.0, -35.0, -20.0]})


def test_svd_methods_against_task_arithmetic():
    v = anatomy.svd_methods_vs_ta(_average(80.0)).set_index("key")
    assert list(v.index) == ["task_arithmetic", "lore", "twin"]
    assert v.loc["lore", "accuracy_vs_ta"] == pytest.approx(-8.0) and v.loc["twin", "length_vs_ta_points"] == 20.0
    assert anatomy.versus_text(None) == "no comparison"
    assert "LoRE-Merging" in anatomy.versus_text(anatomy.svd_methods_vs_ta(_average(80.0)))
    with pytest.raises(ValueError, match="lacks"):
        anatomy.svd_methods_vs_ta(_average(80.0).iloc[[0, 2]])


@pytest.mark.parametrize("frac90, lore_acc, expected", [
    (0.6, 80.0, "consistent with the paper's hypothesis: tau is not low-rank and 1 of 2"),
    (0.6, 87.0, "not supported here: tau is not low-rank, yet no SVD method"),
    (0.1, 80.0, "not supported here: tau is low-rank, yet 1 of 2"),
    (0.1, 87.0, "consistent with the paper's hypothesis read the other way"),
])
def test_conclusion_branches(frac90, lore_acc, expected):
    settings = {"lore_threshold": 0.01, "twin_rank_ratio": 0.1}
    text = anatomy.conclusion(_kinds(frac90), anatomy.svd_methods_vs_ta(_average(lore_acc)), settings)
    assert expected in text


def test_measure_and_notebook01_results(tiny_pair):
    from l2s_lib.report import results

    a = anatomy.measure(*tiny_pair, progress=False)
    assert set(a.shapes) == set(a.spectra["tensor"]) and a.typical_shape() in a.shapes.values()
    assert "all 2-D" in set(a.kinds()["kind"])
    inputs = results.result_dir("01_merge_methods", "default")
    with pytest.raises(FileNotFoundError, match="run study 01_merge_methods with config 'default' first"):
        anatomy.svd_comparison(inputs)
    results.write(_average(85.0), "01_merge_methods", "average")
    versus, note = anatomy.svd_comparison(inputs)
    assert list(versus["key"]) == ["task_arithmetic", "lore", "twin"] and note.startswith("read")
    versus, note = anatomy.svd_comparison(inputs, system2="system2")
    assert versus.empty and list(versus.columns) == anatomy.VERSUS_COLUMNS and "cannot be compared" in note
