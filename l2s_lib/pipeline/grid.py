"""Grids of models and merges, evaluated on benchmarks, with merges and generations cached.

A study is a list of ``Entry``: a plain model (System 1, System 2, the DPO baseline) or a merge described by
a mergekit-style config. ``evaluate`` materialises each merge once (under ``paths.cache_dir()/merges``, keyed
by the inputs' content fingerprints and the resolved config, so every notebook that asks for the same merge
reuses it), evaluates every entry through ``l2s_lib.eval.evaluate`` (whose generation cache makes a re-run
instant), and returns one tidy summary with the entry's label, role, method and hyper-parameters as columns.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from l2s_lib import organisms, paths
from l2s_lib.errors import CheckpointError
from l2s_lib.files import file_lock
from l2s_lib.fingerprint import data_fingerprint, model_fingerprint

# The pipeline serves both worlds: the organism benchmarks and prompts are registered with eval here, in the
# layer above both, so every process that runs a grid (spawned workers included) knows them.
organisms.register_eval()

ROLES = ("system1", "system2", "dpo", "merge")


@dataclass(frozen=True)
class Entry:
    """One row of a study: a model to evaluate, given by path or by merge config.

    ``label``: the name in tables and figures; ``role``: system1 / system2 / dpo / merge; ``model``: a path
    or hub id (plain models); ``config``: a merge config dict (merges); ``eval``: per-entry overrides of the
    evaluation (``prompt``, ``max_new_tokens``); ``meta``: values copied into the summary (hyper-parameters).
    """

    label: str
    role: str
    model: str | None = None
    config: Mapping[str, Any] | None = None
    eval: Mapping[str, Any] = field(default_factory=dict)
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {self.role!r}")
        if (self.model is None) == (self.config is None):
            raise ValueError(f"entry {self.label!r}: give exactly one of model= or config=")

    @property
    def method(self) -> str:
        return self.config["merge_method"] if self.config else self.role


def model(label: str, path: str | Path, role: str, **eval_overrides) -> Entry:
    """A plain model entry (``eval_overrides``: prompt, max_new_tokens ...)."""
    return Entry(label=label, role=role, model=str(path), eval=eval_overrides)


def merge(label: str, method: str, base: str | Path | None, models: Sequence[str | Path],
          params: Mapping[str, Any] | None = None, model_params: Mapping[str, Any] | Sequence[Mapping] | None = None,
          policies: Mapping[str, Any] | None = None, seed: int = 0, dtype: str | None = None,
          meta: Mapping[str, Any] | None = None, **eval_overrides) -> Entry:
    """A merge entry. ``model_params``: one mapping for every model, or one per model."""
    if model_params is None or isinstance(model_params, Mapping):
        per_model = [dict(model_params or {}) for _ in models]
    else:
        per_model = [dict(p) for p in model_params]
    config: dict[str, Any] = {
        "merge_method": method,
        "base_model": str(base) if base is not None else None,
        "models": [{"model": str(m), "parameters": p} for m, p in zip(models, per_model)],
        "parameters": dict(params or {}),
        "seed": seed,
        "policies": dict(policies or {}),
    }
    if base is None:
        del config["base_model"]
    if dtype:
        config["dtype"] = dtype
    shown = dict(meta or {}) | {k: v for k, v in (params or {}).items() if isinstance(v, (int, float, str))}
    if len(per_model) == 1:
        shown |= {k: v for k, v in per_model[0].items() if isinstance(v, (int, float))}
    return Entry(label=label, role="merge", config=config, eval=eval_overrides, meta=shown)


def merge_key(config: Mapping[str, Any], device: str = "cpu") -> str:
    """Cache key of a merge: the resolved config with each input replaced by its content fingerprint, and the
    type of the device that computes it (``cpu`` or ``cuda``: their kernels round differently, so the same
    config may give other bits; the GPU's index does not matter)."""
    from l2s_lib.merge.config import load_config

    cfg = load_config(dict(config)).to_dict()
    refs = ([cfg["base_model"]] if cfg.get("base_model") else []) + [m["model"] for m in cfg["models"]]
    prints = {ref: model_fingerprint(ref) if Path(ref).is_dir() else ref for ref in refs}
    keyed = dict(cfg)
    # The code that computes a merge is part of what it is (calibration statistics have their own version).
    from l2s_lib import __version__
    from l2s_lib.merge.calibration import STATS_VERSION

    keyed["code"] = {"l2s_lib": __version__, "calibration_stats": STATS_VERSION}
    keyed["base_model"] = prints.get(cfg.get("base_model"))
    keyed["models"] = [{"model": prints[m["model"]], "parameters": m["parameters"]} for m in cfg["models"]]
    import torch

    keyed["device"] = torch.device(device).type
    return data_fingerprint(keyed)


def materialize(entry: Entry, device: str = "cpu", progress: bool = False, cache_root: str | Path | None = None) -> Path:
    """The folder of the entry's model: its path, or the cached merge (made now if missing)."""
    if entry.model is not None:
        return Path(entry.model)
    from l2s_lib.merge.driver import merge as run_merge

    root = Path(cache_root) if cache_root else paths.cache_dir() / "merges"
    out = root / f"{entry.config['merge_method']}-{merge_key(entry.config, device)}"
    if (out / "l2s_provenance.json").is_file():
        return out
    root.mkdir(parents=True, exist_ok=True)
    # Workers of a grid (Ray tasks, a retried task beside a slow first attempt) may ask for the same merge at
    # once: the lock makes one of them merge while the others wait and then find the finished folder. The
    # driver's write-then-rename keeps the folder whole even where the filesystem has no locks.
    with file_lock(root / f".{out.name}.lock"):
        if (out / "l2s_provenance.json").is_file():
            return out
        if out.exists():  # a folder without provenance is not one the driver finished: redo it
            shutil.rmtree(out)
        try:
            return run_merge(dict(entry.config), out, device=device, overwrite=False, progress=progress)
        except CheckpointError:
            if (out / "l2s_provenance.json").is_file():  # a writer without the lock finished it first
                return out
            raise


@dataclass
class GridResult:
    """``summary``: the tidy summary of every entry (plus label/role/method/meta columns); ``records``:
    per-sample records of every entry; ``entries``: what was run."""

    summary: pd.DataFrame
    records: pd.DataFrame
    entries: list[Entry]

    def labels(self, role: str | None = None) -> list[str]:
        return [e.label for e in self.entries if role is None or e.role == role]

    def roles(self) -> dict[str, str]:
        return {e.label: e.role for e in self.entries}


def _evaluate_one(path: str, benchmarks, device: str, label: str, kw: dict):
    """One entry's evaluation (runs in a worker process when the grid is evaluated in parallel)."""
    from transformers.utils import logging as hf_logging

    from l2s_lib.eval import evaluate as run_eval

    hf_logging.disable_progress_bar()
    res = run_eval(path, benchmarks, device=device, model_name=label, progress=False, **kw)
    return res.summary, res.records


def _default_workers(paths_: Sequence[Path], device: str, eval_kw: Mapping[str, Any]) -> int:
    """Parallel processes for a CPU grid of small models: one per core (each generates on one thread, see
    ``l2s_lib.eval.generation.SMALL_MODEL_PARAMS``); a GPU, a ready backend object or a large model: one."""
    import os

    from l2s_lib.eval.generation import SMALL_MODEL_PARAMS
    from l2s_lib.checkpoints import parameter_count

    if not str(device).startswith("cpu") or not isinstance(eval_kw.get("backend", "hf"), str):
        return 1
    if any(not Path(p).is_dir() or parameter_count(p) >= SMALL_MODEL_PARAMS for p in paths_):
        return 1
    return max(1, min(len(paths_), os.cpu_count() or 1))


def evaluate(entries: Sequence[Entry], benchmarks: Sequence[str] | str, *, device: str = "cpu",
             progress: bool = True, workers: int | None = None, executor: str = "local",
             ray_address: str | None = None, gpus_per_task: float | None = None, **eval_kw) -> GridResult:
    """Evaluate every entry on ``benchmarks`` (``eval_kw`` go to ``l2s_lib.eval.evaluate``; an entry's own
    ``eval`` overrides win). Labels must be unique.

    ``executor="local"``: merges are made first, in order; the evaluations then run in ``workers`` processes
    (default: one per CPU core for small models on CPU, else one). ``executor="ray"``: every merge and every
    (entry, benchmark) evaluation is a Ray task on the cluster at ``ray_address`` (``executors.run_ray``;
    ``gpus_per_task`` overrides the GPU share of CUDA tasks). Results depend on neither: each evaluation is
    greedy and independent, and the generation cache is one file per model and benchmark.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from tqdm.auto import tqdm
    from transformers.utils import logging as hf_logging

    from l2s_lib.pipeline import executors

    labels = [e.label for e in entries]
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise ValueError(f"entry labels must be unique; repeated: {dupes}")
    if executors.check_executor(executor) == "ray":
        if workers is not None:
            raise ValueError("workers= is for the local executor; with ray the cluster's resources decide")
        from l2s_lib.eval.runner import _parse_benchmarks

        # Resolved here: a benchmark registered in this process only (a test's, a notebook's) reaches the workers.
        outputs = executors.run_ray(list(entries), _parse_benchmarks(benchmarks), device, eval_kw,
                                    address=ray_address or None, gpus_per_task=gpus_per_task, progress=progress)
        return _result(entries, outputs)
    if gpus_per_task is not None:
        raise ValueError("gpus_per_task= is for the ray executor")
    # One bar per phase: the per-model bars of merges, calibration passes and transformers' weight loading
    # would bury a notebook's output.
    hf_bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        folders = [str(materialize(e, device=device))
                   for e in tqdm(entries, desc="merges", disable=not progress, unit="model")]
        jobs = [(folders[i], benchmarks, device, e.label, dict(eval_kw) | dict(e.eval)) for i, e in enumerate(entries)]
        n = workers or _default_workers(folders, device, eval_kw)
        bar = tqdm(total=len(jobs), desc="evaluate", disable=not progress, unit="model")
        if n == 1:
            outputs = []
            for job in jobs:
                outputs.append(_evaluate_one(*job))
                bar.update()
        else:
            with ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn")) as pool:
                futures = [pool.submit(_evaluate_one, *job) for job in jobs]
                for fut in futures:
                    fut.result()
                    bar.update()
                outputs = [f.result() for f in futures]
        bar.close()
    finally:
        if hf_bars:
            hf_logging.enable_progress_bar()
    return _result(entries, outputs)


def _result(entries: Sequence[Entry], outputs: Sequence) -> GridResult:
    """The grid's result from each entry's ``(summary, records)``, with its role, method and meta as columns."""
    summaries, records = [], []
    for entry, (summary, recs) in zip(entries, outputs):
        extra = {"role": entry.role, "method": entry.method} | dict(entry.meta)
        summaries.append(summary.assign(**extra))
        records.append(recs.assign(role=entry.role, method=entry.method))
    return GridResult(pd.concat(summaries, ignore_index=True), pd.concat(records, ignore_index=True), list(entries))
