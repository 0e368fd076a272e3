"""Merge configuration files: mergekit's YAML schema plus an explicit ``policies`` block and a ``seed``.

A file looks like::

    merge_method: ties                 # any name or alias of `l2s methods`
    base_model: Qwen/Qwen2.5-Math-7B   # System 1
    models:
      - model: deepseek-ai/DeepSeek-R1-Distill-Qwen-7B   # System 2
        parameters: {weight: 1.0, density: 0.2}
    parameters: {lambda: 1.0}          # top-level (method) parameters
    dtype: bfloat16                    # output dtype (default: the base's stored dtype)
    tokenizer_source: base             # base (the paper) or one of the input models
    seed: 0
    policies: {trim_mode: paper, tie_policy: follow_base, compute_dtype: float32}

Everything is validated against the method's typed ``Param`` specs before any tensor is read: unknown
methods, keys or parameters, and out-of-range values raise ``ConfigError`` listing what is allowed.
As in mergekit, an entry of ``models`` that names the base model is the base, not a model to merge.
mergekit features this engine does not implement (``slices``, per-layer gradients or filtered
parameter lists, ``tokenizer: {source: union}``) are rejected with a message saying so, rather than
silently merged differently.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from l2s_lib.errors import ConfigError
from l2s_lib.merge.base import SCOPE_CLASSES, MergeMethod, Param, validate_params
from l2s_lib.merge.registry import get_method

TOP_LEVEL_KEYS = (
    "merge_method", "base_model", "models", "parameters", "dtype", "out_dtype", "tokenizer_source",
    "seed", "policies", "name",
)
_MERGEKIT_UNSUPPORTED = {
    "slices": "slices (layer ranges from different models) are not supported: merges here are whole-model",
    "modules": "per-module definitions are not supported: merges here are whole-model",
    "tokenizer": "the 'tokenizer' block (vocabulary union / token surgery) is not supported: rows are merged by "
                 "token id, as the paper did; use tokenizer_source: base or one of the input models",
    "chat_template": "'chat_template' is not supported: the chat template comes with the tokenizer source",
}
OUTPUT_DTYPES = ("float32", "float16", "bfloat16")

#: The policies every merge records. Defaults are the paper's choices except where a choice of the
#: paper is a known pitfall (fp32 arithmetic instead of bf16, a config with room for the eval budget).
POLICIES: tuple[Param, ...] = (
    Param("compute_dtype", str, "float32", "arithmetic precision: float32 (recommended; one rounding to the "
          "output dtype) or paper_bf16_arith (the paper code's bf16 arithmetic, for bit-faithful replication)",
          choices=("float32", "float64", "paper_bf16_arith")),
    Param("tie_policy", str, "follow_base", "tied embeddings: follow_base (the paper: the output ties its head "
          "if the base does, a model's separate lm_head is dropped) or untie (merge lm_head too, with a tied "
          "input's head taken as its embedding)", choices=("follow_base", "untie")),
    Param("config_source", str, "patched", "the output's config.json: patched (the base's, with "
          "max_position_embeddings raised to allow the evaluation budget), base (the paper: System 1's "
          "unchanged) or model (the first model's)", choices=("patched", "base", "model")),
    Param("max_position_embeddings", int, None, "with config_source=patched: the value to write "
          "(default: the largest among the inputs)", low=1),
    Param("trim_mode", str, "exact", "TIES magnitude trim: exact (keep exactly floor(density*n) entries per "
          "tensor, largest first, ties broken by position: mergekit's rule), paper (the L2S code: keep "
          "|delta| >= the c-th smallest, c = floor(n*(1-density)), which keeps ties), global (the original "
          "TIES: one threshold over the whole model per input)", choices=("exact", "paper", "global")),
    Param("dare_rescale", str, "inverse", "DARE rescaling of the kept entries: inverse (1/density, the DARE "
          "paper and the L2S code) or l1 (restore the tensor's L1 norm, mergekit's rule)",
          choices=("inverse", "l1")),
)


@dataclass
class ModelEntry:
    """One entry of ``models``: a reference (folder or hub id) and its validated per-model parameters."""

    model: str
    parameters: dict[str, Any]


@dataclass
class MergeConfig:
    """A validated merge configuration (see the module docstring)."""

    merge_method: str  # canonical registry name
    method: type[MergeMethod]
    base_model: str | None
    models: list[ModelEntry]
    parameters: dict[str, Any]
    dtype: str | None
    tokenizer_source: str
    seed: int
    policies: dict[str, Any]
    source: Path | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def model_params(self) -> list[dict[str, Any]]:
        return [m.parameters for m in self.models]

    def to_dict(self) -> dict[str, Any]:
        """The resolved configuration (defaults filled in), as recorded in the provenance file."""
        return {
            "merge_method": self.merge_method,
            "base_model": self.base_model,
            "models": [{"model": m.model, "parameters": m.parameters} for m in self.models],
            "parameters": self.parameters,
            "dtype": self.dtype,
            "tokenizer_source": self.tokenizer_source,
            "seed": self.seed,
            "policies": self.policies,
        }


def load_config(source: str | Path | dict[str, Any]) -> MergeConfig:
    """Read and validate a merge configuration from a YAML file (path) or an already parsed dict."""
    path = None
    if isinstance(source, dict):
        raw = copy.deepcopy(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"merge config {path} does not exist")
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    where = str(path) if path else "merge config"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping with merge_method, base_model, models ...")
    for key, why in _MERGEKIT_UNSUPPORTED.items():
        if key in raw:
            raise ConfigError(f"{where}: {why}")
    unknown = sorted(set(raw) - set(TOP_LEVEL_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(TOP_LEVEL_KEYS)}")
    if "merge_method" not in raw:
        raise ConfigError(f"{where}: 'merge_method' is required")
    method = get_method(str(raw["merge_method"]))

    base = raw.get("base_model")
    if base is not None:
        base = _model_ref(base, f"{where}: base_model")
    if method.needs_base and base is None:
        raise ConfigError(f"{where}: method '{method.name}' needs a base_model (System 1 in the paper)")

    entries = raw.get("models") or []
    if not isinstance(entries, list):
        raise ConfigError(f"{where}: 'models' must be a list of {{model: ..., parameters: {{...}}}}")
    models: list[ModelEntry] = []
    for i, entry in enumerate(entries):
        w = f"{where}: models[{i}]"
        if isinstance(entry, str):
            entry = {"model": entry}
        if not isinstance(entry, dict) or "model" not in entry:
            raise ConfigError(f"{w}: expected {{model: ..., parameters: {{...}}}}, got {entry!r}")
        extra = sorted(set(entry) - {"model", "parameters"})
        if extra:
            raise ConfigError(f"{w}: unknown key(s) {', '.join(extra)}; allowed: model, parameters")
        ref = _model_ref(entry["model"], f"{w}.model")
        given = entry.get("parameters") or {}
        if not isinstance(given, dict):
            raise ConfigError(f"{w}.parameters: expected a mapping, got {given!r}")
        _reject_non_scalars(given, f"{w}.parameters")
        if method.needs_base and ref == base:
            # mergekit lists the base among the models; it is the base, not a model to merge.
            if given:
                raise ConfigError(f"{w}: parameters given to the base model ({', '.join(given)}) have no effect "
                                  f"with '{method.name}'; remove them")
            continue
        models.append(ModelEntry(ref, validate_params(method.model_params, given, f"{w} ({ref})")))
    if len(models) < method.min_models:
        raise ConfigError(f"{where}: method '{method.name}' needs at least {method.min_models} model(s) to merge "
                          f"besides the base, got {len(models)}")
    max_models = method.max_models
    if max_models is not None and len(models) > max_models:
        raise ConfigError(f"{where}: method '{method.name}' merges at most {max_models} model(s) with the base, "
                          f"got {len(models)}")

    top = raw.get("parameters") or {}
    if not isinstance(top, dict):
        raise ConfigError(f"{where}: 'parameters' must be a mapping")
    _reject_non_scalars(top, f"{where}: parameters")
    params = validate_params(method.params, top, f"{where}: parameters of '{method.name}'")
    method.check(params, [m.parameters for m in models], where)  # cross-parameter checks of the method

    out_dtype = raw.get("out_dtype", raw.get("dtype"))
    if out_dtype is not None and out_dtype not in OUTPUT_DTYPES:
        raise ConfigError(f"{where}: dtype {out_dtype!r} is not allowed (one of {', '.join(OUTPUT_DTYPES)})")

    tok = raw.get("tokenizer_source", "base")
    inputs = ([base] if base else []) + [m.model for m in models]
    if tok == "union":
        raise ConfigError(f"{where}: tokenizer_source: union is not supported (rows are merged by token id, as "
                          "in the paper); use base or one of the input models")
    if tok != "base" and tok not in inputs:
        raise ConfigError(f"{where}: tokenizer_source {tok!r} must be 'base' or one of the input models: "
                          + ", ".join(inputs))

    seed = raw.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"{where}: seed must be a non-negative integer, got {seed!r}")

    policies = validate_policies(raw.get("policies"), f"{where}: policies")
    return MergeConfig(method.name, method, base, models, params, out_dtype, tok, seed, policies, path, raw)


def validate_policies(given: Any, where: str = "policies") -> dict[str, Any]:
    """Validate a ``policies`` mapping; fill defaults. ``scope`` maps embeddings/norms/biases to booleans."""
    given = dict(given or {})
    if not isinstance(given, dict):
        raise ConfigError(f"{where}: expected a mapping")
    scope_given = given.pop("scope", None) or {}
    if not isinstance(scope_given, dict):
        raise ConfigError(f"{where}.scope: expected a mapping of {', '.join(SCOPE_CLASSES)} to true/false")
    unknown = sorted(set(scope_given) - set(SCOPE_CLASSES))
    if unknown:
        raise ConfigError(f"{where}.scope: unknown class(es) {', '.join(unknown)}; allowed: {', '.join(SCOPE_CLASSES)}")
    scope = {}
    for cls in SCOPE_CLASSES:
        v = scope_given.get(cls, True)
        if not isinstance(v, bool):
            raise ConfigError(f"{where}.scope.{cls} must be true or false, got {v!r}")
        scope[cls] = v
    out = validate_params(POLICIES, given, where)
    out["scope"] = scope
    return out


def _model_ref(value: Any, where: str) -> str:
    if isinstance(value, dict) and "model" in value:  # mergekit's {model: {path: ...}} forms
        value = value["model"]
    if isinstance(value, dict) and "path" in value:
        value = value["path"]
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: expected a model folder or hub id, got {value!r}")
    if "+" in value:
        raise ConfigError(f"{where}: LoRA-applied references ('model+lora') are not supported: {value!r}")
    return value.strip()


def _reject_non_scalars(params: dict[str, Any], where: str) -> None:
    for key, value in params.items():
        if isinstance(value, (list, tuple, dict)):
            raise ConfigError(
                f"{where}: '{key}' = {value!r} is a list, gradient or filtered value; mergekit allows those, "
                "this engine takes one number per parameter (the paper uses one value per model)"
            )
