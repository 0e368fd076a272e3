"""The models a study compares: the System 1 / System 2 pair, and every merge method with the paper's settings.

The merge settings come from one place, the paper's configs in ``configs/merges/paper_<scale>_<key>.yaml``
(Table 7, with k and p translated into mergekit densities there). A study re-targets them at its own pair
(an organism pair by default, or the paper's hub models) with ``method_entries``, so the organisms are merged
with exactly the settings the paper used at that scale.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from l2s_lib import paths
from l2s_lib.errors import ConfigError
from l2s_lib.merge.registry import get_method
from l2s_lib.pipeline import grid
from l2s_lib.report.paper import role_of

@dataclass(frozen=True)
class Method:
    """One merge method of the studies, under its three names.

    ``key``: the catalogue key (notebooks' ``METHODS`` lists, the config files ``paper_<scale>_<key>.yaml``, the
    ``method_key`` column of every result table, and the key results are joined on); ``registry``: the merge
    engine's registered name (the configs' ``merge_method``); ``label``: the name in tables and figures, which is
    the paper's row label (Tables 1-7) when ``in_paper``, so the paper's rows map to keys through this table.
    """

    key: str
    registry: str
    label: str
    in_paper: bool = True

    def config_file(self, scale: str = "7b") -> Path:
        """The paper's config of this method at ``scale`` (which may not exist: see ``paper_config``)."""
        return paths.MERGE_CONFIGS / f"paper_{scale}_{self.key}.yaml"


#: The one table of merge methods. The first ten are the paper's Table 1 rows; SLERP and Iso-C are the
#: compendium's additions.
CATALOGUE: tuple[Method, ...] = (
    Method("average", "average", "Average Merging"),
    Method("task_arithmetic", "task_arithmetic", "Task Arithmetic"),
    Method("ties", "ties", "Ties-Merging"),
    Method("dare", "dare_linear", "DARE"),
    Method("dare_ta", "dare_task_arithmetic", "DARE-TA"),
    Method("dare_ties", "dare_ties", "DARE-Ties"),
    Method("lore", "lore", "LoRE-Merging"),
    Method("twin", "twin", "Twin-Merging"),
    Method("aim_ties", "aim_ties", "AIM-Ties"),
    Method("sens", "sens", "Sens-Merging"),
    Method("slerp", "slerp", "SLERP", in_paper=False),
    Method("iso_c", "iso_c", "Iso-C", in_paper=False),
)
#: The catalogue by key.
METHODS: dict[str, Method] = {m.key: m for m in CATALOGUE}


def key_of_label(label: str) -> str | None:
    """The catalogue key of a table label (ours or the paper's row label), None when no method has it."""
    return next((m.key for m in CATALOGUE if m.label == label), None)


def paper_method_keys(table):
    """``method_key`` of each row of a paper table (``report.paper.per_benchmark``): the catalogue key of a merge
    (the paper's row labels are the catalogue's labels), the role of the other rows."""
    return table["method"].map(lambda m: key_of_label(m) or role_of(m))
SCALES = ("1p5b", "7b", "14b", "32b")
#: The paper's (System 1, System 2) hub ids per scale (Tables 1-4).
PAPER_PAIRS: dict[str, tuple[str, str]] = {
    "1p5b": ("Qwen/Qwen2.5-Math-1.5B", "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"),
    "7b": ("Qwen/Qwen2.5-Math-7B", "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"),
    "14b": ("Qwen/Qwen2.5-14B", "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B"),
    "32b": ("Qwen/Qwen2.5-32B", "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B"),
}
#: Parameters that name a calibration set (re-targeted to the study's calibration data).
_CALIBRATION_KEYS = ("calibration",)


@dataclass(frozen=True)
class Pair:
    """The models of a study: System 1 (the base), System 2, an optional DPO baseline, and their labels."""

    system1: str
    system2: str
    dpo: str | None = None
    calibration: str | None = None
    label1: str = "System 1"
    label2: str = "System 2"
    world: str = "organism"  # "organism" or "real"


def resolve_pair(size: str = "", system1: str = "", system2: str = "", dpo: str = "", calibration: str = "") -> Pair:
    """The pair a notebook's parameters name: explicit paths / hub ids win, else the organism of ``size``.

    With explicit ``system1``/``system2`` (real models), ``dpo`` and ``calibration`` are used only if given.
    """
    if bool(system1) != bool(system2):
        raise ConfigError("give both SYSTEM1 and SYSTEM2 (paths or hub ids), or neither to use the organisms")
    if system1:
        return Pair(system1, system2, dpo or None, calibration or None, label1=Path(system1).name,
                    label2=Path(system2).name, world="real")
    from l2s_lib import organisms

    size = size or organisms.DEFAULT_SIZE
    dpo_path = organisms.organism_path(size, "dpo")
    return Pair(
        str(organisms.organism_path(size, "system1")), str(organisms.organism_path(size, "system2")),
        str(dpo_path) if (dpo_path / "config.json").is_file() else None,
        calibration or str(paths.ORGANISMS / "calibration.jsonl"),
        label1="System 1", label2="System 2", world="organism",
    )


def paper_config(key: str, scale: str = "7b") -> dict[str, Any]:
    """The paper's merge config for a method key at a scale (``ConfigError`` listing what exists)."""
    if key not in METHODS:
        raise ConfigError(f"unknown method key '{key}'; available: {', '.join(METHODS)}")
    path = METHODS[key].config_file(scale)
    if not path.is_file():
        fallback = METHODS[key].config_file("7b")
        if scale != "7b" and fallback.is_file():
            path = fallback  # the paper gives no setting at this scale: Table 7's 7B row is the reference
        else:
            have = sorted(p.stem for p in paths.MERGE_CONFIGS.glob(f"paper_{scale}_*.yaml"))
            raise ConfigError(f"no config {paths.relative_to_root(path)}; at scale {scale}: {', '.join(have) or 'none'}")
    cfg = yaml.safe_load(path.read_text())
    cfg["_source"] = paths.relative_to_root(path)
    return cfg


def retarget(config: Mapping[str, Any], pair: Pair, params: Mapping[str, Any] | None = None,
             model_params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``config`` with the paper's hub ids replaced by ``pair``'s models and calibration set.

    The paper's base (System 1) and its System 2 are recognised by position: ``base_model`` is System 1;
    a ``models`` entry equal to the base stays System 1, every other entry becomes System 2. ``params`` /
    ``model_params`` override top-level / per-model (System 2 entries) parameters.
    """
    cfg = copy.deepcopy(dict(config))
    cfg.pop("_source", None)
    paper_base = cfg.get("base_model")
    if paper_base is not None:
        cfg["base_model"] = pair.system1
    models = []
    for m in cfg.get("models", []):
        is_s1 = m["model"] == paper_base
        entry = {"model": pair.system1 if is_s1 else pair.system2, "parameters": dict(m.get("parameters") or {})}
        if not is_s1 and model_params:
            entry["parameters"] |= dict(model_params)
        models.append(entry)
    cfg["models"] = models
    top = dict(cfg.get("parameters") or {})
    takes = {p.name for p in get_method(cfg["merge_method"]).params}  # the engine has no default data set
    for key in _CALIBRATION_KEYS:
        if key in takes and pair.calibration:
            top[key] = pair.calibration
    cfg["parameters"] = top | dict(params or {})
    return cfg


def pair_entries(pair: Pair, system1_eval: Mapping[str, Any] | None = None,
                 system2_eval: Mapping[str, Any] | None = None) -> list[grid.Entry]:
    """System 1, System 2 and (when there is one) the DPO baseline as grid entries."""
    out = [grid.model(pair.label1, pair.system1, "system1", **dict(system1_eval or {})),
           grid.model(pair.label2, pair.system2, "system2", **dict(system2_eval or {}))]
    if pair.dpo:
        out.append(grid.model("DPO", pair.dpo, "dpo", **dict(system2_eval or {})))
    return out


def method_entries(pair: Pair, methods: Sequence[str] | str, scale: str = "7b", seed: int = 0,
                   overrides: Mapping[str, Mapping[str, Any]] | None = None, **eval_overrides) -> list[grid.Entry]:
    """One merge entry per method key with the paper's settings at ``scale``, re-targeted at ``pair``.

    ``overrides``: per method key, {"params": {...}, "model_params": {...}, "label": "..."}.
    """
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    if scale not in SCALES:
        raise ConfigError(f"unknown paper scale '{scale}'; available: {', '.join(SCALES)}")
    entries = []
    for key in methods:
        o = dict((overrides or {}).get(key, {}))
        paper = paper_config(key, scale)
        cfg = retarget(paper, pair, o.get("params"), o.get("model_params"))
        cfg["seed"] = seed
        label = o.get("label", METHODS[key].label)
        meta = {"method_key": key, "settings": paper["_source"]}
        entries.append(grid.Entry(label=label, role="merge", config=cfg, eval=dict(eval_overrides), meta=meta))
    return entries


def decoding(prompt: str = "", max_new_tokens: int = 0) -> dict[str, Any]:
    """Evaluation overrides from notebook literals: empty prompt / 0 tokens mean "the benchmark's default"."""
    out: dict[str, Any] = {}
    if prompt:
        out["prompt"] = prompt
    if max_new_tokens:
        out["max_new_tokens"] = int(max_new_tokens)
    return out


def comparison_entries(pair: Pair, methods: Sequence[str] | str, scale: str = "7b", seed: int = 0,
                       s1_prompt: str = "", s1_max_new_tokens: int = 0, prompt: str = "",
                       max_new_tokens: int = 0) -> list[grid.Entry]:
    """The grid of Table 1: System 1, System 2, DPO (when there is one) and every method in ``methods`` with the
    paper's ``scale`` settings, with the paper's split decoding (System 1's prompt and budget apart).
    Empty prompts and zero budgets mean each benchmark's default (``decoding``)."""
    dec = decoding(prompt, max_new_tokens)
    return (pair_entries(pair, decoding(s1_prompt, s1_max_new_tokens), dec)
            + method_entries(pair, methods, scale=scale, seed=seed, **dec))
