"""The ray executor of the grid on a local 2-CPU Ray cluster: the same results as the local executor, a worker
killed mid-task retried to the same results, a real error raised once; and the shared caches under concurrent
writers (no Ray needed)."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sys
from pathlib import Path

import pandas as pd
import pytest

from l2s_lib.errors import ConfigError
from l2s_lib.pipeline import catalog, executors, grid

LIMIT = 6
#: Set by the kill test: the first generation-cache append of a worker after it exists kills that worker.
ARM_ENV = "L2S_TEST_KILL_DIR"


def _kill_on_first_append():
    """Ray's worker_process_setup_hook: when the kill test has armed it (a folder holding ``armed``), the first
    generation-cache append of any worker writes ``killed`` (so no later attempt dies) and SIGKILLs its process
    right after the sample reached the file. Every merge attempt is logged to ``merges.log``."""
    from l2s_lib.eval import cache

    original = cache.GenerationCache.append

    def append(self, record):
        original(self, record)
        arm = os.environ.get(ARM_ENV)
        if arm and (Path(arm) / "armed").exists() and not (Path(arm) / "killed").exists():
            (Path(arm) / "killed").write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)

    cache.GenerationCache.append = append

    from l2s_lib.pipeline import grid as grid_mod

    materialize = grid_mod.materialize

    def counted(entry, *args, **kwargs):  # every attempt of a merge task, to count retries
        if os.environ.get(ARM_ENV):
            with open(Path(os.environ[ARM_ENV]) / "merges.log", "a") as f:
                f.write(entry.label + "\n")
        return materialize(entry, *args, **kwargs)

    grid_mod.materialize = counted


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    # Loopback only: Ray otherwise turns 127.0.0.1 into the machine's address (ENABLE_RAY_CLUSTER is read at
    # import and at every address look-up, hence the variable for the processes Ray starts and the attribute).
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray = pytest.importorskip("ray")
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False
    # The hook travels by value: the workers cannot import this test module.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    arm = tmp_path_factory.mktemp("arm")
    os.environ[ARM_ENV] = str(arm)  # the workers the cluster starts inherit it
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
             _temp_dir=str(tmp_path_factory.mktemp("ray")), configure_logging=False,
             runtime_env={"worker_process_setup_hook": _kill_on_first_append})
    try:
        yield arm
    finally:
        ray.shutdown()
        os.environ.pop(ARM_ENV, None)


def _entries():
    pair = catalog.resolve_pair("1m")
    return catalog.pair_entries(pair)[:2] + catalog.method_entries(pair, ["task_arithmetic"])


@pytest.mark.slow
def test_ray_grid_matches_local_and_survives_a_killed_worker(ray_cluster, tmp_path, monkeypatch):
    # Each run has its own output root (caches included), so every run generates for itself.
    monkeypatch.setenv("L2S_OUTPUT_ROOT", str(tmp_path / "local"))
    local = grid.evaluate(_entries(), ["org_easy", "org_levels"], limit=LIMIT, progress=False, workers=1)

    monkeypatch.setenv("L2S_OUTPUT_ROOT", str(tmp_path / "ray"))
    run = grid.evaluate(_entries(), ["org_easy", "org_levels"], limit=LIMIT, progress=False, executor="ray")
    pd.testing.assert_frame_equal(run.summary, local.summary)
    pd.testing.assert_frame_equal(run.records, local.records)
    assert list((tmp_path / "ray" / ".cache" / "l2s" / "merges").glob("task_arithmetic-*/l2s_provenance.json"))

    # A fresh output root: nothing cached, so the armed hook kills the first worker that appends a sample.
    monkeypatch.setenv("L2S_OUTPUT_ROOT", str(tmp_path / "killed"))
    (ray_cluster / "armed").write_text("1")
    try:
        again = grid.evaluate(_entries(), ["org_easy", "org_levels"], limit=LIMIT, progress=False, executor="ray")
    finally:
        (ray_cluster / "armed").unlink()
    assert (ray_cluster / "killed").exists(), "no worker was killed: the test tested nothing"
    pd.testing.assert_frame_equal(again.summary, local.summary)
    pd.testing.assert_frame_equal(again.records, local.records)
    # The killed attempt's sample stayed in the cache and was not generated again: one line per problem.
    for f in (tmp_path / "killed" / ".cache" / "l2s" / "generations").glob("*__*[0-9a-f].jsonl"):
        if f.name.endswith(".grades.jsonl"):
            continue
        ids = [json.loads(line)["idx"] for line in f.read_text().splitlines()]
        assert len(ids) == len(set(ids)) == LIMIT, f.name


@pytest.mark.slow
def test_ray_grid_fails_once_with_the_tasks_own_error(ray_cluster, tmp_path):
    pair = catalog.resolve_pair("1m")
    bad = grid.merge("broken", "task_arithmetic", pair.system1, [str(tmp_path / "no_such_model")])
    with pytest.raises(Exception) as info:
        grid.evaluate([grid.model("S1", pair.system1, "system1"), bad], ["org_easy"], limit=2, progress=False,
                      executor="ray")
    assert "no_such_model" in str(info.value)
    assert not isinstance(info.value, __import__("ray").exceptions.RayError), "the task's own error, unwrapped"
    attempts = (ray_cluster / "merges.log").read_text().splitlines()
    assert attempts.count("broken") == 1, attempts  # a Python exception is not retried


def test_executor_choice_and_resources_are_checked():
    with pytest.raises(ConfigError, match="executor must be one of local, ray"):
        grid.evaluate([], ["org_easy"], executor="dask")
    assert executors.task_resources("evaluate", "cpu", {}, small=True) == {"num_cpus": 1, "num_gpus": 0}
    assert executors.task_resources("evaluate", "cuda", {"backend": "vllm", "tensor_parallel_size": 4},
                                    small=False)["num_gpus"] == 4
    assert executors.task_resources("evaluate", "cuda:1", {}, small=True)["num_gpus"] == \
        executors.SMALL_MODEL_GPU_FRACTION
    assert executors.task_resources("merge", "cuda", {}, small=False)["num_gpus"] == 1
    assert executors.task_resources("evaluate", "cuda", {}, small=True, gpus_per_task=0.5)["num_gpus"] == 0.5
    with pytest.raises(ConfigError, match="GPU share"):
        executors.task_resources("evaluate", "cuda", {}, small=False, gpus_per_task=1.5)


def _append_many(path: str, writer: int, n: int) -> None:
    from l2s_lib.eval.cache import GenerationCache

    for i in range(n):
        # Long lines: several buffers' worth each, where unlocked buffered appends would interleave.
        GenerationCache._append(Path(path), {"idx": f"{writer}-{i}", "response": str(writer) * 50_000})


def test_generation_cache_appends_from_parallel_writers_stay_whole_lines(tmp_path):
    path = tmp_path / "gen.jsonl"
    path.write_bytes(b'{"idx": "done"}\n{"idx": "cut-by-a-ki')  # a line a killed writer left half-written
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(str(path), w, 20)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert all(p.exitcode == 0 for p in procs)
    ids = [json.loads(line)["idx"] for line in path.read_text().splitlines()]  # every line parses
    assert ids[0] == "done" and sorted(ids[1:]) == sorted(f"{w}-{i}" for w in range(3) for i in range(20))


def _materialize(entry, root: str) -> str:
    return str(grid.materialize(entry, cache_root=root))


def test_one_merge_asked_twice_in_parallel_ends_as_one_complete_folder(tiny_pair, tmp_path):
    s1, s2 = tiny_pair
    entry = grid.merge("TA", "task_arithmetic", s1, [s2], model_params={"weight": 0.5})
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        outs = pool.starmap(_materialize, [(entry, str(tmp_path))] * 2)
    assert outs[0] == outs[1]
    made = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    assert made == [Path(outs[0])], made  # no second folder, no leftover temporary folder
    prov = json.loads((Path(outs[0]) / "l2s_provenance.json").read_text())
    assert prov["method"]["name"] == "task_arithmetic"
    from l2s_lib.checkpoints import ShardedWriter
    from l2s_lib.errors import CheckpointError

    # Without the lock (a filesystem that has none) the rename still lets only one writer in.
    with pytest.raises(CheckpointError, match="another writer"):
        with ShardedWriter(tmp_path / "late", overwrite=False) as w:
            w.plan([])
            (tmp_path / "late").mkdir()
            (tmp_path / "late" / "x").write_text("the other writer's file")
            w.commit()
    assert (tmp_path / "late" / "x").read_text() == "the other writer's file"


def test_the_executor_parameters_keep_the_runs_folder():
    """EXECUTOR and RAY_ADDRESS say where a run executes, not what it computes: `l2s run 01 -p EXECUTOR=ray`
    writes the default run's folder; any other change still gets its own."""
    from l2s_lib.studies import notebooks

    defaults = notebooks.notebook_parameters("01_merge_methods")
    assert defaults["EXECUTOR"] == "local" and defaults["RAY_ADDRESS"] == ""
    assert notebooks.run_name("01_merge_methods", defaults | {"EXECUTOR": "ray", "RAY_ADDRESS": "auto"}) == "default"
    assert notebooks.run_name("01_merge_methods", defaults | {"EXECUTOR": "ray", "LIMIT": 3}) != "default"
    assert executors.from_params({"EXECUTOR": "ray", "RAY_ADDRESS": ""}) == {"executor": "ray", "ray_address": None}
    with pytest.raises(ConfigError, match="executor must be one of"):
        executors.from_params({"EXECUTOR": "slurm", "RAY_ADDRESS": ""})
