"""Absolute locations of the repository's folders, from one place.

Every module and notebook takes its paths from here (no ``../``, no ``os.chdir``), so code runs the
same from the repository root, from ``notebooks/``, from papermill's working directory or from an
installed package used inside a clone.

Read-only inputs (the paper's tables, shipped organisms, benchmark files, configs) always come from
the repository. Everything the code *writes* (results, figures, generation caches) goes under
``OUTPUT_ROOT``, which is the repository root unless the environment variable ``L2S_OUTPUT_ROOT``
points elsewhere: tests set it to a temporary folder so they never touch committed outputs.
"""

from __future__ import annotations

import os
from pathlib import Path

#: The repository root (the folder that holds ``pyproject.toml`` and ``l2s_lib/``).
ROOT: Path = Path(__file__).resolve().parent.parent

#: Name of the one environment variable that redirects every written output.
OUTPUT_ROOT_ENV = "L2S_OUTPUT_ROOT"

# Read-only inputs, always inside the repository.
DATA: Path = ROOT / "data"
PAPER: Path = DATA / "paper"  # the paper's tables (CSV), transcribed from Wu et al. 2025
ORGANISMS: Path = DATA / "organisms"  # shipped organism checkpoints and their benchmarks
BENCHMARKS: Path = DATA / "benchmarks"  # real benchmarks in the Qwen2.5-Math toolkit layout (user-provided)
CONFIGS: Path = ROOT / "configs"
MERGE_CONFIGS: Path = CONFIGS / "merges"
NOTEBOOKS: Path = ROOT / "notebooks"
PARAMS: Path = NOTEBOOKS / "params"


def output_root() -> Path:
    """Root under which results, figures and caches are written (``L2S_OUTPUT_ROOT`` or the repo)."""
    override = os.environ.get(OUTPUT_ROOT_ENV)
    return Path(override).resolve() if override else ROOT


def results_dir() -> Path:
    """``data/results``: tidy result tables and executed copies of papermill runs."""
    return output_root() / "data" / "results"


def figures_dir() -> Path:
    """``figures/``: every figure, PNG and PDF."""
    return output_root() / "figures"


def cache_dir() -> Path:
    """Generation and calibration caches (ignored by git)."""
    return output_root() / ".cache" / "l2s"


def relative_to_root(path: str | os.PathLike) -> str:
    """``path`` relative to the repository root when it lies inside it, else unchanged.

    Used wherever a path is written into a committed file (provenance, results, notebook outputs),
    so that no absolute path of one machine is committed.
    """
    p = Path(path).resolve()
    for root in (ROOT, output_root()):
        try:
            return p.relative_to(root).as_posix()
        except ValueError:
            continue
    return str(path)
