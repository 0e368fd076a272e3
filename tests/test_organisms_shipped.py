"""Each shipped organism loads and reproduces its model card on a small subset (the card's spot check)."""

from __future__ import annotations

import json

import pytest

from l2s_lib.organisms import ROLES, SHIPPED_SIZES, organism_path, study, world

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CASES = [(s, r) for s in SHIPPED_SIZES for r in ROLES]


def test_default_size_is_shipped():
    from l2s_lib.organisms import DEFAULT_SIZE

    for role in ROLES:
        assert (organism_path(DEFAULT_SIZE, role) / "model.safetensors").exists()


@pytest.mark.parametrize("size,role", CASES)
def test_shipped_checkpoint_reproduces_its_card(size, role):
    import torch

    from l2s_lib.organisms.train import load_model

    folder = organism_path(size, role)
    card = json.loads((folder / "eval_org.json").read_text())
    readme = (folder / "README.md").read_text()
    overall = next(r for r in card["benchmarks"]["org_levels"] if r["level"] == "all")
    assert f"| all | {overall['n']} | {overall['correct']:.3f} |" in readme
    spot = card["spot_check"]
    problems = [world.parse_question(json.loads(line)["problem"]) for line in
                (folder.parents[1] / "benchmarks" / "org_levels.jsonl").read_text().splitlines()]
    chosen = []
    for lv in sorted({s["level"] for s in spot}):
        chosen += [p for p in problems if p.level == lv][: sum(s["level"] == lv for s in spot)]
    torch.manual_seed(0)
    model = load_model(folder)
    rows = study.evaluate_rows(model, chosen, batch_size=len(chosen), max_new_tokens=320)
    assert [r["correct"] for r in rows] == [s["correct"] for s in spot]
    assert [r["text"] for r in rows] == [s["response"] for s in spot]


