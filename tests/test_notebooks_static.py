"""Static checks of the committed study notebooks (the conventions of CONVENTIONS.md).

The notebooks are executed by nbval in ``make test``; these checks read the files only.
"""

from __future__ import annotations

import json
import re

import nbformat
import pytest

from l2s_lib import paths
from l2s_lib.studies import notebooks

STUDIES = notebooks.list_studies()
ABSOLUTE = re.compile(r"(/home/|/root/|/work/|/Users/|/tmp/|[A-Z]:\\\\)")


def _nb(study):
    return nbformat.read(notebooks.notebook_path(study), as_version=4)


@pytest.mark.parametrize("study", STUDIES)
def test_skeleton(study):
    nb = _nb(study)
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    assert nb.metadata["kernelspec"]["name"] == "python3"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not re.search(r"^\s*(def|class) ", cell.source, re.M), f"{study}: notebooks define no functions"
            assert "injected-parameters" not in cell.metadata.get("tags", []), f"{study}: papermill cell committed"
            assert "os.chdir" not in cell.source and "../" not in cell.source


@pytest.mark.parametrize("study", STUDIES)
def test_committed_outputs_are_executed_and_hold_no_absolute_paths(study):
    nb = _nb(study)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), f"{study} is committed unexecuted"
    blob = json.dumps([c.get("outputs", []) for c in code])
    hit = ABSOLUTE.search(blob)
    assert hit is None, f"{study}: absolute path in committed outputs near {blob[max(0, hit.start()-60):hit.end()+60]!r}"


@pytest.mark.parametrize("study", STUDIES)
def test_jupytext_twin_is_in_sync(study):
    import jupytext

    twin = paths.NOTEBOOKS / f"{study}.py"
    assert twin.is_file(), f"{study}: missing jupytext twin {twin.name}"
    py = jupytext.read(twin)
    nb = _nb(study)
    src = lambda n: [(c.cell_type, c.source.strip()) for c in n.cells]  # noqa: E731
    assert src(py) == src(nb), f"{study}: run `jupytext --sync notebooks/{study}.ipynb`"


@pytest.mark.parametrize("study", STUDIES)
def test_parameter_files_match_the_notebook(study):
    for config in notebooks.list_configs(study):
        notebooks.load_params(study, config)  # raises on unknown keys and wrong types


@pytest.mark.parametrize("study", STUDIES)
def test_papermill_reads_every_parameter_with_its_comment(study):
    """`papermill --help-notebook` and papermill's own parsing see each parameter (no '=' in comments)."""
    from papermill.translators import PythonTranslator

    cell = next(c for c in _nb(study).cells if "parameters" in c.metadata.get("tags", []))
    parsed = PythonTranslator.inspect(cell)
    assert [p.name for p in parsed] == list(notebooks.notebook_parameters(study))
    assert all(p.help for p in parsed), f"{study}: every parameter needs a short comment"
