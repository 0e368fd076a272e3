"""Calibration for the data-informed merges (AIM, Sens-Merging), in three parts:

- ``data``: the calibration file format, s1K from the hub, selection and pairing, tokenisation;
- ``passes``: the model passes (AIM activation statistics, Sens sensitivities and logit distances),
  one model in memory at a time;
- ``cache``: the statistics cache (``STATS_VERSION`` is the version of the code that computes them).

The names below are the ones the merge methods and callers use.
"""

from __future__ import annotations

from l2s_lib.merge.calibration.cache import STATS_VERSION, cache_key, cache_load, cache_save
from l2s_lib.merge.calibration.data import (
    REQUIRED_FIELDS,
    S1K_FIELDS,
    S1K_IDS,
    SIDES,
    TEMPLATES,
    CalibrationRecord,
    CalibrationSet,
    Encoded,
    encode_pairs,
    load_calibration,
    load_s1k,
    make_pairs,
    read_jsonl,
    resolve_source,
    select,
)
from l2s_lib.merge.calibration.passes import (
    DTYPES,
    LOSS_MASKS,
    SensParticipant,
    aim_activation_statistics,
    aim_modules,
    final_hidden_states,
    free_memory,
    l2_normalise,
    load_causal_lm,
    logit_distance,
    make_blocks,
    resolve_dtype,
    saliency,
    sens_group,
    sens_statistics,
    sensitivity_pass,
)

__all__ = [
    "DTYPES", "LOSS_MASKS", "REQUIRED_FIELDS", "S1K_FIELDS", "S1K_IDS", "SIDES", "STATS_VERSION", "TEMPLATES",
    "CalibrationRecord", "CalibrationSet", "Encoded", "SensParticipant", "aim_activation_statistics", "aim_modules",
    "cache_key", "cache_load", "cache_save", "encode_pairs", "final_hidden_states", "free_memory", "l2_normalise",
    "load_calibration", "load_causal_lm", "load_s1k", "logit_distance", "make_blocks", "make_pairs", "read_jsonl",
    "resolve_dtype", "resolve_source", "saliency", "select", "sens_group", "sens_statistics", "sensitivity_pass",
]
