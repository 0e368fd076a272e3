"""Where a grid runs: ``local`` (this process, or a local process pool for small CPU models) or ``ray``.

With ``ray`` every merge and every (model, benchmark) evaluation is one Ray task with its own resource request
(``task_resources``): the merges first, each evaluation depending on its merge's object ref, so Ray starts an
evaluation as soon as its model exists and runs independent evaluations side by side on whatever the cluster
has (the CPUs of this machine, several GPUs of one node, the nodes of a Slurm allocation joined by
``ray start``). The content-keyed caches on a shared filesystem are the only state the tasks share: the merge
cache (``grid.materialize``: one lock per merge, complete folders renamed into place) and the generation cache
(``l2s_lib.eval.cache``: locked appends of whole lines), so a retried or duplicated task never corrupts an
entry and a retry generates only the samples its killed attempt did not finish.

Faults: a task whose worker dies (killed, out of memory, a lost node) is retried by Ray up to ``MAX_RETRIES``
times; a task that raises a Python exception (a bad config, a missing model) is not retried, and the grid
fails at once with that exception. We use Ray rather than a scheduler of our own: it is what clusters of ML
researchers already run, Slurm included, and it brings the placement, retries and fractional GPUs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from l2s_lib.errors import ConfigError

EXECUTORS = ("local", "ray")
#: Retries of a task whose worker process died (system failures); Python exceptions are never retried.
MAX_RETRIES = 3
#: The GPU share of an HF evaluation of a small model (below ``SMALL_MODEL_PARAMS``, the organisms): a tiny
#: model leaves a GPU mostly idle, so four evaluations share one. Larger HF models take a whole GPU.
SMALL_MODEL_GPU_FRACTION = 0.25


def check_executor(executor: str) -> str:
    """``executor`` if it is one of ``EXECUTORS``, else a ``ConfigError`` listing them."""
    if executor not in EXECUTORS:
        raise ConfigError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    return executor


def from_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The grid arguments of a notebook's ``EXECUTOR`` and ``RAY_ADDRESS`` parameters ("" address: a Ray of
    this machine, or the one already initialised)."""
    return {"executor": check_executor(params["EXECUTOR"]), "ray_address": params["RAY_ADDRESS"] or None}


def task_resources(kind: str, device: str, eval_kw: Mapping[str, Any], small: bool,
                   gpus_per_task: float | None = None) -> dict[str, float]:
    """The Ray resource request of one task: ``kind`` "merge" or "evaluate", on ``device`` (cpu / cuda[:i]).

    On CPU: one CPU (small models generate on one thread). On CUDA: a vLLM evaluation takes
    ``tensor_parallel_size`` GPUs; an HF evaluation or a merge takes one GPU, or ``SMALL_MODEL_GPU_FRACTION``
    of one for a ``small`` model; ``gpus_per_task`` overrides the GPU count of every CUDA task.
    """
    if not str(device).startswith("cuda"):
        return {"num_cpus": 1, "num_gpus": 0}
    if gpus_per_task is not None:
        gpus = float(gpus_per_task)
    elif kind == "evaluate" and eval_kw.get("backend", "hf") == "vllm":
        gpus = float(eval_kw.get("tensor_parallel_size", 1))
    else:
        gpus = SMALL_MODEL_GPU_FRACTION if small else 1.0
    if gpus <= 0 or (gpus > 1 and not gpus.is_integer()):
        raise ConfigError(f"a CUDA task needs a GPU share in (0, 1] or a whole number of GPUs, got {gpus}")
    # Ray's device index is the task's own: every task sees its GPUs as cuda:0.. (CUDA_VISIBLE_DEVICES).
    return {"num_cpus": 1, "num_gpus": gpus}


def _in_worker(output_root: str | None):
    """Run a task where the driver would write: its output root (results, caches) and quiet progress bars."""
    from transformers.utils import logging as hf_logging

    from l2s_lib import paths

    if output_root is None:
        os.environ.pop(paths.OUTPUT_ROOT_ENV, None)
    else:
        os.environ[paths.OUTPUT_ROOT_ENV] = output_root
    hf_logging.disable_progress_bar()


def _merge_task(entry, device: str, output_root: str | None) -> str:
    from l2s_lib.pipeline import grid

    _in_worker(output_root)
    return str(grid.materialize(entry, device=_task_device(device)))


def _evaluate_task(folder: str, benchmark, device: str, label: str, kw: dict, output_root: str | None):
    from l2s_lib.pipeline import grid

    _in_worker(output_root)
    return grid._evaluate_one(folder, [benchmark], _task_device(device), label, kw)


def _task_device(device: str) -> str:
    # Ray hides every GPU but the task's own: the grid's cuda:3 is this task's cuda:0.
    return "cuda" if str(device).startswith("cuda") else device


def run_ray(entries: Sequence, benchmarks: Sequence, device: str, eval_kw: Mapping[str, Any], *,
            address: str | None = None, gpus_per_task: float | None = None, progress: bool = True) -> list:
    """Run a grid on Ray: per entry, the ``(summary, records)`` of its evaluation on every benchmark, in order.

    ``benchmarks``: resolved ``Benchmark`` objects (so a benchmark registered in this process only reaches the
    workers). Connects to the cluster at ``address`` ("auto": the one ``ray start`` made on this node;
    "ray://host:port" or "host:port": another) unless Ray is initialised already; with no address, starts a
    local Ray on this machine (and shuts it down at the end). Every node must see the repository, the models
    and the output root at the same paths (a shared filesystem). The first failing task's exception is raised
    as it was, after the remaining tasks are cancelled.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    try:
        import ray
    except ImportError as exc:
        raise ConfigError("the ray executor needs Ray: pip install 'l2s-lib[ray]'") from exc
    from l2s_lib import paths
    from l2s_lib.checkpoints import parameter_count
    from l2s_lib.eval.generation import SMALL_MODEL_PARAMS
    from l2s_lib.fingerprint import data_fingerprint

    if not isinstance(eval_kw.get("backend", "hf"), str):
        raise ConfigError("the ray executor needs the backend by name ('hf' or 'vllm'), not a ready backend object")
    started = not ray.is_initialized()
    if started:
        # A Ray of this run alone needs no dashboard; a cluster's is the cluster's business.
        ray.init(address=address) if address else ray.init(include_dashboard=False)
    output_root = os.environ.get(paths.OUTPUT_ROOT_ENV)
    output_root = str(paths.output_root()) if output_root else None
    merge_remote = ray.remote(max_retries=MAX_RETRIES, retry_exceptions=False)(_merge_task)
    eval_remote = ray.remote(max_retries=MAX_RETRIES, retry_exceptions=False)(_evaluate_task)

    def small(path) -> bool:
        try:
            return parameter_count(path) < SMALL_MODEL_PARAMS
        except Exception:  # a hub id not in the cache, a missing folder: the task itself reports it
            return False

    try:
        merges: dict[str, Any] = {}  # identical configs: one merge task
        folders = []
        for e in entries:
            if e.model is not None:
                folders.append(e.model)
                continue
            key = data_fingerprint({"config": dict(e.config)})
            if key not in merges:
                inputs = [m["model"] for m in e.config["models"]]
                res = task_resources("merge", device, eval_kw, all(small(p) for p in inputs), gpus_per_task)
                merges[key] = merge_remote.options(**res).remote(e, device, output_root)
            folders.append(merges[key])
        refs, owner = [], []
        for i, e in enumerate(entries):
            path = e.model if e.model is not None else [m["model"] for m in e.config["models"]][-1]
            res = task_resources("evaluate", device, eval_kw, small(path), gpus_per_task)
            kw = dict(eval_kw) | dict(e.eval)
            for b in benchmarks:
                refs.append(eval_remote.options(**res).remote(folders[i], b, device, e.label, kw, output_root))
                owner.append(i)
        done = _gather(ray, refs, tqdm(total=len(refs), desc="evaluate (ray)", disable=not progress, unit="task"),
                       also_cancel=list(merges.values()))
    finally:
        if started:
            ray.shutdown()
    out = []
    for i in range(len(entries)):
        parts = [done[j] for j in range(len(refs)) if owner[j] == i]
        out.append((pd.concat([s for s, _ in parts], ignore_index=True),
                    pd.concat([r for _, r in parts], ignore_index=True)))
    return out


def _gather(ray, refs: list, bar, also_cancel: Sequence = ()) -> list:
    """The values of ``refs`` in order; on the first failed task, cancel the rest (and the tasks of
    ``also_cancel``, the merges, when still running) and raise its exception."""
    index = {ref: i for i, ref in enumerate(refs)}
    values: list = [None] * len(refs)
    pending = list(refs)
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                try:
                    values[index[ref]] = ray.get(ref)
                except ray.exceptions.RayError as exc:  # a task's exception, or a worker dead past its retries
                    for other in [*pending, *also_cancel]:
                        ray.cancel(other, force=True)  # a finished task's cancel is a no-op
                    cause = getattr(exc, "cause", None)
                    if isinstance(exc, ray.exceptions.RayTaskError) and isinstance(cause, BaseException):
                        raise cause from None  # the task's own exception, as the local executor raises it
                    raise
                bar.update()
    finally:
        bar.close()
    return values
