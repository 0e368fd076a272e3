"""The comparison grid that studies 01, 03 and 04 share: the pair, Table 1's entries, their evaluation.

One place that reads the notebooks' common parameters (SIZE, SYSTEM1/2, DPO, CALIBRATION, METHODS, SCALE, SEED,
the two prompts and budgets, BENCHMARKS, DEVICE, BACKEND, BATCH_SIZE, LIMIT and the executor), so the three
studies evaluate the same grid and share its merges and generations through the caches.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from l2s_lib.pipeline import catalog, executors, grid


def evaluate(p: Mapping[str, Any]) -> tuple[catalog.Pair, list[grid.Entry], grid.GridResult]:
    """The pair, the comparison entries and the evaluated grid of a study's parameters ``p``."""
    pair = catalog.resolve_pair(p["SIZE"], p["SYSTEM1"], p["SYSTEM2"], p["DPO"], p["CALIBRATION"])
    entries = catalog.comparison_entries(pair, p["METHODS"], p["SCALE"], p["SEED"], p["S1_PROMPT"],
                                         p["S1_MAX_NEW_TOKENS"], p["PROMPT"], p["MAX_NEW_TOKENS"])
    run = grid.evaluate(entries, p["BENCHMARKS"], device=p["DEVICE"], backend=p["BACKEND"],
                        batch_size=p["BATCH_SIZE"], limit=p["LIMIT"] or None, **executors.from_params(p))
    return pair, entries, run
