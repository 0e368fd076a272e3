"""The one provenance (commit with its dirty state, versions) and the one atomic write helper."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from l2s_lib import paths, provenance
from l2s_lib.report import results
from l2s_lib.files import atomic_write, atomic_write_json, atomic_write_text


def _git(cwd, *args):
    subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True,
                   env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@t"})


@pytest.fixture
def repo(tmp_path, monkeypatch):
    root = tmp_path / "repo"
    root.mkdir()
    _git(root, "init", "-q")
    (root / "f.txt").write_text("a\n")
    _git(root, "add", "f.txt")
    _git(root, "commit", "-qm", "one")
    monkeypatch.setattr(paths, "ROOT", root)
    provenance.git_sha.cache_clear()
    yield root
    provenance.git_sha.cache_clear()


def test_git_sha_spells_the_dirty_state_once(repo):
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert provenance.git_sha() == head and len(head) == 40
    (repo / "f.txt").write_text("b\n")
    provenance.git_sha.cache_clear()
    assert provenance.git_sha() == head + provenance.DIRTY_SUFFIX == head + "-dirty"
    (repo / "untracked.txt").write_text("x")  # untracked files do not make a tree dirty
    (repo / "f.txt").write_text("a\n")
    provenance.git_sha.cache_clear()
    assert provenance.git_sha() == head


def test_git_sha_outside_a_checkout_is_none(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "ROOT", tmp_path)
    provenance.git_sha.cache_clear()
    try:
        assert provenance.git_sha() is None
    finally:
        provenance.git_sha.cache_clear()


def test_result_sidecars_carry_the_same_provenance(repo):
    import pandas as pd

    csv = results.write(pd.DataFrame({"x": [1]}), "00_test", "t")
    meta = json.loads(csv.with_suffix(".json").read_text())
    assert meta["git_sha"] == provenance.git_sha() and meta["versions"] == provenance.versions()
    assert set(meta["versions"]) <= {"python", *provenance.PACKAGES}


def test_atomic_writes_replace_whole_files_and_leave_nothing_on_error(tmp_path):
    target = tmp_path / "sub" / "a.json"
    atomic_write_json(target, {"k": 1}, sort_keys=True)
    assert json.loads(target.read_text()) == {"k": 1}
    assert oct(target.stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    atomic_write_text(target, "new")
    assert target.read_text() == "new"

    def fails(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, fails)
    assert target.read_text() == "new"  # the old content is intact
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.json"]  # no temporary file left


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
