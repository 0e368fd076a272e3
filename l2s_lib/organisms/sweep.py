"""``l2s organisms sweep``: train (style, size, seed) jobs in parallel processes and run the merge study on each.

One process per job (deterministic training needs its own CUDA context, see ``determinism``); a few small
training processes share a GPU well (small models are launch-bound). Each job appends each model's rows to
``OUT/study.csv`` as soon as they are measured (whole lines in one ``write``, so concurrent jobs do not interleave),
its training log to ``OUT/train_logs.jsonl`` and one record per job to ``OUT/jobs.jsonl`` (command, library
versions, device, determinism settings, the sha256 of every checkpoint, timings); ``OUT/sweep.json`` records the
command of the whole sweep. A job stopped part-way keeps the rows it measured.

    l2s organisms sweep --jobs tiring:1m:0 tiring:6m:1 tiring:100m:0:0.5 --gpus 1 --out OUT --ckpt /tmp/org \\
        --device cuda

A job is ``style:size:seed`` with an optional fourth field, a factor on every stage's steps; ``--ladder SIZES``
adds ``tiring:SIZE:SEED`` for every size and ``--seeds``. With ``--gpus N`` job i runs on GPU ``i % N`` (one
``CUDA_VISIBLE_DEVICES`` per process). The defaults are the settings of the committed ladder runs (full recipe,
the equal-rate control at 1m and 6m, 100 study problems per level drawn with seed 1000, greedy, 300 new tokens).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from l2s_lib.organisms import configs, determinism, study, train

FIELDS = ["style", "size", "seed", "model", "alpha", "k", "level", "n", "correct", "first_correct", "flip",
          "length", "reflect", "weights_sha256"]
#: Roles whose study rows come from a trained checkpoint (the rest are merges or prefilled prompts).
ROLES = ("system1", "system2", "dpo", "system2_equal")
#: Sizes trained with the equal-rate control System 2 (it costs a third more training; the large sizes go without).
CONTROL_SIZES = ("1m", "6m")
SHA_CHARS = 16  # the CSV's weights_sha256 column: a prefix of the full hash in jobs.jsonl


def _append(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def run_job(style: str, size: str, seed: int, out: Path, ckpt_root: Path, device: str, steps_factor: float,
            per_level: int, eval_seed: int, deterministic: bool = True, train_only: bool = False,
            batch_size: int = 512) -> dict:
    """Trains one (style, size, seed) organism under ``ckpt_root`` and runs the merge study on it (unless
    ``train_only``); appends its record to ``out/jobs.jsonl`` and returns it."""
    t0 = time.time()
    recipe = configs.DEFAULT_RECIPE if steps_factor == 1 else configs.DEFAULT_RECIPE.scaled(steps_factor)
    ck = ckpt_root / f"{style}_{size}_s{seed}"
    train.train_organism(size, ck, seed=seed, device=device, s1_style=style, recipe=recipe,
                         control=size in CONTROL_SIZES, progress=False, deterministic=deterministic)
    t_train = time.time() - t0
    print(f"trained {style}:{size}:{seed} in {t_train:.0f}s", flush=True)
    log = json.loads((ck / "train_log.json").read_text())
    log.update(train_seconds=round(t_train, 1), style=style, steps_factor=steps_factor)
    _append(out / "train_logs.jsonl", json.dumps(log) + "\n")
    t1 = time.time()
    if not train_only:
        determinism.configure(deterministic, warn_only=True)
        study_checkpoints(ck, style, size, seed, out, device, per_level, eval_seed,
                          samples_to=out / "samples.jsonl", batch_size=batch_size)
    job = {"job": f"{style}:{size}:{seed}" + ("" if steps_factor == 1 else f":{steps_factor}"),
           "deterministic": deterministic, "train_only": train_only, "train_seconds": round(t_train, 1),
           "stage_seconds": {r: s["seconds"] for r, s in log["stages"].items()},
           "study_seconds": None if train_only else round(time.time() - t1, 1), "sha256": log["sha256"],
           "determinism": log["determinism"], "environment": log["environment"], "per_level": per_level,
           "eval_seed": eval_seed, "steps_factor": steps_factor}
    _append(out / "jobs.jsonl", json.dumps(job) + "\n")
    print(f"done {job['job']} train {t_train:.0f}s total {time.time() - t0:.0f}s", flush=True)
    return job


def study_jobs(present: list[str]) -> list[tuple[str, float | str, float | str]]:
    """(model, alpha, k) of every study row of an organism folder holding the roles ``present``."""
    jobs = [(r, "", "") for r in present] + [("system2_forced", "", "")]
    jobs += [("ta", a, "") for a in study.TA_ALPHAS] + [("ties", a, k) for k, a in study.TIES_SETTINGS]
    if "system2_equal" in present:
        jobs += [("ta_equal", a, "") for a in study.CONTROL_ALPHAS]
    return jobs


def study_checkpoints(ck: Path, style: str, size: str, seed: int, out: Path, device: str = "cpu",
                      per_level: int = 100, eval_seed: int = 1000, samples_to: Path | None = None,
                      roles: tuple[str, ...] = ROLES, progress: bool = False, batch_size: int = 512) -> None:
    """The merge study of one organism folder ``ck`` (holding ``system1``, ``system2``, ...): per level, each role
    present, System 2 with a prefilled planted-error first pass (prompt ``organism_forced``), TA over
    ``study.TA_ALPHAS``, TIES over ``study.TIES_SETTINGS`` and, when ``system2_equal`` exists, TA toward it over
    ``study.CONTROL_ALPHAS``. Merges by the engine (fp32, on the CPU), generation and grading by
    ``l2s_lib.eval.evaluate`` on ``device``. Appends each model's rows to ``out/study.csv`` when measured."""
    from tqdm.auto import tqdm

    from l2s_lib.organisms import prompts

    out.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.DictWriter(buf, FIELDS)
    if not (out / "study.csv").exists():
        w.writeheader()
    samples = []
    present = [r for r in roles if (ck / r / "config.json").exists()]
    with tempfile.TemporaryDirectory(prefix="l2s_study_") as tmp:
        bench = study.study_benchmark(eval_seed, per_level, tmp)
        for name, alpha, k in tqdm(study_jobs(present), desc=f"study {ck.name}", disable=not progress):
            prefilled, prompt = None, "organism"
            if name in present:
                folder = ck / name
            elif name == "system2_forced":
                folder, prompt, prefilled = ck / "system2", "organism_forced", prompts.forced_prefix
            else:
                target = ck / ("system2_equal" if name == "ta_equal" else "system2")
                cfg = study.ties_config(ck / "system1", target, k, alpha) if name == "ties" \
                    else study.ta_config(ck / "system1", target, alpha)
                folder = study.merge(cfg, Path(tmp) / "merged")
            records = study.evaluate(folder, bench, prompt=prompt, device=device, batch_size=batch_size)
            rows = study.rows_from_records(records, prefilled)
            sha = determinism.weights_sha256(folder)[:SHA_CHARS]
            for s in study.summarize(rows):
                w.writerow({"style": style, "size": size, "seed": seed, "model": name, "alpha": alpha, "k": k,
                            "weights_sha256": sha,
                            **{f: (round(v, 4) if isinstance(v, float) else v) for f, v in s.items()}})
            # Appended after every model (one write of whole lines), so a job stopped part-way keeps what it measured.
            _append(out / "study.csv", buf.getvalue())
            buf.seek(0)
            buf.truncate()
            if name in ROLES + ("system2_forced",) or alpha in (0.7, 0.8) or k == 0.8:
                for lv in (1, 3, 5):
                    r = next(r for r in rows if r["level"] == lv)
                    samples.append({"job": f"{style}_{size}_s{seed}", "model": name, "alpha": alpha, "k": k,
                                    "level": lv, "text": r["text"]})
    if samples_to is not None:
        _append(samples_to, "".join(json.dumps(s) + "\n" for s in samples))


def pick_style(study_csv: Path, size: str) -> str:
    """The System 1 style to ship at ``size``, by a rule fixed before the results were seen (design 1).

    For each style and seed: the best merge (TA or TIES) among those at least 30% shorter than System 2 on
    ``org_levels``-like problems, scored by its accuracy minus System 2's; the style with the higher mean
    over seeds wins (ties: ``compressed``, the prototypes' design).
    """
    import pandas as pd

    df = pd.read_csv(study_csv)
    df = df[(df["size"] == size) & (df["level"] == "all")]
    scores = {}
    for style, g in df.groupby("style"):
        per_seed = []
        for _, gs in g.groupby("seed"):
            s2 = gs[gs.model == "system2"].iloc[0]
            m = gs[gs.model.isin(["ta", "ties"]) & (gs.length <= 0.7 * s2.length)]
            per_seed.append((m.correct.max() - s2.correct) if len(m) else -1.0)
        scores[style] = sum(per_seed) / len(per_seed)
    print("style scores:", scores, flush=True)
    return max(sorted(scores), key=lambda s: (scores[s], s == "compressed"))


def parse_job(job: str, default_factor: float = 1.0) -> tuple[str, str, int, float]:
    """``style:size:seed[:steps_factor]`` -> (style, size, seed, steps factor)."""
    from l2s_lib.errors import ConfigError
    from l2s_lib.organisms import world

    parts = job.split(":")
    if len(parts) not in (3, 4) or parts[0] not in world.S1_STYLES or parts[1] not in configs.SIZES \
            or not parts[2].isdigit():
        raise ConfigError(f"bad job {job!r}: expected style:size:seed[:steps_factor] with style in "
                          f"{world.S1_STYLES}, size in {tuple(configs.SIZES)} and a seed >= 0")
    return parts[0], parts[1], int(parts[2]), float(parts[3]) if len(parts) == 4 else default_factor


def job_list(args) -> list[str]:
    """The jobs of a sweep: ``--jobs`` plus ``tiring:SIZE:SEED`` for each ``--ladder`` size and ``--seeds``."""
    from l2s_lib.errors import ConfigError
    from l2s_lib.organisms import world

    jobs = list(args.jobs or [])
    for size in args.ladder or []:
        jobs += [f"{world.DEFAULT_S1_STYLE}:{size}:{s}" for s in args.seeds]
    if not jobs:
        raise ConfigError("no job: give --jobs style:size:seed ... or --ladder SIZE ... (with --seeds)")
    for j in jobs:
        parse_job(j)
    return jobs


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--jobs", nargs="+", default=None, help="style:size:seed[:steps_factor] ...")
    ap.add_argument("--ladder", nargs="+", default=None, choices=list(configs.SIZES),
                    help="add the shipped style's jobs for these sizes, one per --seeds")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3], help="training seeds of --ladder")
    ap.add_argument("--out", type=Path, required=True, help="folder of study.csv, jobs.jsonl, train_logs.jsonl")
    ap.add_argument("--ckpt", type=Path, required=True, help="folder for the trained checkpoints")
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    ap.add_argument("--steps-factor", type=float, default=1.0, help="multiply every stage's steps (quick runs)")
    ap.add_argument("--per-level", type=int, default=100, help="study problems per level (default 100)")
    ap.add_argument("--eval-seed", type=int, default=1000, help="seed of the study problem set (default 1000)")
    ap.add_argument("--batch-size", type=int, default=512, help="generation batch of the study (default 512)")
    ap.add_argument("--gpus", type=int, default=0, help="spread the jobs over this many GPUs (round robin)")
    ap.add_argument("--deadline", type=float, default=0, help="seconds after which unfinished jobs are killed")
    ap.add_argument("--nondeterministic", action="store_true",
                    help="train with PyTorch's default (fast, unrepeatable) kernels, to measure what determinism costs")
    ap.add_argument("--train-only", action="store_true", help="train and record hashes, no merge study")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # a worker process: the single job


def run(args) -> int:
    """Runs the sweep of ``args`` (see ``add_arguments``): one worker process per job, or the job itself."""
    from l2s_lib.errors import ConfigError

    if args.steps_factor <= 0 or args.per_level < 1 or args.batch_size < 1:
        raise ConfigError("--steps-factor must be > 0, --per-level and --batch-size >= 1")
    jobs = job_list(args)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.one:
        style, size, seed, factor = parse_job(jobs[0], args.steps_factor)
        run_job(style, size, seed, args.out, args.ckpt, args.device, factor, args.per_level, args.eval_seed,
                deterministic=not args.nondeterministic, train_only=args.train_only, batch_size=args.batch_size)
        return 0
    if not (args.out / "study.csv").exists():
        _append(args.out / "study.csv", ",".join(FIELDS) + "\n")
    from l2s_lib import provenance

    record = {"command": getattr(args, "command_line", None) or shlex.join(sys.argv), "jobs": jobs,
              "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "git": provenance.git_sha(),
              "versions": provenance.versions(), "deterministic": not args.nondeterministic}
    (args.out / "sweep.json").write_text(json.dumps(record, indent=1) + "\n")
    args.ckpt.mkdir(parents=True, exist_ok=True)
    procs = []
    for i, job in enumerate(jobs):
        style, size, seed, factor = parse_job(job, args.steps_factor)
        cmd = [sys.executable, "-m", "l2s_lib.organisms.sweep", "--one", "--jobs", job, "--out", str(args.out),
               "--ckpt", str(args.ckpt), "--device", args.device, "--steps-factor", str(factor),
               "--per-level", str(args.per_level), "--eval-seed", str(args.eval_seed),
               "--batch-size", str(args.batch_size)]
        cmd += ["--nondeterministic"] * args.nondeterministic + ["--train-only"] * args.train_only
        # One job per process: its own CUDA context, started with the cuBLAS workspace setting in place.
        env = dict(os.environ, OMP_NUM_THREADS="1")
        if not args.nondeterministic:
            env["CUBLAS_WORKSPACE_CONFIG"] = determinism.CUBLAS_WORKSPACE
        if args.gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(i % args.gpus)
        log = open(args.ckpt / f"log_{job.replace(':', '_')}.txt", "w")
        procs.append((job, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)))
    rc, t0 = 0, time.time()
    for job, p in procs:
        try:
            rc |= p.wait(timeout=max(1.0, args.deadline - (time.time() - t0))) if args.deadline else p.wait()
        except subprocess.TimeoutExpired:
            p.kill()  # past the deadline: this job's remaining rows are lost, the others are kept
            p.wait()
            rc |= 1
        print(f"{job}: exit {p.returncode} at {time.time() - t0:.0f}s", flush=True)
    if not args.train_only:
        from l2s_lib.organisms import report

        print(f"report: {report.write_report(args.out / 'study.csv', args.out / 'report.md')}", flush=True)
    return rc


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m l2s_lib.organisms.sweep", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(ap)
    return run(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
