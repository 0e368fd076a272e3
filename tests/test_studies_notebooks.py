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
    # N=2 is not the parameter file's value: another run, beside (never over) the "paper" results.
    out = paths.results_dir() / "01_toy" / notebooks.run_name("01_toy", {"ALPHA": 1, "N": 2, "NAME": "paper",
                                                                         "CONFIG": "paper"}) / "01_toy.ipynb"
    assert out.parent.name.startswith("paper+")
    assert not (paths.results_dir() / "01_toy" / "paper").exists()
    executed = nbformat.read(out, as_version=4)
    printed = "".join(o.get("text", "") for c in executed.cells for o in c.get("outputs", []))
    assert "2 paper paper" in printed
    assert (study_tree / "01_toy.ipynb").read_text() == before
    assert main(["run", "01", "-p", "BETA=1"]) == 2
    assert "BETA not parameters of 01_toy" in capsys.readouterr().err


def test_run_name_reserves_default_and_parameter_files_for_their_own_values(study_tree):
    defaults = notebooks.notebook_parameters("01_toy")
    assert notebooks.run_name("01_toy", defaults) == "default"
    assert notebooks.run_name("01_toy", defaults | {"ALPHA": 1, "NAME": "paper", "CONFIG": "paper"}) == "paper"
    quick = notebooks.run_name("01_toy", defaults | {"N": 1})
    assert quick.startswith("default+") and len(quick) == len("default+") + 8
    assert quick == notebooks.run_name("01_toy", defaults | {"N": 1})  # the same change, the same folder
    assert quick != notebooks.run_name("01_toy", defaults | {"N": 2})
    assert notebooks.run_name("01_toy", defaults | {"ALPHA": 1, "NAME": "paper", "CONFIG": "paper", "N": 1}) != "paper"
    # A name that is no parameter file is the user's ad-hoc run, whatever its values.
    assert notebooks.run_name("01_toy", defaults | {"N": 9, "CONFIG": "my_run"}) == "my_run"


def test_run_rejects_bad_overrides_before_starting_a_kernel(study_tree):
    with pytest.raises(ConfigError, match="CONFIG is the run's name"):
        notebooks.run("01_toy", "default", overrides={"CONFIG": "x"})
    with pytest.raises(ConfigError, match="'N' must be int"):
        notebooks.run("01_toy", "default", overrides={"N": "three"})
    with pytest.raises(ConfigError, match="BETA not parameters of 01_toy"):
        notebooks.run("01_toy", "my_run", overrides={"BETA": 1})


@pytest.mark.slow
def test_an_ad_hoc_run_is_named_without_a_parameter_file(study_tree):
    out = notebooks.run("01_toy", "my_run", overrides={"N": 5}, progress=False)
    assert out == paths.results_dir() / "01_toy" / "my_run" / "01_toy.ipynb"
    executed = nbformat.read(out, as_version=4)
    printed = "".join(o.get("text", "") for c in executed.cells for o in c.get("outputs", []))
    assert "3.5 x my_run" in printed
