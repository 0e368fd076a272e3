"""Provenance: the commit of the inputs, dirty only when an input (not an output a run writes) changed."""

import subprocess

import pytest

from l2s_lib import paths, provenance


def _git(root, *args):
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path, monkeypatch):
    for rel in ("l2s_lib/x.py", "data/results/01/default/summary.csv", "figures/fig1_a.png", "notebooks/01_a.ipynb",
                "notebooks/01_a.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("v1\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    monkeypatch.setattr(paths, "ROOT", tmp_path)
    provenance.git_sha.cache_clear()
    yield tmp_path
    provenance.git_sha.cache_clear()


def test_outputs_written_by_a_run_do_not_make_the_tree_dirty(repo):
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    for rel in ("data/results/01/default/summary.csv", "figures/fig1_a.png", "notebooks/01_a.ipynb"):
        (repo / rel).write_text("v2\n")
    assert provenance.git_sha() == head


@pytest.mark.parametrize("rel", ["l2s_lib/x.py", "notebooks/01_a.py"])
def test_a_changed_input_makes_it_dirty(repo, rel):
    (repo / rel).write_text("v2\n")
    assert provenance.git_sha().endswith("-dirty")
