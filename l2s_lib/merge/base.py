"""The contract every merge method implements (the registry that lists them is ``l2s_lib.merge.registry``).

A merge method is a class listed in ``registry.METHODS``. It declares:

- ``name``: the registry key used in YAML (``merge_method: ties``) and on the command line;
- ``paper_name``: how the L2S paper (or the method's own paper) calls it, for tables and figures;
- ``reference``: an arXiv / proceedings link;
- ``params``: typed top-level hyper-parameters (``Param``) with defaults and ranges;
- ``model_params``: typed per-model hyper-parameters (mergekit's ``models[i].parameters``:
  ``weight``, ``density`` ...);
- ``needs_base``: whether ``base_model`` is required;
- a docstring that says what the method computes per tensor and what it reduces to with one model
  to merge (the L2S setting: base = System 1, one model = System 2).

The driver (``l2s_lib.merge.driver``) calls, in order:

1. ``prepare(job, ctx)``: an optional whole-model pre-pass that fills ``ctx.state`` before the tensor
   stream (a global TIES threshold, AIM activation statistics, Sens layer coefficients ...). It may read
   every tensor lazily through ``job`` or load whole models for calibration passes; it must release what
   it loaded before returning so the stream keeps its small memory footprint.
2. ``merge_tensor(name, base, models, ctx)`` once per tensor, with fp32 (or the compute dtype) tensors on
   the compute device, returning the merged tensor in the compute dtype. Kernels must be pure
   functions of their inputs, ``ctx`` and the tensor name (randomness seeded from ``ctx.seed`` and the name).
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch

from l2s_lib.errors import ConfigError

# ---------------------------------------------------------------------------------------------------
# Typed hyper-parameters
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    """One typed hyper-parameter of a merge method, validated before any work is done."""

    name: str
    type: type
    default: Any
    help: str
    low: float | None = None  # inclusive bounds for numbers
    high: float | None = None
    choices: tuple[Any, ...] | None = None
    required: bool = False

    def validate(self, value: Any, where: str) -> Any:
        """Return ``value`` coerced to ``self.type``; raise ``ConfigError`` saying what is allowed."""
        allowed = self.describe_allowed()
        if value is None:
            if self.required:
                raise ConfigError(f"{where}: parameter '{self.name}' is required ({allowed})")
            return None
        if self.type is bool:
            if not isinstance(value, bool):
                raise ConfigError(f"{where}: parameter '{self.name}' must be true or false, got {value!r}")
            return value
        if self.type in (int, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{where}: parameter '{self.name}' must be a number ({allowed}), got {value!r}")
            if self.type is int and float(value) != int(value):
                raise ConfigError(f"{where}: parameter '{self.name}' must be an integer ({allowed}), got {value!r}")
            value = self.type(value)
            if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
                raise ConfigError(f"{where}: parameter '{self.name}' = {value} is out of range ({allowed})")
            return value
        if self.type is str:
            if not isinstance(value, str):
                raise ConfigError(f"{where}: parameter '{self.name}' must be a string ({allowed}), got {value!r}")
        if self.choices is not None and value not in self.choices:
            raise ConfigError(f"{where}: parameter '{self.name}' = {value!r} is not allowed ({allowed})")
        return value

    def describe_allowed(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.type in (int, float):
            lo = "-inf" if self.low is None else f"{self.low:g}"
            hi = "inf" if self.high is None else f"{self.high:g}"
            return f"{self.type.__name__} in [{lo}, {hi}]"
        return self.type.__name__


def validate_params(spec: tuple[Param, ...], given: dict[str, Any] | None, where: str) -> dict[str, Any]:
    """Validate ``given`` against ``spec``: unknown keys are errors, missing keys take their defaults."""
    given = dict(given or {})
    known = {p.name: p for p in spec}
    unknown = sorted(set(given) - set(known))
    if unknown:
        allowed = ", ".join(sorted(known)) or "none"
        raise ConfigError(f"{where}: unknown parameter(s) {', '.join(unknown)}; allowed: {allowed}")
    return {p.name: p.validate(given.get(p.name, p.default), where) for p in spec}


# ---------------------------------------------------------------------------------------------------
# Context passed to kernels
# ---------------------------------------------------------------------------------------------------


@dataclass
class MergeContext:
    """Everything a kernel may read besides its input tensors.

    ``params``: validated top-level hyper-parameters; ``model_params``: one dict per model to merge
    (same order as the ``models`` list passed to kernels); ``policies``: the explicit, recorded policies
    (compute dtype, tie policy, scopes, trim mode ...); ``state``: what ``prepare`` computed.
    """

    params: dict[str, Any]
    model_params: list[dict[str, Any]]
    seed: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    compute_dtype: torch.dtype = torch.float32
    policies: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    #: True when the driver hands kernels scratch copies of the inputs that it will not read again, so
    #: a kernel may compute in place in them (saves allocating, and page-faulting, a tensor-sized result).
    inputs_writable: bool = False

    def generator(self, tensor_name: str, salt: str = "") -> torch.Generator:
        """A CPU torch.Generator seeded from (seed, tensor name, salt), whatever the compute device.

        Seeding per tensor name makes a merge reproducible whatever order tensors are visited in and
        whichever shard they live in. The generator is always a CPU one (kernels draw on the CPU and move
        the draw to the compute device: ``random_uniform``): CPU and CUDA generators give different bits
        for the same seed, and a merge must be the same file on every device.
        """
        gen = torch.Generator(device="cpu")
        gen.manual_seed(tensor_seed(self.seed, tensor_name, salt))
        return gen

    def random_uniform(self, shape: tuple[int, ...] | torch.Size, tensor_name: str, salt: str = "") -> torch.Tensor:
        """fp32 uniforms in [0, 1) of ``shape`` on ``self.device``, drawn on the CPU from ``generator``.

        The one way kernels draw random numbers: the same bits on CPU and CUDA (the draw costs CPU time
        on a CUDA merge, about a second per 10^8 entries, which is small next to reading the weights)."""
        draw = torch.rand(tuple(shape), generator=self.generator(tensor_name, salt), dtype=torch.float32)
        return draw if self.device.type == "cpu" else draw.to(self.device, non_blocking=False)


def tensor_seed(seed: int, tensor_name: str, salt: str = "") -> int:
    """A 63-bit seed derived from (global seed, tensor name, salt) with a stable hash (not Python's)."""
    digest = hashlib.sha256(f"{seed}\x00{tensor_name}\x00{salt}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


# ---------------------------------------------------------------------------------------------------
# Methods and the registry
# ---------------------------------------------------------------------------------------------------


class MergeMethod:
    """Base class of every merge method; see the module docstring for the contract."""

    name: ClassVar[str]
    paper_name: ClassVar[str]
    reference: ClassVar[str]
    params: ClassVar[tuple[Param, ...]] = ()
    model_params: ClassVar[tuple[Param, ...]] = ()
    needs_base: ClassVar[bool] = True
    min_models: ClassVar[int] = 1  # models to merge (base not counted)
    #: True when ``prepare`` does whole-model work (needs calibration data, a global statistic ...).
    has_prepass: ClassVar[bool] = False
    #: True when every output entry depends only on the same entry of the inputs (and no randomness):
    #: the driver may then feed the kernel blocks of rows of a large tensor to bound memory.
    elementwise: ClassVar[bool] = False
    #: Most models to merge besides the base (None: no limit).
    max_models: ClassVar[int | None] = None

    @classmethod
    def check(cls, params: dict[str, Any], model_params: list[dict[str, Any]], where: str) -> None:
        """Cross-parameter checks of a validated configuration (raise ``ConfigError``). Default: none."""

    def prepare(self, job: "MergeJob", ctx: MergeContext) -> None:  # noqa: D401 - optional hook
        """Optional whole-model pre-pass that fills ``ctx.state``. Default: nothing to do."""

    def merge_tensor(
        self, name: str, base: torch.Tensor | None, models: list[torch.Tensor], ctx: MergeContext
    ) -> torch.Tensor:
        raise NotImplementedError

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """A plain-data description (for ``l2s methods`` and the docs)."""
        doc = (cls.__doc__ or "").strip()
        return {
            "name": cls.name,
            "paper_name": cls.paper_name,
            "reference": cls.reference,
            "needs_base": cls.needs_base,
            "params": [dataclasses.asdict(p) | {"type": p.type.__name__} for p in cls.params],
            "model_params": [dataclasses.asdict(p) | {"type": p.type.__name__} for p in cls.model_params],
            "summary": doc.splitlines()[0] if doc else "",
            "doc": doc,
        }


def check_method(cls: type[MergeMethod]) -> type[MergeMethod]:
    """Raise ``TypeError`` unless ``cls`` declares what every registry entry must: name, paper name,
    reference and a docstring (what it computes, what it reduces to with one model to merge)."""
    for attr in ("name", "paper_name", "reference"):
        if not getattr(cls, attr, None):
            raise TypeError(f"merge method {cls.__name__} lacks '{attr}'")
    if not (cls.__doc__ or "").strip():
        raise TypeError(f"merge method {cls.__name__} needs a docstring (what it computes, 1-model reduction)")
    return cls


# ---------------------------------------------------------------------------------------------------
# What a pre-pass may read
# ---------------------------------------------------------------------------------------------------


class TensorSource(Protocol):
    """One input checkpoint, read lazily (implemented by ``l2s_lib.checkpoints``)."""

    path: Path  # local folder with config.json and safetensors
    config: dict[str, Any]  # the parsed config.json

    def tensor_names(self) -> list[str]: ...

    def get_tensor(self, name: str) -> torch.Tensor: ...  # loads one tensor (as stored) on CPU


class MergeJob(Protocol):
    """What ``MergeMethod.prepare`` receives from the driver.

    ``base`` is the base model (System 1 in the paper) or None; ``models`` are the models to merge, in
    config order (System 2 in the paper); ``names`` is the ordered list of tensor names the stream will
    visit; ``ctx`` is the same context the kernels will see. Pre-passes that need whole models (AIM,
    Sens) load them from ``source.path`` with transformers, one at a time, and free them afterwards.
    """

    base: TensorSource | None
    models: list[TensorSource]
    names: list[str]
    ctx: MergeContext

    def load(self, name: str) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
        """(base, models) tensors of output tensor ``name`` in the compute dtype on the compute device,
        exactly as the kernels receive them (tied heads resolved to the embedding)."""
        ...


# ---------------------------------------------------------------------------------------------------
# Tensor classes, for the scope policies of sparsifying and SVD methods
# ---------------------------------------------------------------------------------------------------

#: Classes a scope policy can exclude; every other tensor (2-D linear weights) is always in scope.
SCOPE_CLASSES = ("embeddings", "norms", "biases")


def tensor_class(name: str, ndim: int) -> str:
    """'embeddings' (input embedding, output head), 'norms' (1-D norm gains), 'biases', or 'linear'."""
    if name.endswith(("embed_tokens.weight", "lm_head.weight", "wte.weight", "embed_out.weight")):
        return "embeddings"
    if name.endswith(".bias"):
        return "biases"
    if ndim <= 1:
        return "norms"
    return "linear"


def in_scope(name: str, ndim: int, ctx: MergeContext) -> bool:
    """Whether a sparsifying / SVD method touches this tensor under ``ctx.policies['scope']``.

    Out-of-scope tensors are merged by the method's dense counterpart (no trimming, no dropping, no
    low-rank step). The default scope (every class true) is the paper's: its code touches every tensor.
    """
    cls = tensor_class(name, ndim)
    return cls == "linear" or bool(ctx.policies.get("scope", {}).get(cls, True))
