"""The design sweep: train (style, size, seed) jobs in parallel processes and run the merge study on each.

Built for one or a few GPUs (a few small training processes share a GPU well: small models are launch-bound;
design 2 ran 4 per H200 at 1m/6m and 2 at 30m/100m, see data/organisms/README.md), but runs on CPU too. Each job
appends each model's rows to ``OUT/study.csv`` as soon as they are measured (whole lines in one ``write``, so
concurrent jobs do not interleave) and its training log to ``OUT/train_logs.jsonl``; a job stopped part-way keeps
the rows it measured.

    python -m l2s_lib.organisms.sweep --jobs tiring:1m:0 tiring:6m:1 tiring:100m:0:0.5 --gpus 2 \
        --out OUT --ckpt /tmp/org --device cuda

A job is ``style:size:seed`` with an optional fourth field, a factor on every stage's steps. With ``--gpus N``
job i runs on GPU ``i % N`` (one ``CUDA_VISIBLE_DEVICES`` per process).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from l2s_lib.organisms import configs, study, train

FIELDS = ["style", "size", "seed", "model", "alpha", "k", "level", "n", "correct", "first_correct", "flip",
          "length", "reflect"]
MAX_NEW = 300  # System 2's longest target (level 5, planted error, tie-break pass) is about 200 tokens


def _append(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def run_job(style: str, size: str, seed: int, out: Path, ckpt_root: Path, device: str, steps_factor: float,
            per_level: int, eval_seed: int) -> None:
    """Trains one (style, size, seed) organism under ``ckpt_root`` and runs the merge study on it."""
    t0 = time.time()
    recipe = configs.DEFAULT_RECIPE if steps_factor == 1 else configs.DEFAULT_RECIPE.scaled(steps_factor)
    ck = ckpt_root / f"{style}_{size}_s{seed}"
    # The equal-rate control System 2 costs a third more training; the large sizes go without it.
    control = size in ("1m", "6m")
    train.train_organism(size, ck, seed=seed, device=device, s1_style=style, recipe=recipe,
                         control=control, progress=False)
    t_train = time.time() - t0
    print(f"trained {style}:{size}:{seed} in {t_train:.0f}s", flush=True)
    log = json.loads((ck / "train_log.json").read_text())
    log.update(train_seconds=round(t_train, 1), style=style, steps_factor=steps_factor)
    _append(ckpt_root / "train_logs.jsonl", json.dumps(log) + "\n")
    study_checkpoints(ck, style, size, seed, out, device, per_level, eval_seed, samples_to=ckpt_root / "samples.jsonl")
    print(f"done {style}:{size}:{seed} train {t_train:.0f}s total {time.time() - t0:.0f}s", flush=True)


def study_checkpoints(ck: Path, style: str, size: str, seed: int, out: Path, device: str = "cpu",
                      per_level: int = 100, eval_seed: int = 1000, samples_to: Path | None = None,
                      roles: tuple[str, ...] = ("system1", "system2", "dpo", "system2_equal"),
                      progress: bool = False) -> None:
    """The merge study of one organism folder ``ck`` (holding ``system1``, ``system2``, ...): greedy metrics per
    level of each role present, System 2 with forced first-pass errors, TA over ``TA_ALPHAS``, TIES over
    ``TIES_SETTINGS`` and, when ``system2_equal`` exists, TA toward it over ``CONTROL_ALPHAS``. Appends each
    model's rows to ``out/study.csv`` as soon as they are measured."""
    from tqdm.auto import tqdm

    dev = torch.device(device)
    problems = study.study_problems(eval_seed, per_level)
    model = train.load_model(ck / "system1", dev)
    buf = io.StringIO()
    w = csv.DictWriter(buf, FIELDS)
    if not (out / "study.csv").exists():
        out.mkdir(parents=True, exist_ok=True)
        w.writeheader()
    samples = []

    def record(name, rows, alpha="", k=""):
        for s in study.summarize(rows):
            w.writerow({"style": style, "size": size, "seed": seed, "model": name, "alpha": alpha, "k": k,
                        **{f: (round(v, 4) if isinstance(v, float) else v) for f, v in s.items()}})
        # Appended after every model (one write of whole lines), so a job stopped part-way keeps what it measured.
        _append(out / "study.csv", buf.getvalue())
        buf.seek(0)
        buf.truncate()
        if name in ("system1", "system2", "dpo", "system2_equal", "system2_forced") or alpha in (0.7, 0.8) or k == 0.8:
            for lv in (1, 3, 5):
                r = next(r for r in rows if r["level"] == lv)
                samples.append({"job": f"{style}_{size}_s{seed}", "model": name, "alpha": alpha, "k": k,
                                "level": lv, "text": r["text"]})

    def eval_state(sd):
        model.load_state_dict(sd, strict=False)
        model.tie_weights()
        return study.evaluate_rows(model, problems, batch_size=512, max_new_tokens=MAX_NEW)

    present = [r for r in roles if (ck / r / "config.json").exists()]
    jobs = [(r, None, None) for r in present] + [("system2_forced", None, None)]
    jobs += [("ta", a, None) for a in study.TA_ALPHAS] + [("ties", a, k) for k, a in study.TIES_SETTINGS]
    if "system2_equal" in present:
        jobs += [("ta_equal", a, None) for a in study.CONTROL_ALPHAS]
    a = study.load_state(ck / "system1")
    b = study.load_state(ck / "system2")
    beq = study.load_state(ck / "system2_equal") if "system2_equal" in present else None
    for name, alpha, k in tqdm(jobs, desc=f"study {ck.name}", disable=not progress):
        if name in present:
            record(name, eval_state(study.load_state(ck / name)))
        elif name == "system2_forced":
            model.load_state_dict(b, strict=False)
            model.tie_weights()
            record(name, study.forced_error_rows(model, problems, seed=eval_seed, batch_size=512,
                                                 max_new_tokens=MAX_NEW))
        elif name == "ta":
            record(name, eval_state(study.merge_ta(a, b, alpha)), alpha=alpha)
        elif name == "ties":
            record(name, eval_state(study.merge_ties(a, b, k, alpha)), alpha=alpha, k=k)
        else:
            record(name, eval_state(study.merge_ta(a, beq, alpha)), alpha=alpha)
    if samples_to is not None:
        _append(samples_to, "".join(json.dumps(s) + "\n" for s in samples))


def pick_style(study_csv: Path, size: str) -> str:
    """The System 1 style to ship at ``size``, by a rule fixed before the results were seen.

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
    if len(parts) not in (3, 4) or parts[0] not in world.S1_STYLES or parts[1] not in configs.SIZES:
        raise ConfigError(f"bad job {job!r}: expected style:size:seed[:steps_factor] with style in "
                          f"{world.S1_STYLES} and size in {tuple(configs.SIZES)}")
    return parts[0], parts[1], int(parts[2]), float(parts[3]) if len(parts) == 4 else default_factor


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--jobs", nargs="+", required=True, help="style:size:seed ...")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--ckpt", type=Path, required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--steps-factor", type=float, default=1.0)
    ap.add_argument("--per-level", type=int, default=100)
    ap.add_argument("--eval-seed", type=int, default=1000)
    ap.add_argument("--gpus", type=int, default=0, help="spread the jobs over this many GPUs (round robin)")
    ap.add_argument("--deadline", type=float, default=0, help="seconds after which unfinished jobs are killed")
    ap.add_argument("--one", action="store_true", help="run the single job in this process")
    ap.add_argument("--pick", default=None, help="print the style to ship at this size (from OUT/study.csv)")
    args = ap.parse_args(argv)
    if args.pick:
        print(pick_style(args.out / "study.csv", args.pick))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    if args.one:
        style, size, seed, factor = parse_job(args.jobs[0], args.steps_factor)
        run_job(style, size, seed, args.out, args.ckpt, args.device, factor, args.per_level, args.eval_seed)
        return 0
    if not (args.out / "study.csv").exists():
        _append(args.out / "study.csv", ",".join(FIELDS) + "\n")
    procs = []
    for i, job in enumerate(args.jobs):
        style, size, seed, factor = parse_job(job, args.steps_factor)
        cmd = [sys.executable, "-m", "l2s_lib.organisms.sweep", "--one", "--jobs", job, "--out", str(args.out),
               "--ckpt", str(args.ckpt), "--device", args.device, "--steps-factor", str(factor),
               "--per-level", str(args.per_level), "--eval-seed", str(args.eval_seed)]
        env = dict(os.environ, OMP_NUM_THREADS="1")
        if args.gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(i % args.gpus)
        args.ckpt.mkdir(parents=True, exist_ok=True)
        log = open(args.ckpt / f"log_{job.replace(':', '_')}.txt", "w")
        procs.append((job, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)))
    rc, t0 = 0, time.time()
    for job, p in procs:
        try:
            rc |= p.wait(timeout=max(1.0, args.deadline - (time.time() - t0))) if args.deadline else p.wait()
        except subprocess.TimeoutExpired:
            p.kill()  # past the deadline: this job's rows are lost, the others are kept
            p.wait()
            rc |= 1
        print(f"{job}: exit {p.returncode} at {time.time() - t0:.0f}s", flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
