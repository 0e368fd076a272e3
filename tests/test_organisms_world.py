"""The organism world: deterministic generator, disjoint splits, arithmetically right solutions, tokenizer."""

from __future__ import annotations

import json
import random
import re

import pytest

from l2s_lib import paths
from l2s_lib.errors import ConfigError
from l2s_lib.organisms import benchmarks, tokenizer as tok_mod, world, writers
from l2s_lib.organisms.train import Encoder

STEP = re.compile(r"(-?\d+)((?:[+-]\d+)+)=(-?\d+)\.")


def _steps(text: str) -> list[tuple[str, int, int]]:
    """(expression, claimed value, true value) of every ``a+b-c=v.`` step in ``text``."""
    out = []
    for m in STEP.finditer(text):
        expr = m.group(1) + m.group(2)
        out.append((expr, int(m.group(3)), eval(expr)))  # noqa: S307 - digits and +/- only
    return out


def test_generator_is_deterministic_and_seed_dependent():
    a = world.sample_unique({1: 5, 3: 5, 5: 5}, seed=7)
    b = world.sample_unique({1: 5, 3: 5, 5: 5}, seed=7)
    c = world.sample_unique({1: 5, 3: 5, 5: 5}, seed=8)
    assert [p.question for p in a] == [p.question for p in b]
    assert [p.question for p in a] != [p.question for p in c]
    assert [p.level for p in a] == [1] * 5 + [3] * 5 + [5] * 5


def test_problems_stay_in_range_and_parse_back():
    rng = random.Random(0)
    for lv in world.LEVELS:
        for _ in range(200):
            p = world.random_problem(lv, rng)
            assert p.level == lv and all(0 <= v <= 99 for v in p.values)
            assert all(2 <= x <= 99 for x in p.operands)
            assert world.parse_question(p.question) == p
    with pytest.raises(ConfigError):
        world.parse_question("4*5")


def test_training_sampler_never_yields_heldout_or_calibration():
    rng = random.Random(1)
    for _ in range(2000):
        p = world.sample(rng.randint(1, 5), rng, "train")
        assert world.split_of(p.question) == "train"


def test_shipped_benchmarks_are_heldout_disjoint_and_regenerable():
    seen = set()
    for name, (_, counts) in benchmarks.SPECS.items():
        rows = [json.loads(line) for line in benchmarks.benchmark_path(name).read_text().splitlines()]
        assert sorted({r["level"] for r in rows}) == sorted(counts)
        assert len(rows) == sum(counts.values())
        qs = {r["problem"] for r in rows}
        assert len(qs) == len(rows) and not (qs & seen), f"{name} overlaps another benchmark"
        seen |= qs
        for r in rows:
            p = world.parse_question(r["problem"])
            assert world.split_of(r["problem"]) == "heldout" and str(p.answer) == r["answer"]
    regenerated = benchmarks.build_benchmarks()
    assert [p.question for p in regenerated["org_levels"]] == [
        json.loads(line)["problem"] for line in benchmarks.benchmark_path("org_levels").read_text().splitlines()]


def test_calibration_file_is_aligned_and_from_its_own_split():
    rows = [json.loads(line) for line in (paths.ORGANISMS / "calibration.jsonl").read_text().splitlines()]
    assert rows == json.loads(json.dumps(benchmarks.calibration_records()))
    for r in rows:
        assert world.split_of(r["question"]) == "calibration"
        # System 1's own solution (the slip style may end wrong: that is System 1's behaviour)
        assert r["short_answer"] == writers.system1(world.parse_question(r["question"]), world.DEFAULT_S1_STYLE)
        assert r["long_answer"].endswith(f"\\boxed{{{r['answer']}}}")
        assert len(r["long_answer"]) > len(r["short_answer"])


@pytest.mark.parametrize("style", ["compressed", "slip", "tiring"])
def test_system1_steps(style):
    rng = random.Random(2)
    for _ in range(300):
        p = world.sample(rng.randint(1, 5), rng)
        text = writers.system1(p, style)
        steps = _steps(text)
        if style == "compressed":
            assert all(claimed == true for _, claimed, true in steps)
            assert len(steps) == (p.level + 1) // 2 and writers.system1_answer(p, style) == p.answer
        else:
            assert len(steps) == p.level
            for i, (expr, claimed, true) in enumerate(steps):  # wrong exactly where the slip rule fires
                a, op, b = re.match(r"(-?\d+)([+-])(\d+)", expr).groups()
                assert claimed == writers.slip(int(a), op, int(b), i, style)


def test_tiring_slips_only_more_from_the_third_step():
    # 58+37: units 8+7 = 15 keeps its carry on steps 1-2 (threshold 16) and drops it from step 3 (threshold 14)
    assert writers.slip(58, "+", 37, 0, "tiring") == writers.slip(58, "+", 37, 1, "tiring") == 95
    assert writers.slip(58, "+", 37, 2, "tiring") == 85
    assert writers.slip(58, "+", 37, 2, "slip") == 95
    # 52-26: borrow of 6-2 = 4 -> kept everywhere; 50-25: 5-0 = 5 -> forgotten from step 3 only
    assert writers.slip(52, "-", 26, 4, "tiring") == 26
    assert writers.slip(50, "-", 25, 1, "tiring") == 25 and writers.slip(50, "-", 25, 2, "tiring") == 35


def test_tiring_system1_is_reliable_on_level_1_and_weak_on_level_5():
    # The targets the tiring System 1 is trained on: issue 5's bars (>= 90% on level 1, >= 25 points below a
    # perfect System 2 on level 5) hold for the targets themselves, so a model that learns them meets the bars.
    probs = world.sample_unique({1: 400, 5: 400}, seed=9, split="heldout")
    acc = {lv: sum(writers.system1_answer(p, "tiring") == p.answer for p in probs if p.level == lv) / 400
           for lv in (1, 5)}
    assert acc[1] >= 0.93 and acc[5] <= 0.72


def test_system2_steps_are_right_except_planted_errors_which_the_check_repairs():
    rng = random.Random(3)
    n_planted = 0
    for _ in range(400):
        p = world.sample(rng.randint(1, 5), rng)
        text = writers.system2(p, world.ADAPTIVE, rng)
        first, _, rest = text.partition(writers.CHECK)
        assert text.endswith(f"\\boxed{{{p.answer}}}")
        wrong = [s for s in _steps(first) if s[1] != s[2]]
        assert all(c == t for _, c, t in _steps(rest)), "a verification step is wrong"
        if wrong:
            n_planted += 1
            assert len(wrong) == 1 and rest, "a planted error must be followed by a verification"
            assert writers.DIFFER in rest and f"So the answer is {p.answer}, not" in rest
        else:
            assert writers.DIFFER not in rest
    assert 15 <= n_planted <= 70  # error_rate 0.1 of 400


def test_verification_rate_is_a_world_parameter():
    rng = random.Random(4)
    p1 = [world.sample(1, rng) for _ in range(400)]
    adaptive = sum(writers.CHECK in writers.system2(p, world.ADAPTIVE, rng, plant=False) for p in p1) / 400
    equal = sum(writers.CHECK in writers.system2(p, world.EQUAL, rng, plant=False) for p in p1) / 400
    assert abs(adaptive - 0.6) < 0.08 and abs(equal - 0.8) < 0.08


def test_second_check_rate_rises_with_level_and_is_flat_in_the_control_world():
    rng = random.Random(6)

    def second(w, level):
        ps = [world.sample(level, rng) for _ in range(2000)]
        texts = [writers.system2(p, w, rng, plant=False, force_check=True) for p in ps]
        assert all(t.count(writers.AGAIN) <= w.max_checks - 1 for t in texts)
        return sum(writers.AGAIN in t for t in texts) / 2000

    assert abs(second(world.ADAPTIVE, 1) - 0.15) < 0.04 and abs(second(world.ADAPTIVE, 5) - 0.9) < 0.04
    assert abs(second(world.EQUAL, 1) - 0.57) < 0.04 and abs(second(world.EQUAL, 5) - 0.57) < 0.04


def test_tokenizer_round_trip_and_encoder_agree(tmp_path):
    tok = tok_mod.build_tokenizer()
    tok.save_pretrained(tmp_path)
    from transformers import AutoTokenizer

    loaded = AutoTokenizer.from_pretrained(tmp_path)
    enc = Encoder()
    rng = random.Random(5)
    texts = [writers.pretrain_text(rng) for _ in range(20)]
    for _ in range(50):
        p = world.sample(rng.randint(1, 5), rng)
        texts += [writers.prompt(p.question) + writers.system2(p, world.ADAPTIVE, rng, plant=True),
                  writers.prompt(p.question) + writers.system1(p)]
    for t in texts:
        ids = loaded(t, add_special_tokens=False)["input_ids"]
        assert ids == enc(t) and tok.unk_token_id not in ids
        assert loaded.decode(ids) == t
    assert loaded.eos_token == tok_mod.EOS and loaded.pad_token == tok_mod.PAD
