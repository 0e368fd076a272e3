"""Model organisms: tiny Qwen2 models trained on a synthetic arithmetic world (System 1 / System 2 / DPO).

``organism_path(size, role)`` gives a shipped checkpoint folder; ``DEFAULT_SIZE`` is the size the study
notebooks use by default (see ``data/organisms/README.md`` for why). ``register_eval()`` registers the organism
prompts and benchmarks with ``l2s_lib.eval`` (which imports nothing of the organisms); importing this package
calls it once, so ``evaluate(model, "org_levels")`` works wherever the organisms are in use.
"""

from __future__ import annotations

from pathlib import Path

from l2s_lib import paths
from l2s_lib.errors import CheckpointError, ConfigError

#: Shipped roles: the two models to merge, the DPO baseline and the equal-verification-rate control System 2.
ROLES = ("system1", "system2", "dpo", "system2_equal")
#: The notebooks' default organism: the smallest shipped size, so that every notebook's default run fits the
#: CPU budget of ``make reproduce`` (1M parameters, answers of 12-170 tokens; 6m is about 4x slower on a CPU).
DEFAULT_SIZE = "1m"
#: Sizes whose checkpoints are committed under ``data/organisms/<size>/``.
SHIPPED_SIZES = ("1m", "6m")


def organism_path(size: str = DEFAULT_SIZE, role: str = "system2") -> Path:
    """The folder of a shipped organism checkpoint (``data/organisms/<size>/<role>``)."""
    if role not in ROLES:
        raise ConfigError(f"unknown organism role {role!r}; allowed: {', '.join(ROLES)}")
    if size not in SHIPPED_SIZES:
        raise ConfigError(f"organism size {size!r} is not shipped; shipped: {', '.join(SHIPPED_SIZES)} "
                          f"(rebuild others with `l2s organisms train --size {size} --device cuda`)")
    path = paths.ORGANISMS / size / role
    if not (path / "config.json").exists():
        raise CheckpointError(f"organism checkpoint missing: {paths.relative_to_root(path)}")
    return path


_REGISTERED = False


def register_eval() -> None:
    """Registers the ``organism`` prompts and the ``org_*`` benchmarks with the eval harness (once)."""
    global _REGISTERED
    if not _REGISTERED:
        from l2s_lib.organisms import benchmarks, prompts

        prompts.register()
        benchmarks.register()
        _REGISTERED = True


register_eval()
