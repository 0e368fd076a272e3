"""The organism benchmarks (held-out, disjoint from training and from each other) and their registration.

* ``org_easy``  - GSM8K analogue: 300 problems of levels 1-2.
* ``org_levels`` - MATH500 analogue: 5 levels x 100 problems.
* ``org_hard``  - AIME analogue: 30 problems of level 5.

All are drawn from the hash-defined ``heldout`` split (``world.split_of``), which no training stage ever samples,
and drawn in turn with a shared exclusion set so that no question appears in two benchmarks. The calibration set
(``calibration.jsonl``: ``question``, ``short_answer``, ``long_answer``) comes from the separate ``calibration``
split. Layout: jsonl with ``idx``, ``problem``, ``answer``, ``level`` (the harness's ``math500`` layout).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from l2s_lib import paths
from l2s_lib.organisms import world as world_mod, writers

BENCHMARK_SEED = 20250326
#: name -> (display name, {level: count})
SPECS: dict[str, tuple[str, dict[int, int]]] = {
    "org_levels": ("Organism levels (MATH500 analogue)", {lv: 100 for lv in world_mod.LEVELS}),
    "org_easy": ("Organism easy (GSM8K analogue)", {1: 150, 2: 150}),
    "org_hard": ("Organism hard (AIME analogue)", {5: 30}),
}
CALIBRATION_SIZE = 128  # >= 100, the paper's largest calibration set (AIM and Sens take n of these)
#: Decoding budget of the organism benchmarks: System 2's longest target is about 200 tokens.
MAX_NEW_TOKENS = 300


def benchmark_path(name: str) -> Path:
    return paths.ORGANISMS / "benchmarks" / f"{name}.jsonl"


def rows(problems: list[world_mod.Problem]) -> list[dict]:
    return [{"idx": i, "problem": p.question, "answer": str(p.answer), "level": p.level}
            for i, p in enumerate(problems)]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def build_benchmarks(seed: int = BENCHMARK_SEED) -> dict[str, list[world_mod.Problem]]:
    """The three benchmarks' problems, disjoint from each other (drawn in a fixed order)."""
    used: set[str] = set()
    return {name: world_mod.sample_unique(counts, seed=seed + i, split="heldout", exclude=used)
            for i, (name, (_, counts)) in enumerate(SPECS.items())}


def write_benchmarks(out_dir: Path | None = None, seed: int = BENCHMARK_SEED) -> dict[str, Path]:
    out_dir = out_dir or paths.ORGANISMS / "benchmarks"
    return {name: write_jsonl(out_dir / f"{name}.jsonl", rows(ps)) for name, ps in build_benchmarks(seed).items()}


def write_fresh(out: Path, seed: int, per_level: int, levels=world_mod.LEVELS) -> Path:
    """A fresh held-out set (``l2s organisms benchmark``), ``per_level`` problems of each level."""
    return write_jsonl(out, rows(world_mod.sample_unique({lv: per_level for lv in levels}, seed, "heldout")))


def calibration_records(n: int = CALIBRATION_SIZE, seed: int = BENCHMARK_SEED, s1_style: str = world_mod.DEFAULT_S1_STYLE,
                        world_name: str = "adaptive") -> list[dict]:
    """Aligned System 1 / System 2 solutions of calibration-split questions (levels 1-5 in equal numbers)."""
    per = {lv: n // len(world_mod.LEVELS) + (1 if i < n % len(world_mod.LEVELS) else 0)
           for i, lv in enumerate(world_mod.LEVELS)}
    probs = world_mod.sample_unique(per, seed=seed, split="calibration")
    rng = random.Random(seed)
    w = world_mod.world(world_name, s1_style)
    return [{"question": p.question, "short_answer": writers.system1(p, s1_style),
             "long_answer": writers.system2(p, w, rng, force_check=True, plant=False), "level": p.level,
             "answer": str(p.answer)} for p in probs]


def write_calibration(path: Path | None = None, **kw) -> Path:
    return write_jsonl(path or paths.ORGANISMS / "calibration.jsonl", calibration_records(**kw))


def register() -> None:
    """Registers the three benchmarks with the eval harness."""
    from l2s_lib.eval.benchmarks import register_benchmark

    for name, (display, counts) in SPECS.items():
        register_benchmark(name, display_name=display, path=benchmark_path(name), layout="math500",
                           grader="integer", levels=sorted(counts), prompt="organism", max_new_tokens=320)
