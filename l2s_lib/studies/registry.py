"""The study modules by notebook name, the order their inputs impose, and redrawing figures from result files.

One explicit list (no import by module-name string): each module has the four functions and three constants of
``l2s_lib.studies.folder``. ``order`` puts a study after the studies it reads (``INPUTS``), which is the order
``make reproduce`` runs them in; ``redraw`` is ``l2s figures``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from l2s_lib import paths
from l2s_lib.errors import ConfigError
from l2s_lib.report import figures as report_figures
from l2s_lib.studies import adaptive_length, anatomy, folder, merge_methods, scale, self_critique, sensitivity

STUDIES: dict[str, ModuleType] = {m.STUDY: m for m in (merge_methods, scale, adaptive_length, self_critique,
                                                       sensitivity, anatomy)}


def module(study: str) -> ModuleType:
    """The module of ``study`` (``01_merge_methods``, ``01`` or ``merge_methods``)."""
    for name, mod in STUDIES.items():
        if study in (name, name[:2], name[3:]):
            return mod
    raise ConfigError(f"unknown study '{study}'; available: {', '.join(STUDIES)}")


def order(studies: Sequence[str] | None = None) -> list[str]:
    """``studies`` (default: all) with every study after its ``INPUTS``, otherwise in numeric order.

    The inputs of a named study are added when they are not named. ``ConfigError`` on a cycle.
    """
    wanted = [module(s).STUDY for s in (studies or STUDIES)]
    out: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in out:
            return
        if name in path:
            raise ConfigError(f"study inputs form a cycle: {' -> '.join(path + (name,))}")
        for dep in sorted(module(name).INPUTS):
            visit(module(dep).STUDY, path + (name,))
        out.append(name)

    for name in sorted(wanted):
        visit(name, ())
    return out


def runs(study: str) -> list[Path]:
    """The result folders of ``study`` that a ``compute`` finished (they hold the ``settings`` table)."""
    root = paths.results_dir() / module(study).STUDY
    return sorted(p.parent for p in root.glob(f"*/{folder.SETTINGS}.csv"))


def redraw(study: str | None = None, config: str | None = None, check: bool = False) -> list[Path]:
    """Draw the figures of every finished run (of ``study`` and ``config`` when given) from its result files
    and save them where the notebook saves them (``folder.figure_dir``); returns the files written.

    With ``check`` nothing is overwritten: the figures are drawn into a temporary folder and the files whose
    bytes differ from the saved ones (or that are missing) are returned. No model, checkpoint or cache is read.
    ``FileNotFoundError`` when a named study or config has no finished run.
    """
    import tempfile

    import matplotlib.pyplot as plt

    names = [module(study).STUDY] if study else list(STUDIES)
    dirs = [d for name in names for d in runs(name) if config is None or d.name == config]
    if (study or config) and not dirs:
        where = paths.relative_to_root(paths.results_dir() / (study and names[0] or "*") / (config or "*"))
        raise FileNotFoundError(f"no finished study results under {where}: run the study first "
                                f"(`l2s run STUDY {config or 'default'}`)")
    out: list[Path] = []
    with tempfile.TemporaryDirectory() as scratch:
        for d in dirs:
            name = d.parent.name
            drawn = module(name).figures(d)
            for fig_name in drawn:
                fig = drawn[fig_name]
                target = folder.figure_dir(d)
                saved = report_figures.save(fig, fig_name, Path(scratch) if check else target)
                plt.close(fig)
                if not check:
                    out += saved
                    continue
                for p in saved:
                    kept = target / p.name
                    if not kept.is_file() or kept.read_bytes() != p.read_bytes():
                        out.append(kept)
    return out
