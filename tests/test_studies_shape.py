"""The study shape: compute writes result files; tables, figures and verdict read them only; `l2s figures`
redraws the same bytes from data/results/ alone, on a tree with no checkpoint and no cache."""

import shutil

import pandas as pd
import pytest

from l2s_lib import paths, show
from l2s_lib.cli import main
from l2s_lib.errors import ConfigError
from l2s_lib.report import figures as report_figures
from l2s_lib.studies import folder, notebooks, registry

RUN = "shape_test"  # an ad-hoc run name: its own folder, figures beside its results (never figures/)


def _block_model_reads(monkeypatch):
    """Make every way of reading a checkpoint fail, so a function that reads one cannot pass."""
    import safetensors
    import safetensors.torch
    import transformers

    from l2s_lib import checkpoints

    def refuse(*args, **kwargs):
        raise AssertionError("a model or checkpoint was read where only result files may be")

    monkeypatch.setattr(checkpoints, "open_model", refuse)
    monkeypatch.setattr(checkpoints.read, "open_model", refuse)  # what parameter_count calls
    monkeypatch.setattr(safetensors, "safe_open", refuse)
    monkeypatch.setattr(safetensors.torch, "load_file", refuse)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)


def test_every_study_has_the_four_functions_and_a_notebook():
    assert list(registry.STUDIES) == notebooks.list_studies()
    for name, mod in registry.STUDIES.items():
        assert mod.STUDY == name and all(callable(getattr(mod, f)) for f in ("compute", "tables", "figures", "verdict"))
        assert all(report_figures._NAME.match(f) for f in mod.FIGURES)
        assert all(dep in registry.STUDIES for dep in mod.INPUTS)


def test_order_puts_a_study_after_its_inputs_and_refuses_cycles(monkeypatch):
    order = registry.order()
    assert order.index("01_merge_methods") < order.index("06_task_vectors")
    assert registry.order(["06"]) == ["01_merge_methods", "06_task_vectors"]
    monkeypatch.setattr(registry.STUDIES["01_merge_methods"], "INPUTS", ("06_task_vectors",))
    with pytest.raises(ConfigError, match="cycle"):
        registry.order()


def test_run_order_is_printed_for_make_reproduce(capsys):
    assert main(["run", "--order"]) == 0
    assert capsys.readouterr().out.split() == registry.order()


def test_figures_of_a_missing_run_say_what_to_run():
    with pytest.raises(FileNotFoundError, match="run the study first"):
        registry.redraw("01", "nothing_here")


def test_compute_writes_files_that_tables_figures_and_verdict_read_alone(tmp_path, monkeypatch, one_torch_thread):
    base = notebooks.notebook_parameters("01_merge_methods")
    p01 = base | {"METHODS": ["task_arithmetic", "lore"], "LIMIT": 2, "CONFIG": RUN}
    p06 = notebooks.notebook_parameters("06_task_vectors") | {"CONFIG": RUN}
    # notebook 06 declares notebook 01 as its input: without 01's results it stops before any SVD
    with pytest.raises(FileNotFoundError, match="run study 01_merge_methods"):
        registry.module("06").compute(p06)
    written = registry.module("01").compute(p01) + registry.module("06").compute(p06)
    assert {p.parent.name for p in written} == {RUN} and all(p.is_file() for p in written)

    _block_model_reads(monkeypatch)
    drawn = {}
    for study in ("01_merge_methods", "06_task_vectors"):
        mod, d = registry.module(study), folder.of(study, p01 if study.startswith("01") else p06)
        tables = mod.tables(d)
        assert tables and all(isinstance(t, show.Table) and len(t.df) for t in tables.values())
        assert "Verdict" in mod.verdict(d)
        figs = mod.figures(d)
        assert list(figs) == list(mod.FIGURES)
        for name in figs:  # what a notebook does
            for path in show.figure(figs[name], name, folder.figure_dir(d)):
                drawn[path.relative_to(paths.output_root())] = path.read_bytes()
    s = folder.settings(folder.of("01_merge_methods", p01))
    assert (s["world"], s["system2"]) == ("organism", "System 2")
    versus = folder.read(folder.of("06_task_vectors", p06), "svd_versus_ta")
    assert list(versus["key"]) == ["task_arithmetic", "lore"]

    # A bare tree: only data/results/ (no checkpoint, no cache), the figures removed, then `l2s figures`.
    bare = tmp_path / "bare"
    shutil.copytree(paths.results_dir(), bare / "data" / "results")
    monkeypatch.setenv(paths.OUTPUT_ROOT_ENV, str(bare))
    assert not list(bare.rglob("*.safetensors")) and not (bare / ".cache").exists()
    assert main(["figures", "--config", RUN, "--check"]) == 0  # the copied figures redraw byte for byte
    for rel in drawn:
        (bare / rel).unlink()
    assert main(["figures", "--config", RUN]) == 0
    assert {rel: (bare / rel).read_bytes() for rel in drawn} == drawn
    (bare / next(iter(drawn))).write_bytes(b"changed")
    assert main(["figures", "--config", RUN, "--check"]) == 1


def test_settings_hold_plain_values_only(tmp_path):
    d = tmp_path / "01_x" / "run"
    with pytest.raises(TypeError, match="strings, numbers or None"):
        folder.write_settings(d, {}, labels=["a", "b"])


def test_float_columns_read_back_as_floats():
    d = folder.of("01_merge_methods", notebooks.notebook_parameters("01_merge_methods") | {"CONFIG": "dtype_test"})
    folder.write(d, pd.DataFrame({"model": ["a"], "rho": [1.0], "n": [3]}), "t")
    back = folder.read(d, "t")
    assert back["rho"].dtype == "float64" and back["n"].dtype == "int64"


#: The smallest runs of notebooks 02-05 on the shipped organism (one merge, two problems per benchmark); they share
#: one generation cache, so System 1 / System 2 / TA are generated once.
SMALL = {
    "02_scale_effects": {"SIZES": ["1m"], "METHODS": ["task_arithmetic"], "THREE_MODEL": False},
    "03_adaptive_length": {"METHODS": ["task_arithmetic"]},
    "04_self_critique": {"METHODS": ["task_arithmetic"], "PROBE_PER_LEVEL": 1, "PROBE_MAX_NEW_TOKENS": 40},
    "05_sensitivity": {"ALPHAS": [0.5, 1.0], "TIES_KS": [0.5], "DARE_PS": [0.3], "CALIBRATION_SIDES": ["short"],
                       "CALIBRATION_NS": [8]},
}


def test_the_other_studies_round_trip_through_their_files(monkeypatch, one_torch_thread):
    dirs = {}
    for study, small in SMALL.items():
        p = notebooks.notebook_parameters(study) | {"LIMIT": 2, "CONFIG": RUN} | small
        registry.module(study).compute(p)
        dirs[study] = folder.of(study, p)
    _block_model_reads(monkeypatch)
    for study, d in dirs.items():
        mod = registry.module(study)
        tables = mod.tables(d)
        assert tables and all(isinstance(t, show.Table) for t in tables.values())
        assert mod.verdict(d).strip()
        for name in mod.figures(d):
            show.figure(mod.figures(d)[name], name, folder.figure_dir(d))
    assert set(folder.roles(folder.read(dirs["04_self_critique"], "summary")).values()) == {
        "system1", "system2", "dpo", "merge"}
    assert main(["figures", "--config", RUN, "--check"]) == 0
