"""Result files: every table a study computes is written here once and read back for figures.

Layout: ``data/results/<study>/<config>/<name>.csv`` (a tidy table) with ``<name>.json`` beside it (the
resolved parameters, seed, git SHA, package versions). Figures are drawn from these files only, so every
figure regenerates without re-running merges or generation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from l2s_lib import paths
from l2s_lib.files import atomic_write_text
from l2s_lib.provenance import environment_info

FLOAT_FORMAT = "%.6g"  # enough for accuracies and lengths, stable across platforms


def result_dir(study: str, config: str = "default") -> Path:
    """``data/results/<study>/<config>`` under the output root (created)."""
    d = paths.results_dir() / study / config
    d.mkdir(parents=True, exist_ok=True)
    return d


def write(df: pd.DataFrame, study: str, name: str, config: str = "default", params: dict[str, Any] | None = None) -> Path:
    """Write ``df`` as ``<name>.csv`` with a provenance sidecar; returns the CSV path. Atomic."""
    d = result_dir(study, config)
    csv = d / f"{name}.csv"
    text = df.to_csv(index=False, float_format=FLOAT_FORMAT, lineterminator="\n")
    # CSV forgets dtypes: a float column whose values are all whole (1.0) reads back as int and prints as "1".
    floats = [str(c) for c in df.columns if pd.api.types.is_float_dtype(df[c])]
    meta = {"study": study, "config": config, "name": name, "params": params or {}, "rows": len(df),
            "float_columns": floats}
    sidecar = d / f"{name}.json"
    if csv.is_file() and sidecar.is_file() and csv.read_text() == text:
        old = json.loads(sidecar.read_text())
        if json.loads(json.dumps(meta, default=str)).items() <= old.items():
            # Same numbers from the same parameters: keep the provenance of the run that first produced them,
            # so re-running a study (nbval, make reproduce) leaves committed result files untouched.
            return csv
    atomic_write_text(csv, text)
    # Only content that is stable run to run goes into committed sidecars: commit and versions, no timestamps.
    meta |= environment_info()
    atomic_write_text(sidecar, json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
    return csv


def read_csv(csv: str | os.PathLike) -> pd.DataFrame:
    """A result table written by ``write``, its float columns read as floats again (from the sidecar)."""
    csv = Path(csv)
    sidecar = csv.with_suffix(".json")
    floats = json.loads(sidecar.read_text()).get("float_columns", []) if sidecar.is_file() else []
    return pd.read_csv(csv, dtype={c: "float64" for c in floats})


def read(study: str, name: str, config: str = "default") -> pd.DataFrame:
    """Read a result table written by ``write`` (``FileNotFoundError`` says which run produces it)."""
    csv = paths.results_dir() / study / config / f"{name}.csv"
    if not csv.is_file():
        raise FileNotFoundError(
            f"no result '{name}' for study '{study}' (config '{config}'): run notebook {study} first "
            f"(expected {paths.relative_to_root(csv)})"
        )
    return read_csv(csv)


def read_params(study: str, name: str, config: str = "default") -> dict[str, Any]:
    """The provenance sidecar of a result table."""
    return json.loads((paths.results_dir() / study / config / f"{name}.json").read_text())


def figure_dir(study: str, config: str = "default") -> Path:
    """Where a study's figures go: ``figures/`` for the default run (the canonical figures the README shows),
    ``data/results/<study>/<config>/figures/`` for any other configuration, so a paper-scale or variant run never
    overwrites the canonical figures."""
    if config == "default":
        return paths.figures_dir()
    d = result_dir(study, config) / "figures"
    d.mkdir(parents=True, exist_ok=True)
    return d
