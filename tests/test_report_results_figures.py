
import matplotlib.pyplot as plt
import pandas as pd
import pytest

from l2s_lib import paths
from l2s_lib.report import figures, paper, results


def test_results_round_trip_with_provenance():
    df = pd.DataFrame({"model": ["a", "b"], "accuracy": [12.3456789, 99.0]})
    csv = results.write(df, "01_test", "summary", params={"alpha": 0.7, "seed": 0})
    assert csv.is_relative_to(paths.output_root())
    back = results.read("01_test", "summary")
    assert back["model"].tolist() == ["a", "b"]
    assert back["accuracy"].iloc[0] == pytest.approx(12.3457, abs=1e-4)
    meta = results.read_params("01_test", "summary")
    assert meta["params"] == {"alpha": 0.7, "seed": 0}
    assert "torch" in meta["versions"]


def test_reading_a_missing_result_names_the_notebook():
    with pytest.raises(FileNotFoundError, match="run notebook 09_none"):
        results.read("09_none", "summary")


def test_save_writes_png_and_pdf_deterministically():
    figures.set_style()
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1], [1, 0])
    saved = figures.save(fig, "fig9_test")
    first = [p.read_bytes() for p in saved]
    second = [p.read_bytes() for p in figures.save(fig, "fig9_test")]
    plt.close(fig)
    assert first == second
    assert sorted(p.relative_to(paths.figures_dir()).as_posix() for p in saved) == ["fig9_test.pdf", "fig9_test.png"]
    by_suffix = {p.suffix: p.read_bytes() for p in saved}
    assert by_suffix[".png"].startswith(b"\x89PNG") and by_suffix[".pdf"].startswith(b"%PDF")


@pytest.mark.parametrize("bad", ["Fig1", "fig1-x", "figure_1", "fig1_X"])
def test_save_rejects_names_outside_the_scheme(bad):
    fig = plt.figure()
    with pytest.raises(ValueError, match="must match"):
        figures.save(fig, bad)
    plt.close(fig)


def test_paper_tables_are_tidy():
    t1 = paper.per_benchmark("7B")
    assert set(t1["role"]) == {"system1", "system2", "dpo", "merge"}
    assert t1["benchmark_key"].notna().all()
    ta = t1[t1.method == "Task Arithmetic"]
    assert len(ta) == 6
    hp = paper.hyperparameters()
    ties7 = hp[(hp.method == "Ties-Merging") & (hp.scale == "7B")].set_index("param")["value"]
    assert ties7["k"] == 0.8 and ties7["alpha"] == 1.0
    with pytest.raises(ValueError, match="unknown scale"):
        paper.per_benchmark("3B")


def test_rewriting_identical_results_keeps_the_files(monkeypatch):
    df = pd.DataFrame({"model": ["a"], "accuracy": [50.0]})
    csv = results.write(df, "01_test", "summary", params={"seed": 0})
    sidecar = csv.with_suffix(".json")
    stamp = (csv.stat().st_mtime_ns, sidecar.stat().st_mtime_ns)
    monkeypatch.setattr(results, "environment_info", lambda: {"git_sha": "another-commit", "versions": {}})
    results.write(df, "01_test", "summary", params={"seed": 0})
    assert (csv.stat().st_mtime_ns, sidecar.stat().st_mtime_ns) == stamp
    results.write(df, "01_test", "summary", params={"seed": 1})  # other parameters: a new record
    assert results.read_params("01_test", "summary")["git_sha"] == "another-commit"
