import nbformat
import pytest

from l2s_lib import paths
from l2s_lib.cli import main
from l2s_lib.errors import ConfigError
from l2s_lib.studies import notebooks


@pytest.fixture
def study_tree(tmp_path, monkeypatch):
    """A notebooks/ folder with one tiny study and a parameter file."""
    nbdir = tmp_path / "notebooks"
    (nbdir / "params" / "01_toy").mkdir(parents=True)
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Toy"),
        nbformat.v4.new_code_cell("ALPHA = 0.7  # TA weight\nN = 3  # samples\nNAME = 'x'\nCONFIG = 'default'"),
        nbformat.v4.new_code_cell("print(ALPHA * N, NAME, CONFIG)"),
    ]
    nb.cells[1].metadata["tags"] = ["parameters"]
    nbformat.write(nb, nbdir / "01_toy.ipynb")
    (nbdir / "params" / "01_toy" / "paper.yaml").write_text("ALPHA: 1\nNAME: paper\n")
    monkeypatch.setattr(paths, "NOTEBOOKS", nbdir)
    monkeypatch.setattr(paths, "PARAMS", nbdir / "params")
    return nbdir


def test_resolution_and_parameters(study_tree):
    assert notebooks.list_studies() == ["01_toy"]
    assert notebooks.resolve_study("01") == notebooks.resolve_study("toy") == "01_toy"
    assert notebooks.notebook_parameters("01_toy") == {"ALPHA": 0.7, "N": 3, "NAME": "x", "CONFIG": "default"}
    assert notebooks.list_configs("01_toy") == ["default", "paper"]
    assert notebooks.load_params("01_toy", "paper") == {"ALPHA": 1, "NAME": "paper"}
    with pytest.raises(ConfigError, match="unknown study 'nope'; available: 01_toy"):
        notebooks.resolve_study("nope")


@pytest.mark.parametrize(
    "yaml_text, message",
    [("BETA: 2\n", "'BETA' is not a parameter"), ("N: 2.5\n", "'N' must be int"), ("ALPHA: [1]\n", "'ALPHA' must be float"),
     ("- 1\n", "must be a mapping"), ("ALPHA: [\n", "cannot read")],
)
def test_bad_parameter_files_fail_with_what_is_allowed(study_tree, yaml_text, message):
    (study_tree / "params" / "01_toy" / "bad.yaml").write_text(yaml_text)
    with pytest.raises(ConfigError, match=message):
        notebooks.load_params("01_toy", "bad")


def test_missing_config_lists_the_configs(study_tree):
    with pytest.raises(ConfigError, match="configs of 01_toy: default, paper"):
        notebooks.load_params("01_toy", "paper_99b")


@pytest.mark.slow
def test_run_writes_an_executed_copy_and_keeps_the_source(study_tree, capsys):
    before = (study_tree / "01_toy.ipynb").read_text()
    assert main(["run", "01", "paper", "-p", "N=2"]) == 0
    out = paths.results_dir() / "01_toy" / "paper" / "01_toy.ipynb"
    executed = nbformat.read(out, as_version=4)
    printed = "".join(o.get("text", "") for c in executed.cells for o in c.get("outputs", []))
    assert "2 paper paper" in printed
    assert (study_tree / "01_toy.ipynb").read_text() == before
    assert main(["run", "01", "-p", "BETA=1"]) == 2
    assert "BETA not parameters of 01_toy" in capsys.readouterr().err
