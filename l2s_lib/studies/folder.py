"""A study run's folder: what ``compute`` writes and what ``tables``, ``figures`` and ``verdict`` read back.

Every study module has the same four functions and three constants::

    STUDY = "01_merge_methods"        # its notebook and results folder
    INPUTS = ()                       # studies whose results it reads (their run of the same CONFIG)
    FIGURES = ("fig1_merge_methods",) # the figures ``figures`` draws, under their paper names

    compute(params) -> list[Path]     # merges and evaluations; writes data/results/<study>/<run>/*.csv
    tables(folder) -> dict[str, show.Table]
    figures(folder) -> Figures        # name -> figure, drawn when asked for
    verdict(folder) -> str            # the generated conclusion (Markdown)

``compute`` is the only one that loads a model. The other three read the folder's files only (tidy CSVs written
by ``l2s_lib.report.results`` with their provenance sidecars, and the one-row ``settings`` table with the facts
a figure or a sentence needs: labels of System 1 and System 2, the world, the benchmark with levels ...), so
``l2s figures`` redraws every figure from ``data/results/`` on a clone without checkpoints or caches, and a
notebook's figure and the redrawn one are the same bytes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from l2s_lib.report import results

#: The one-row table of each run with the settings its figures and verdict need.
SETTINGS = "settings"


def of(study: str, params: Mapping[str, Any]) -> Path:
    """The results folder of a run of ``study`` with ``params`` (``notebooks.run_name``), created."""
    from l2s_lib.studies import notebooks

    return results.result_dir(study, notebooks.run_name(study, dict(params)))


def write(folder: Path, df: pd.DataFrame, name: str, params: Mapping[str, Any] | None = None) -> Path:
    """Write ``df`` as ``<folder>/<name>.csv`` (with its provenance sidecar) through ``results.write``."""
    folder = Path(folder)
    return results.write(df, folder.parent.name, name, folder.name, dict(params or {}))


def read(folder: Path, name: str) -> pd.DataFrame:
    """``<folder>/<name>.csv``; ``FileNotFoundError`` naming the study to run when it is missing."""
    csv = Path(folder) / f"{name}.csv"
    if not csv.is_file():
        raise FileNotFoundError(f"no result '{name}' in {csv.parent} (run study {csv.parent.parent.name} "
                                f"with config '{csv.parent.name}' first)")
    return results.read_csv(csv)


def write_settings(folder: Path, params: Mapping[str, Any], **values: Any) -> Path:
    """The run's ``settings`` table: one row of ``values`` (strings, numbers or None)."""
    bad = {k: type(v).__name__ for k, v in values.items() if not (v is None or isinstance(v, (str, int, float)))}
    if bad:
        raise TypeError(f"settings must be strings, numbers or None; got {bad}")
    return write(folder, pd.DataFrame([values]), SETTINGS, params)


def settings(folder: Path) -> dict[str, Any]:
    """The ``settings`` row as a dict (an empty cell reads back as None)."""
    row = read(folder, SETTINGS).iloc[0].to_dict()
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}


def roles(summary: pd.DataFrame) -> dict[str, str]:
    """Model label -> role (system1 / system2 / dpo / merge), in the summary's row order."""
    first = summary.drop_duplicates("model")
    return dict(zip(first["model"], first["role"]))


def labels(summary: pd.DataFrame, role: str | None = None) -> list[str]:
    """The summary's model labels in row order (only those of ``role`` when given)."""
    return [m for m, r in roles(summary).items() if role is None or r == role]


def figure_dir(folder: Path) -> Path:
    """Where the figures of the run in ``folder`` go (``results.figure_dir``: ``figures/`` for the default run)."""
    folder = Path(folder)
    return results.figure_dir(folder.parent.name, folder.name)


class Figures(Mapping):
    """A study's figures by paper name, each drawn only when it is asked for.

    Drawing on access keeps a notebook's cells apart: a figure made in one cell and shown in another would be
    shown twice by the inline backend, which displays every open figure at the end of a cell.
    """

    def __init__(self, drawers: Mapping[str, Callable[[], Any]]):
        self._drawers = dict(drawers)

    def __getitem__(self, name: str):
        if name not in self._drawers:
            raise KeyError(f"no figure '{name}'; this study draws {', '.join(self._drawers)}")
        return self._drawers[name]()

    def __iter__(self) -> Iterator[str]:
        return iter(self._drawers)

    def __len__(self) -> int:
        return len(self._drawers)
