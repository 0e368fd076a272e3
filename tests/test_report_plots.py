import math

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from l2s_lib.report import paper, plots


def test_rank_correlation():
    assert plots.rank_correlation([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert plots.rank_correlation([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert plots.rank_correlation([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    assert math.isnan(plots.rank_correlation([1, 2, 3], [5, 5, 5]))


def test_figure_one_has_the_paper_panel_beside_ours():
    ours = pd.DataFrame({"model": ["S1", "S2", "TA"], "avg_accuracy": [40.0, 90.0, 88.0],
                         "length_change_vs_system2_pct": [-70.0, 0.0, -45.0]})
    fig = plots.fig_merge_methods(ours, "S2", {"S1": "system1", "S2": "system2", "TA": "merge"},
                                  paper.read_table("table1_7b_avg"))
    left, right = fig.axes[:2]
    assert "Table 1" in left.get_title()
    # the paper panel plots every row that has a length change (System 1 has none at 7B)
    assert sum(len(c.get_offsets()) for c in left.collections) == 12
    assert sum(len(c.get_offsets()) for c in right.collections) == 3
    plt.close(fig)
