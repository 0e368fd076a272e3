from pathlib import Path

from l2s_lib import paths


def test_root_holds_the_project():
    assert (paths.ROOT / "pyproject.toml").is_file()
    assert (paths.ROOT / "l2s_lib" / "paths.py").is_file()


def test_outputs_follow_the_override(tmp_path, monkeypatch):
    monkeypatch.setenv(paths.OUTPUT_ROOT_ENV, str(tmp_path))
    assert paths.results_dir() == tmp_path.resolve() / "data" / "results"
    assert paths.figures_dir() == tmp_path.resolve() / "figures"
    monkeypatch.delenv(paths.OUTPUT_ROOT_ENV)
    assert paths.figures_dir() == paths.ROOT / "figures"


def test_relative_to_root_strips_the_machine_prefix():
    assert paths.relative_to_root(paths.ROOT / "data" / "paper") == "data/paper"
    assert paths.relative_to_root("/elsewhere/x") == "/elsewhere/x"


def test_paper_tables_are_shipped():
    names = {p.name for p in paths.PAPER.glob("*.csv")}
    assert {"table1_7b.csv", "table1_7b_avg.csv", "table7_hyperparameters.csv"} <= names
    assert Path(paths.PAPER / "README.md").is_file()
