"""Each shipped organism loads and reproduces its model card on a small subset (the card's spot check)."""

from __future__ import annotations

import json

import pytest

from l2s_lib.organisms import ROLES, SHIPPED_SIZES, cards, organism_path

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CASES = [(s, r) for s in SHIPPED_SIZES for r in ROLES]


def test_default_size_is_shipped():
    from l2s_lib.organisms import DEFAULT_SIZE

    for role in ROLES:
        assert (organism_path(DEFAULT_SIZE, role) / "model.safetensors").exists()


@pytest.mark.parametrize("size,role", CASES)
def test_shipped_checkpoint_reproduces_its_card(size, role):
    """The card's spot check (its first problems of each level of ``org_levels``) measured again through
    ``l2s_lib.eval.evaluate`` (``cards.measure`` on the subset): the same responses, grades and lengths."""
    folder = organism_path(size, role)
    card = json.loads((folder / "eval_org.json").read_text())
    readme = (folder / "README.md").read_text()
    overall = next(r for r in card["benchmarks"]["org_levels"] if r["level"] == "all")
    assert f"| all | {overall['n']} | {overall['correct']:.3f} |" in readme
    spot = card["spot_check"]
    per_level = max(sum(s["level"] == lv for s in spot) for lv in {s["level"] for s in spot})
    again = cards.measure(folder, per_level=per_level)
    assert again["weights_sha256"] in readme
    assert [(s["level"], s["correct"], s["length"], s["response"]) for s in again["spot_check"]] == \
        [(s["level"], s["correct"], s["length"], s["response"]) for s in spot]
