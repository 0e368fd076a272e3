"""Fit the paper's calibration sample size to a smaller calibration set (AIM and Sens on the organisms).

The paper's AIM-Ties and Sens-Merging configs draw ``calibration_n = 100`` samples from s1K; the organisms ship a
calibration set of 64 records, and ``merge.calibration.select`` rightly refuses to draw more samples than a set
holds. ``calibration_overrides`` caps ``calibration_n`` at the set's size (all of it), for
``catalog.method_entries(..., overrides=...)``; with the paper's own set (real models) nothing is overridden.

This belongs in ``catalog.retarget`` (which already swaps the calibration set); until it is there, every study
that builds AIM or Sens entries on the organisms should go through this function, so that their merge configs,
and hence their merge and generation caches, stay identical.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from l2s_lib.studies import catalog


def calibration_size(path: str | Path) -> int:
    """Number of records in a jsonl calibration set (non-empty lines)."""
    with open(path, encoding="utf-8") as f:
        return sum(1 for line in f if line.strip())


def calibration_overrides(pair: catalog.Pair, methods: Sequence[str] | str, scale: str = "7b") -> dict:
    """``{method key: {"params": {"calibration_n": size}}}`` for each method whose paper config asks for more
    calibration samples than ``pair.calibration`` holds; ``{}`` when the pair has no local calibration file."""
    if not pair.calibration or not Path(pair.calibration).is_file():
        return {}
    size = calibration_size(pair.calibration)
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    out = {}
    for key in methods:
        n = (catalog.paper_config(key, scale).get("parameters") or {}).get("calibration_n")
        if isinstance(n, int) and n > size:
            out[key] = {"params": {"calibration_n": size}}
    return out
