"""Who made a result: git commit, library versions, machine. Written beside every merge and result file.

The one provenance of the library: merged checkpoints (``l2s_provenance.json``), result sidecars and the
notebooks' last cell all take the commit and versions from here, so they spell them the same way.
"""

from __future__ import annotations

import functools
import importlib.metadata
import platform
import subprocess

from l2s_lib import paths

#: Packages whose version can change a merge, a generation or a grade (absent ones are left out).
PACKAGES = ("l2s-lib", "torch", "transformers", "safetensors", "tokenizers", "numpy", "huggingface_hub",
            "math-verify", "datasets", "vllm", "mergekit")
#: Appended to the commit when tracked files have uncommitted changes (git describe's spelling).
DIRTY_SUFFIX = "-dirty"


#: What runs write (relative to the repository root): changes there do not make the inputs dirty.
OUTPUT_PATHS = ("data/results", "figures", "notebooks/*.ipynb")


@functools.lru_cache(maxsize=1)
def git_sha() -> str | None:
    """The repository's HEAD commit, with ``DIRTY_SUFFIX`` when an input has uncommitted changes; None outside git.

    Inputs are everything but what a run writes: result files, figures and executed notebooks are outputs
    (``OUTPUT_PATHS``), so re-running the studies one after another from a clean commit names that commit,
    not a "dirty" tree that the previous notebook just wrote its outputs into.
    """
    try:
        sha = subprocess.run(
            ["git", "-C", str(paths.ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(paths.ROOT), "status", "--porcelain", "--untracked-files=no", "--", "."]
            + [f":(exclude){p}" for p in OUTPUT_PATHS],
            capture_output=True, text=True, timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (sha + (DIRTY_SUFFIX if dirty else "")) if sha else None


def versions() -> dict[str, str]:
    """Installed versions of the packages that can change a result (absent ones are left out)."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def environment_info() -> dict:
    """git SHA, package versions and the machine, as a JSON-serialisable dict."""
    import torch

    return {
        "git_sha": git_sha(),
        "versions": versions(),
        "machine": platform.machine(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
