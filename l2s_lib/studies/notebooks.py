"""Study notebooks and their papermill parameter files.

Each study is a numbered notebook ``notebooks/NN_name.ipynb`` with exactly one cell tagged ``parameters``
(literals only). Paper-scale settings live in ``notebooks/params/<study>/<config>.yaml``; every key there
must be a parameter of the notebook with the same type, which ``load_params`` checks before anything runs.
Runs write an executed copy to ``data/results/<study>/<run>/<study>.ipynb`` and never touch the source; ``run_name``
says which folder a set of parameters writes to (``default`` only for the notebook's own defaults).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

from l2s_lib import paths
from l2s_lib.errors import ConfigError

DEFAULT_CONFIG = "default"
#: Parameters that say where a run executes, not what it computes (the grid's results do not depend on them:
#: tests/test_pipeline_ray.py), so changing them keeps the run's folder.
EXECUTION_ONLY = ("EXECUTOR", "RAY_ADDRESS")


def list_studies() -> list[str]:
    """Names of the study notebooks, in order (``01_merge_methods`` ...)."""
    return sorted(p.stem for p in paths.NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def resolve_study(name: str) -> str:
    """Accept ``01_merge_methods``, ``01`` or ``merge_methods``; ``ConfigError`` listing the studies otherwise."""
    studies = list_studies()
    stem = Path(name).stem
    for s in studies:
        if stem in (s, s[:2], s[3:]):
            return s
    raise ConfigError(f"unknown study '{name}'; available: {', '.join(studies) or 'none'}")


def notebook_path(study: str) -> Path:
    return paths.NOTEBOOKS / f"{resolve_study(study)}.ipynb"


def list_configs(study: str) -> list[str]:
    """The configs of a study: ``default`` plus one per parameter file."""
    study = resolve_study(study)
    return [DEFAULT_CONFIG] + sorted(p.stem for p in (paths.PARAMS / study).glob("*.yaml"))


def notebook_parameters(study: str) -> dict[str, Any]:
    """The notebook's ``parameters`` cell as {name: default value} (evaluated literals)."""
    import ast

    import nbformat

    nb = nbformat.read(notebook_path(study), as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ConfigError(f"notebook {study} must have exactly one cell tagged 'parameters' (found {len(cells)})")
    out: dict[str, Any] = {}
    for node in ast.parse(cells[0].source).body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            raise ConfigError(f"notebook {study}: the parameters cell may only hold 'NAME = literal' lines")
        try:
            out[node.targets[0].id] = ast.literal_eval(node.value)
        except ValueError as exc:
            raise ConfigError(f"notebook {study}: parameter {node.targets[0].id} is not a literal") from exc
    return out


def _same_type(value: Any, default: Any) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))  # YAML writes 1.0 as 1 too easily
    if default is None:
        return True
    return isinstance(value, type(default))


def load_params(study: str, config: str = DEFAULT_CONFIG) -> dict[str, Any]:
    """Parameters for ``(study, config)``, validated against the notebook's parameters cell.

    ``default`` is the notebook's own defaults (an empty override). Unknown keys and wrong types are
    errors that list the notebook's parameters.
    """
    study = resolve_study(study)
    defaults = notebook_parameters(study)
    if config == DEFAULT_CONFIG:
        return {}
    path = paths.PARAMS / study / f"{config}.yaml"
    if not path.is_file():
        raise ConfigError(f"no parameter file {paths.relative_to_root(path)}; configs of {study}: {', '.join(list_configs(study))}")
    try:
        params = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot read {paths.relative_to_root(path)}: {exc}") from exc
    if not isinstance(params, dict):
        raise ConfigError(f"{paths.relative_to_root(path)} must be a mapping of parameter names to values")
    for key, value in params.items():
        if key not in defaults:
            raise ConfigError(f"{paths.relative_to_root(path)}: '{key}' is not a parameter of {study}; allowed: {', '.join(defaults)}")
        if not _same_type(value, defaults[key]):
            raise ConfigError(
                f"{paths.relative_to_root(path)}: '{key}' must be {type(defaults[key]).__name__} like the notebook's "
                f"default {defaults[key]!r}, got {value!r}"
            )
    return params


def is_reserved(study: str, config: str) -> bool:
    """Whether ``config`` names a fixed parameter set: ``default`` or a parameter file of the study."""
    return config == DEFAULT_CONFIG or (paths.PARAMS / resolve_study(study) / f"{config}.yaml").is_file()


def run_name(study: str, params: dict[str, Any]) -> str:
    """The results folder of a run with ``params`` (the notebook's values, ``CONFIG`` included).

    ``default`` and the parameter files' names are reserved for exactly their parameters: a run that changes any
    of them (a ``LIMIT`` typed into the parameters cell, ``l2s run ... -p LIMIT=20``) is another run and gets
    ``<config>+<digest of the changed values>``, so it never overwrites the committed results or ``figures/``.
    Any other name is an ad-hoc run named by the user; its provenance sidecars record every parameter.
    """
    study = resolve_study(study)
    config = str(params.get("CONFIG", DEFAULT_CONFIG)) or DEFAULT_CONFIG
    if not is_reserved(study, config):
        return config
    expected = notebook_parameters(study) | load_params(study, config)
    changed = {k: v for k, v in sorted(params.items())
               if k not in ("CONFIG", *EXECUTION_ONLY) and k in expected and v != expected[k]}
    if not changed:
        return config
    digest = hashlib.sha256(json.dumps(changed, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{config}+{digest}"


def run(study: str, config: str = DEFAULT_CONFIG, overrides: dict[str, Any] | None = None,
        output_dir: str | Path | None = None, progress: bool = True) -> Path:
    """Execute a study with papermill into ``data/results/<study>/<run>/<study>.ipynb``; returns that path.

    ``config`` is a parameter file's name, ``default``, or a new name for an ad-hoc run (the notebook's defaults
    with ``overrides``). ``<run>`` is ``run_name`` of the resulting parameters: a reserved config whose values
    were overridden gets its own folder.
    """
    import papermill

    study = resolve_study(study)
    overrides = dict(overrides or {})
    if "CONFIG" in overrides:
        raise ConfigError("CONFIG is the run's name: give it as the config argument (l2s run STUDY NAME), not with -p")
    defaults = notebook_parameters(study)
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise ConfigError(f"{', '.join(unknown)} not parameters of {study}; allowed: {', '.join(defaults)}")
    for key, value in overrides.items():
        if not _same_type(value, defaults[key]):
            raise ConfigError(f"parameter '{key}' must be {type(defaults[key]).__name__} like the notebook's default "
                              f"{defaults[key]!r}, got {value!r}")
    params = (load_params(study, config) if is_reserved(study, config) else {}) | overrides
    if "CONFIG" in defaults:
        params["CONFIG"] = config
    name = run_name(study, defaults | params)
    out_dir = Path(output_dir) if output_dir else paths.results_dir() / study / name
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{study}.ipynb"
    with tempfile.TemporaryDirectory(prefix="l2s-kernel-") as sockets:
        papermill.execute_notebook(
            str(notebook_path(study)), str(out), parameters=params, kernel_name="python3",
            cwd=str(paths.NOTEBOOKS), progress_bar=progress, kernel_manager_class=_ipc_kernel_manager(sockets),
        )
    from l2s_lib.studies import outputs  # nbformat: imported here, not by every `l2s` start-up

    outputs.tidy(out)
    return out


def _ipc_kernel_manager(directory: str):
    """A kernel manager whose kernel talks over IPC sockets in ``directory``, not TCP ports.

    A batch run needs no network: over TCP every kernel warned that its traffic is unencrypted on every
    ``l2s run``. Unix sockets in a private temporary folder are reachable by this user only.
    """
    from jupyter_client.manager import KernelManager

    class IPCKernelManager(KernelManager):
        def __init__(self, **kwargs):
            super().__init__(transport="ipc", ip=os.path.join(directory, "kernel"), **kwargs)

    return IPCKernelManager


def current_parameters(study: str, namespace: dict[str, Any]) -> dict[str, Any]:
    """The values a running notebook has for its own parameters (for result provenance).

    ``namespace`` is the notebook's ``globals()``; only names of the ``parameters`` cell are taken.
    """
    return {k: namespace[k] for k in notebook_parameters(study) if k in namespace}


def provenance(params: dict[str, Any]) -> str:
    """A short text block for a notebook's last cell: commit, package versions, parameters."""
    from l2s_lib.provenance import environment_info

    env = environment_info()
    lines = [f"git: {env['git_sha']}", "versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()),
             f"device: {env['cuda'] or 'cpu'}", "parameters:"]
    lines += [f"  {k} = {v!r}" for k, v in params.items()]
    return "\n".join(lines)
