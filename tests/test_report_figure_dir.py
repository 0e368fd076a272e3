from l2s_lib import paths
from l2s_lib.report import results


def test_only_the_default_run_writes_the_canonical_figures():
    assert results.figure_dir("05_sensitivity") == paths.figures_dir()
    variant = results.figure_dir("05_sensitivity", "paper_7b")
    assert variant == paths.results_dir() / "05_sensitivity" / "paper_7b" / "figures" and variant.is_dir()
