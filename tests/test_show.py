"""What a notebook reader sees: rendered tables with a stable text form, figures shown once and saved."""

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from l2s_lib import show


@pytest.fixture
def table():
    return pd.DataFrame({"model": ["System 2", "TA"], "accuracy": [99.8, 97.25]}).set_index("model")


def test_a_table_renders_as_html_and_as_the_fixed_width_text(table):
    t = show.Table(table, caption="Table 1 <ours>")
    assert repr(t) == "Table 1 <ours>\n" + table.to_string()
    html = t._repr_html_()
    assert html.startswith("<p><b>Table 1 &lt;ours&gt;</b></p>") and "<table" in html
    assert "<td>97.25</td>" in html and "<th>System 2</th>" in html
    assert "System 2" not in show.Table(table.reset_index(), index=False)._repr_html_().split("<tbody>")[0]


def test_outside_ipython_a_table_prints_its_text(table, capsys):
    show.table(table, "caption")
    assert capsys.readouterr().out == "caption\n" + table.to_string() + "\n"


def test_a_figure_is_saved_and_shown_once_in_a_notebook(tmp_path, monkeypatch):
    shown = []
    monkeypatch.setattr(show, "_ipython", lambda: object())
    monkeypatch.setattr("IPython.display.display", lambda obj: shown.append(obj))
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    saved = show.figure(fig, "fig9_test_plot", tmp_path)
    assert [p.name for p in saved] == ["fig9_test_plot.png", "fig9_test_plot.pdf"] and all(p.stat().st_size for p in saved)
    assert shown == [fig]
    assert not plt.fignum_exists(fig.number)  # closed: the inline backend will not draw it a second time


def test_importing_the_figures_module_keeps_the_kernels_backend():
    import subprocess
    import sys

    code = ("import matplotlib; matplotlib.use('module://matplotlib_inline.backend_inline'); "
            "import l2s_lib.report.figures, l2s_lib.show; print(matplotlib.get_backend())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "inline" in out


def test_progress_bar_redraws_collapse_to_their_last_line(tmp_path):
    import nbformat

    from l2s_lib.studies import outputs

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("run()")
    redraws = [nbformat.v4.new_output("stream", name="stderr", text=f"\rmerges: {i}/3") for i in range(4)]
    cell.outputs = (redraws + [nbformat.v4.new_output("stream", name="stderr", text="\n")]
                    + [nbformat.v4.new_output("stream", name="stdout", text="table\n")]
                    + [nbformat.v4.new_output("display_data", data={"text/plain": "fig"})])
    nb.cells = [cell]
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    assert outputs.tidy(path)
    out = nbformat.read(path, as_version=4).cells[0].outputs
    assert [(o.output_type, o.get("name"), o.get("text")) for o in out] == [
        ("stream", "stderr", "merges: 3/3\n"), ("stream", "stdout", "table\n"), ("display_data", None, None)]
    assert not outputs.tidy(path)  # idempotent
    assert outputs.terminal_text("a\rb\rc\nd\r") == "c\nd"
