"""One way to draw and save figures: the house style and the ``save`` helper.

Every figure of the compendium goes through ``save``: fixed names that match the paper (``fig1_...``,
``tab1_...``), PNG (screen) and PDF (print) under ``paths.figures_dir()``, and no volatile metadata
(creation dates, software versions) so that regenerating an unchanged figure gives identical files.
"""

from __future__ import annotations

import re
from pathlib import Path

# No matplotlib.use() here: forcing a backend at import time replaced the notebook kernel's inline backend, so
# no figure was ever shown in a notebook. Without a display matplotlib already picks a headless backend (Agg).
import matplotlib.pyplot as plt
import seaborn as sns

from l2s_lib import paths

_NAME = re.compile(r"^(fig|tab)[0-9]+[a-z]?_[a-z0-9_]+$")
PNG_DPI = 150

#: Colours by role, used by every figure so a model keeps its colour across studies.
ROLE_COLORS = {
    "system1": "#4C72B0",
    "system2": "#C44E52",
    "dpo": "#8172B3",
    "merge": "#55A868",
    "paper": "#7F7F7F",
}


def set_style() -> None:
    """The house style: seaborn whitegrid, compact fonts, constrained layout, fixed hash salt for SVG ids."""
    sns.set_theme(style="whitegrid", context="paper", font_scale=1.1)
    plt.rcParams.update(
        {
            "figure.constrained_layout.use": True,
            "figure.dpi": 100,  # screen dpi in notebooks keeps committed outputs small
            "savefig.dpi": PNG_DPI,
            "axes.titleweight": "bold",
            "legend.frameon": False,
            "svg.hashsalt": "l2s",
            "pdf.fonttype": 42,
        }
    )


def save_png(fig: plt.Figure, path: str | Path) -> Path:
    """Save ``fig`` as a PNG at ``path`` without volatile metadata (any name: for figures that are not paper
    artefacts, e.g. the organism records under ``data/organisms/``)."""
    path = Path(path)
    fig.savefig(path, dpi=PNG_DPI, metadata={"Software": None})
    return path


def save(fig: plt.Figure, name: str, directory: str | Path | None = None) -> list[Path]:
    """Save ``fig`` as ``<name>.png`` and ``<name>.pdf``; return the two paths.

    ``name`` must look like ``fig1_merge_methods`` or ``tab2_scale``: a paper artefact prefix, then
    lowercase words. Metadata that changes from run to run is removed.
    """
    if not _NAME.match(name):
        raise ValueError(f"figure name '{name}' must match fig<N>_<words> or tab<N>_<words> (lowercase, underscores)")
    out = Path(directory) if directory is not None else paths.figures_dir()
    out.mkdir(parents=True, exist_ok=True)
    png, pdf = save_png(fig, out / f"{name}.png"), out / f"{name}.pdf"
    fig.savefig(pdf, metadata={"CreationDate": None, "ModDate": None, "Producer": None, "Creator": None})
    return [png, pdf]
