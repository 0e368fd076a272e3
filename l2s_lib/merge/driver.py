"""The streaming merge driver: validate, pre-pass, then merge tensor by tensor into an atomic output folder.

``merge(config, out_dir)`` does, in order:

1. **Validate** everything before reading a tensor: the configuration (``merge.config``), the output
   folder (refused if it exists unless ``overwrite``), the device, the architecture fields of every input
   (hidden size, layers, heads, vocabulary, RoPE base ...), the tensor names and the shapes; every
   difference is listed.
2. **Plan** the output: which tensors, their dtype and place in which shard (``ShardedWriter.plan``), how
   tied embeddings are handled (``tie_policy``), which config and tokenizer the output gets.
3. **Pre-pass**: ``method.prepare(job, ctx)`` (a global threshold, activation statistics ...).
4. **Stream**: for each tensor (or block of rows, for element-wise methods), a reader thread loads the
   inputs from disk while the main thread merges the previous one on the compute device and a writer
   thread writes the one before to its place in the output shard. Each step: inputs cast to the compute
   dtype on the device and checked for NaN/Inf, kernel, output checked, cast to the output dtype, written
   (element-wise kernels run over cache-sized blocks and check their inputs only when the output is not
   finite: see ``_merge_rows_in_cache``).
   Peak memory is a few tensors (for element-wise methods, a few blocks), whatever the model size.
5. **Finish**: config, tokenizer, generation config, ``l2s_provenance.json``, then the temporary folder
   is renamed to the target.
"""

from __future__ import annotations

import copy
import json
import math
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from l2s_lib import paths
from l2s_lib.checkpoints import (
    EMBED_NAME,
    GENERATION_CONFIG,
    HEAD_NAME,
    PROVENANCE_FILE,
    TOKENIZER_FILES,
    ModelCheckpoint,
    ShardedWriter,
    open_model,
)
from l2s_lib.errors import CheckpointError, ConfigError, NonFiniteError
from l2s_lib.fingerprint import model_fingerprint
from l2s_lib.provenance import git_sha, versions
from l2s_lib.merge.base import MergeContext, MergeMethod
from l2s_lib.merge.config import MergeConfig, load_config

#: Fields that must agree between the inputs (compared where a config has them).
ARCH_FIELDS = (
    "model_type", "architectures", "hidden_size", "intermediate_size", "num_hidden_layers",
    "num_attention_heads", "num_key_value_heads", "head_dim", "vocab_size", "rope_theta",
)
#: Element-wise methods merge large tensors in blocks of rows of at most this many elements. 4M keeps
#: fp32 temporaries (16 MB) under glibc's largest mmap threshold (32 MB), so freed blocks are reused
#: from the heap instead of being unmapped and page-faulted back in for every block (2x slower).
BLOCK_ELEMENTS = 1 << 22
#: Element-wise methods on CPU compute in blocks of rows of about this many elements (see
#: ``_merge_rows_in_cache``).
CACHE_BLOCK_ELEMENTS = 1 << 15
#: torch threads for the arithmetic of a CPU stream (restored afterwards); see ``_stream``.
CPU_COMPUTE_THREADS = 1
#: The reader may run ahead of the merge while the inputs it holds stay under this many bytes.
PREFETCH_BYTES = 1 << 28

COMPUTE_DTYPES = {"float32": torch.float32, "float64": torch.float64, "paper_bf16_arith": torch.bfloat16}
OUTPUT_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class TensorPlan:
    """One output tensor: where its inputs are stored, its shape and output dtype."""

    name: str
    shape: tuple[int, ...]
    out_dtype: torch.dtype
    base_name: str | None  # stored name in the base (None when the kernel gets no base)
    model_names: list[str]  # stored name in each model
    copy_from_reference: bool = False  # non-float tensors are copied, not merged

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


class _BufferPool:
    """Large CPU buffers reused across tensors of the same byte size.

    On CPU the first touch of fresh memory (a page fault per 4 KB) costs more than the arithmetic of a
    merge, and the allocator returns every large tensor to the OS when it is freed. The stream reads,
    converts and writes every tensor into buffers taken from here and gives them back when done, so
    the layers of a model (28 times the same shapes) reuse the same memory. Free buffers are capped at
    ``max_free_bytes``; buffers under 1 MB are left to the allocator.
    """

    MIN_BYTES = 1 << 20

    def __init__(self, max_free_bytes: int):
        self.max_free_bytes = max_free_bytes
        self._free: dict[int, list[torch.Tensor]] = {}
        self._free_bytes = 0
        self._lock = threading.Lock()

    def empty(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        buf = None
        if nbytes >= self.MIN_BYTES:
            with self._lock:
                free = self._free.get(nbytes)
                if free:
                    buf = free.pop()
                    self._free_bytes -= nbytes
        if buf is None:
            return torch.empty(shape, dtype=dtype)
        return buf.view(dtype).view(shape)

    def give(self, *tensors: torch.Tensor | None) -> None:
        """Return tensors that nothing else references any more (duplicates are ignored)."""
        seen = set()
        for t in tensors:
            if t is None or t.device.type != "cpu" or not t.is_contiguous() or t.storage_offset() != 0:
                continue
            nbytes = t.numel() * t.element_size()
            if nbytes < self.MIN_BYTES or nbytes != t.untyped_storage().nbytes() or t.data_ptr() in seen:
                continue
            seen.add(t.data_ptr())
            with self._lock:
                free = self._free.setdefault(nbytes, [])
                if any(f.data_ptr() == t.data_ptr() for f in free):
                    continue
                if self._free_bytes + nbytes > self.max_free_bytes:
                    continue
                free.append(t.view(torch.uint8).view(-1))
                self._free_bytes += nbytes


@dataclass
class _Piece:
    plan: TensorPlan
    rows: tuple[int, int] | None  # a block of rows, or None for the whole tensor
    nbytes: int
    last: bool  # the last piece of its tensor


class MergeJobImpl:
    """What ``MergeMethod.prepare`` receives (implements ``merge.base.MergeJob``)."""

    def __init__(self, base, models, plans: dict[str, TensorPlan], ctx: MergeContext, reference):
        self.base: ModelCheckpoint | None = base
        self.models: list[ModelCheckpoint] = models
        self.plans = plans
        self.names: list[str] = list(plans)
        self.ctx = ctx
        self.reference = reference

    def load(self, name: str) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
        plan = self.plans[name]
        base = None
        if plan.base_name is not None:
            base = _to_compute(self.base.get_tensor(plan.base_name), self.ctx, name, "base")
        models = [_to_compute(m.get_tensor(n), self.ctx, name, f"models[{i}]")
                  for i, (m, n) in enumerate(zip(self.models, plan.model_names))]
        return base, models


def merge(
    config: MergeConfig | str | Path | dict[str, Any],
    out_dir: str | Path,
    device: str = "cpu",
    overwrite: bool = False,
    progress: bool = True,
    max_shard_bytes: int = 5 * 10**9,
) -> Path:
    """Merge the models of ``config`` into ``out_dir`` (a new folder) and return its path.

    ``config``: a validated ``MergeConfig``, a YAML path or a dict in the same schema. ``device``: where
    the arithmetic runs (``cpu``, ``cuda``, ``cuda:1``). Raises ``ConfigError`` / ``CheckpointError`` /
    ``NonFiniteError`` with a message that names what is wrong; on any error the output does not exist.
    """
    t0 = time.time()
    cfg = config if isinstance(config, MergeConfig) else load_config(config)
    dev = _device(device)
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise CheckpointError(f"{out_dir} exists; pass --overwrite (overwrite=True) to replace it")
    method: MergeMethod = cfg.method()

    base = open_model(cfg.base_model) if cfg.base_model else None
    models = [open_model(m.model) for m in cfg.models]
    inputs = ([("base", base)] if base else []) + [(f"models[{i}]", m) for i, m in enumerate(models)]
    reference = base or models[0]
    check_architectures(inputs)
    out_dtype = OUTPUT_DTYPES[cfg.dtype] if cfg.dtype else None
    plans, tie_record = plan_tensors(inputs, reference, cfg.policies["tie_policy"], out_dtype,
                                     kernel_gets_base=method.needs_base and base is not None)

    ctx = MergeContext(
        params=cfg.parameters, model_params=cfg.model_params, seed=cfg.seed, device=dev,
        compute_dtype=COMPUTE_DTYPES[cfg.policies["compute_dtype"]], policies=cfg.policies,
    )
    ctx.state["shapes"] = {n: p.shape for n, p in plans.items()}
    ctx.state["progress"] = progress  # pre-passes (calibration) show bars only when the merge does
    job = MergeJobImpl(base if method.needs_base else None, models, plans, ctx, reference)
    out_config, config_record = output_config(cfg, inputs, reference, models, out_tied=HEAD_NAME not in plans,
                                              out_dtype=out_dtype or reference.stored_dtype)
    tok_src = reference if cfg.tokenizer_source == "base" else next(s for _, s in inputs if s.ref == cfg.tokenizer_source)

    with ShardedWriter(out_dir, overwrite=overwrite, max_shard_bytes=max_shard_bytes) as writer:
        shards = writer.plan([(p.name, p.out_dtype, p.shape) for p in plans.values()])
        t_pre = time.time()
        method.prepare(job, ctx)
        t_stream = time.time()
        _stream(job, method, writer, progress=progress)
        t_end = time.time()
        writer.write_json("config.json", out_config)
        tokenizer_files = writer.copy_files(tok_src.path, TOKENIZER_FILES)
        gen_config, gen_record = output_generation_config(inputs, tok_src)
        if gen_config is not None:
            writer.write_json(GENERATION_CONFIG, gen_config)
        provenance = {
            "l2s_provenance_version": 1,
            "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "method": {"name": method.name, "paper_name": method.paper_name, "reference": method.reference,
                       "parameters": cfg.parameters},
            "inputs": [_describe_input(label, src, cfg) for label, src in inputs],
            "seed": cfg.seed,
            "device": str(dev),
            "rng": "CPU torch.Generator seeded per tensor from sha256(seed, tensor name, salt), draws moved to "
                   "the compute device: the same on every device",
            "policies": cfg.policies | {"tokenizer_source": cfg.tokenizer_source},
            "compute_dtype": str(ctx.compute_dtype).removeprefix("torch."),
            "decisions": {
                "config": config_record,
                "tied_embeddings": tie_record,
                "tokenizer": {"from": tok_src.ref, "files": tokenizer_files},
                "generation_config": gen_record,
            },
            "prepass_state": _jsonable({k: v for k, v in ctx.state.items() if k != "shapes"}),
            "output": {"tensors": len(plans), "shards": shards,
                       "dtypes": sorted({str(p.out_dtype).removeprefix("torch.") for p in plans.values()})},
            "timing_s": {"validate_and_plan": round(t_pre - t0, 3), "prepass": round(t_stream - t_pre, 3),
                         "stream": round(t_end - t_stream, 3)},
            "config_file": paths.relative_to_root(cfg.source) if cfg.source else None,
            "resolved_config": cfg.to_dict(),
            "versions": versions(),
            "git": git_sha(),
        }
        writer.write_json(PROVENANCE_FILE, provenance)
        return writer.commit()


# ---------------------------------------------------------------------------------------------------
# Validation and planning
# ---------------------------------------------------------------------------------------------------


def _device(device: str | torch.device) -> torch.device:
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"unknown device {device!r} (use cpu, cuda or cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device 'cuda' was asked for but torch sees no CUDA device here (use --device cpu)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device {dev} does not exist ({torch.cuda.device_count()} CUDA device(s))")
        # Creating the CUDA context takes seconds: start it now, beside the planning and the first reads.
        threading.Thread(target=torch.zeros, args=((),), kwargs={"device": dev}, daemon=True,
                         name="l2s-cuda-init").start()
    elif dev.type != "cpu":
        raise ConfigError(f"device {device!r} is not supported (use cpu or cuda)")
    return dev


def _arch_value(config: dict[str, Any], key: str) -> Any:
    if key == "rope_theta" and "rope_theta" not in config:
        rp = config.get("rope_parameters") or config.get("rope_scaling") or {}
        return rp.get("rope_theta") if isinstance(rp, dict) else None
    return config.get(key)


def check_architectures(inputs: list[tuple[str, ModelCheckpoint]]) -> None:
    """Raise ``CheckpointError`` listing every architecture field on which the inputs disagree."""
    (ref_label, ref), others = inputs[0], inputs[1:]
    diffs = []
    for label, src in others:
        for key in ARCH_FIELDS:
            a, b = _arch_value(ref.config, key), _arch_value(src.config, key)
            if a is not None and b is not None and a != b:
                diffs.append(f"{key}: {ref_label}={a!r}, {label}={b!r}")
    if diffs:
        raise CheckpointError("the inputs have different architectures: " + "; ".join(diffs)
                              + f" ({ref_label} = {ref.ref}; " + ", ".join(f"{l} = {s.ref}" for l, s in others) + ")")


def plan_tensors(
    inputs: list[tuple[str, ModelCheckpoint]],
    reference: ModelCheckpoint,
    tie_policy: str,
    out_dtype: torch.dtype | None,
    kernel_gets_base: bool,
) -> tuple[dict[str, TensorPlan], dict[str, Any]]:
    """Check names and shapes, decide the output tensors and the fate of the output head.

    ``follow_base``: the output has a separate ``lm_head`` iff the reference (base) has one; a model's own
    head is dropped when the base is tied (the paper's 1.5B merges). ``untie``: the output has an
    ``lm_head`` as soon as one input has one; for a tied input its head is its embedding.
    """
    ref_label = next(l for l, s in inputs if s is reference)
    core = [n for n in reference.tensor_names() if n != HEAD_NAME]
    core_set = set(core)
    problems = []
    for label, src in inputs:
        if src is reference:
            continue
        names = set(src.tensor_names()) - {HEAD_NAME}
        missing, extra = sorted(core_set - names), sorted(names - core_set)
        if missing:
            problems.append(f"{label} lacks {len(missing)} tensor(s) of {ref_label}: {_few(missing)}")
        if extra:
            problems.append(f"{label} has {len(extra)} tensor(s) that {ref_label} lacks: {_few(extra)}")
    if problems:
        raise CheckpointError("tensor names differ: " + "; ".join(problems))

    has_head = {label: HEAD_NAME in src for label, src in inputs}
    out_head = HEAD_NAME in reference or (tie_policy == "untie" and any(has_head.values()))
    head_src = {}
    for label, src in inputs:
        if HEAD_NAME in src:
            head_src[label] = HEAD_NAME
        elif EMBED_NAME in src:
            head_src[label] = EMBED_NAME  # a tied model's output head is its input embedding
    names = core + ([HEAD_NAME] if out_head else [])

    mismatches = []
    plans: dict[str, TensorPlan] = {}
    base_label = inputs[0][0] if inputs[0][0] == "base" else None
    model_inputs = [(l, s) for l, s in inputs if l != "base"]
    for name in names:
        stored = {label: (head_src.get(label) if name == HEAD_NAME else name) for label, _ in inputs}
        if any(v is None for v in stored.values()):
            raise CheckpointError(f"{name}: an input has neither lm_head.weight nor {EMBED_NAME}")
        ref_info = reference.info(stored[ref_label])
        for label, src in inputs:
            shape = src.info(stored[label]).shape
            if shape != ref_info.shape:
                mismatches.append(f"{name}: {ref_label} {list(ref_info.shape)} vs {label} {list(shape)}")
        is_float = ref_info.dtype.is_floating_point
        plans[name] = TensorPlan(
            name=name,
            shape=ref_info.shape,
            out_dtype=(out_dtype or ref_info.dtype) if is_float else ref_info.dtype,
            base_name=stored[base_label] if (kernel_gets_base and base_label) else None,
            model_names=[stored[l] for l, _ in model_inputs],
            copy_from_reference=not is_float,
        )
    if mismatches:
        raise CheckpointError(f"tensor shapes differ ({len(mismatches)}): {_few(mismatches, 8)}")

    record = {
        "policy": tie_policy,
        "output_tied": not out_head,
        "inputs_tied": {label: not has_head[label] for label, _ in inputs},
    }
    dropped = [label for label, _ in inputs if has_head[label] and not out_head]
    if dropped:
        record["dropped_lm_head_of"] = dropped
        record["note"] = ("the output ties its head to the merged embedding (follow_base, as the paper did); "
                          "the separate lm_head of " + ", ".join(dropped) + " is not used")
    from_embedding = [label for label, _ in inputs if out_head and not has_head[label]]
    if from_embedding:
        record["lm_head_from_embedding_of"] = from_embedding
    return plans, record


def output_config(cfg: MergeConfig, inputs, reference: ModelCheckpoint, models: list[ModelCheckpoint],
                  out_tied: bool, out_dtype: torch.dtype) -> tuple[dict[str, Any], dict[str, Any]]:
    """The output's config.json and a record of how it was chosen (``config_source`` policy)."""
    source = cfg.policies["config_source"]
    origin = models[0] if source == "model" else reference
    out = copy.deepcopy(origin.config)
    record: dict[str, Any] = {"config_source": source, "from": origin.ref}
    if source == "patched":
        values = [s.config.get("max_position_embeddings") for _, s in inputs]
        values = [v for v in values if isinstance(v, int)]
        target = cfg.policies.get("max_position_embeddings") or (max(values) if values else None)
        old = out.get("max_position_embeddings")
        if target is not None and target != old:
            out["max_position_embeddings"] = target
            record["max_position_embeddings"] = {"from": old, "to": target}
            record["note"] = (f"max_position_embeddings raised from {old} to {target} so that generation budgets "
                              "beyond the base's context fit (the paper saved System 1's config, 4096 positions "
                              "for the Math models, yet reports answers longer than that)")
        else:
            record["note"] = "max_position_embeddings already allows the budget; config unchanged"
    out["tie_word_embeddings"] = out_tied
    name = str(out_dtype).removeprefix("torch.")
    if "torch_dtype" in out:
        out["torch_dtype"] = name
    else:
        out["dtype"] = name
    record["tie_word_embeddings"] = out_tied
    record["dtype"] = name
    return out, record


def output_generation_config(inputs, tok_src: ModelCheckpoint) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The output's generation_config.json and a record of it: the tokenizer source's file, with
    ``eos_token_id`` listing the end-of-sequence / end-of-turn ids of *every* input.

    A merge keeps one input's tokenizer and generation config, but it may end its turn the way another
    input does (System 2 of the paper ends turns with its own token, while Qwen2.5-Math's config lists
    ``<|endoftext|>`` only): without the other ids generation would run on to the budget. The inputs share
    one vocabulary (checked with the architectures), so their ids mean the same tokens. None when no input
    has a generation config or declares a stop id.
    """
    from l2s_lib.tokenization import checkpoint_stop_ids

    src_file = Path(tok_src.path) / GENERATION_CONFIG
    out: dict[str, Any] = json.loads(src_file.read_text()) if src_file.is_file() else {}
    ids: list[int] = []
    added: dict[str, list[int]] = {}
    for label, src in [("tokenizer source", tok_src)] + [(lbl, s) for lbl, s in inputs if s is not tok_src]:
        for i in checkpoint_stop_ids(src.path):
            if i not in ids:
                ids.append(i)
                added.setdefault(src.ref, []).append(i)
    if not out and not ids:
        return None, None
    if ids:
        out["eos_token_id"] = ids if len(ids) > 1 else ids[0]
    return out, {"from": tok_src.ref, "eos_token_id": ids, "stop_ids_by_input": added}


def _few(items: list[str], n: int = 5) -> str:
    return ", ".join(items[:n]) + (f" (+{len(items) - n} more)" if len(items) > n else "")


def _describe_input(label: str, src: ModelCheckpoint, cfg: MergeConfig) -> dict[str, Any]:
    d = {"role": label, "ref": src.ref, "path": paths.relative_to_root(src.path), "hub_id": src.hub_id,
         "fingerprint": model_fingerprint(src.path)}
    if label.startswith("models["):
        d["parameters"] = cfg.models[int(label[7:-1])].parameters
    return d


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return obj.tolist() if obj.numel() <= 64 else f"tensor{list(obj.shape)}"
    if isinstance(obj, (int, float, str, bool)) or obj is None:
        return obj
    return str(obj)


# ---------------------------------------------------------------------------------------------------
# The stream
# ---------------------------------------------------------------------------------------------------


def all_finite(t: torch.Tensor) -> bool:
    """Whether a tensor has no NaN/Inf.

    A NaN or Inf makes the sum NaN or Inf, so a finite fp32 sum proves the tensor finite; only a
    non-finite sum (a bad tensor, or a finite one whose sum overflows) takes the exact elementwise
    check. ``torch.isfinite`` is a 10x slower pass on CPU (no vectorised bf16 kernel) and allocates a
    mask as large as the tensor.
    """
    if not t.is_floating_point() or t.numel() == 0:
        return True
    if bool(torch.isfinite(t.sum(dtype=torch.float32 if t.dtype != torch.float64 else torch.float64))):
        return True
    return bool(torch.isfinite(t).all())


def _to_compute(t: torch.Tensor, ctx: MergeContext, name: str, label: str) -> torch.Tensor:
    """Cast an input to the compute dtype on the compute device and check it for NaN/Inf."""
    x = t.to(device=ctx.device, dtype=ctx.compute_dtype)
    if not all_finite(x):
        raise NonFiniteError(f"{name}: input {label} contains NaN or Inf")
    return x


def _pieces(job: MergeJobImpl, method: MergeMethod) -> list[_Piece]:
    n_inputs = len(job.models) + (1 if job.base is not None else 0)
    out = []
    for plan in job.plans.values():
        itemsize = torch.empty((), dtype=plan.out_dtype).element_size()
        rows = plan.shape[0] if plan.shape else 1
        row_numel = plan.numel // max(rows, 1)
        if method.elementwise and not plan.copy_from_reference and plan.numel > BLOCK_ELEMENTS and rows > 1:
            step = max(1, BLOCK_ELEMENTS // max(row_numel, 1))
            for r in range(0, rows, step):
                stop = min(rows, r + step)
                out.append(_Piece(plan, (r, stop), (stop - r) * row_numel * itemsize * n_inputs, stop == rows))
        else:
            out.append(_Piece(plan, None, plan.numel * itemsize * n_inputs, True))
    return out


def _stream(job: MergeJobImpl, method: MergeMethod, writer: ShardedWriter, progress: bool) -> None:
    """Read ahead in one thread, merge in this one, write behind in another (bounded memory)."""
    from tqdm.auto import tqdm

    ctx = job.ctx
    pieces = _pieces(job, method)
    stop = threading.Event()
    largest = max((p.nbytes for p in pieces), default=0)
    # Host buffers are pooled on CUDA too (reads, and results coming back): fresh pageable memory per tensor
    # is what made the CUDA path's resident memory 7x the CPU path's.
    pool = _BufferPool(max_free_bytes=3 * largest)
    ctx.inputs_writable = True  # the stream converts inputs into scratch buffers (see _merge_piece)

    def read(piece: _Piece):
        if stop.is_set():
            return None
        plan, rows = piece.plan, piece.rows

        def rd(src: ModelCheckpoint, stored: str) -> torch.Tensor:
            info = src.info(stored)
            n_rows = info.shape[0] if info.shape else 1
            shape = info.shape if rows is None else (rows[1] - rows[0], *info.shape[1:])
            buf = pool.empty((math.prod(shape),), info.dtype) if pool is not None and len(shape) else None
            if rows is None:
                return src.get_tensor(stored, out=buf)
            return src.get_rows(stored, *rows, out=buf) if n_rows else src.get_tensor(stored)

        if plan.copy_from_reference:
            return rd(job.reference, plan.name), []
        base = rd(job.base, plan.base_name) if plan.base_name is not None else None
        return base, [rd(m, n) for m, n in zip(job.models, plan.model_names)]

    def write(piece: _Piece, out: torch.Tensor) -> None:
        if piece.rows is None:
            writer.write(piece.plan.name, out)
        else:
            writer.write_rows(piece.plan.name, piece.rows[0], out)
        if pool is not None:
            pool.give(out)

    # On CPU the arithmetic runs in one thread next to the reader and writer threads: the kernels work in
    # cache-sized blocks (single-threaded by torch's grain size anyway), and OpenMP workers spinning
    # beside busy I/O threads made whole-tensor steps slower, not faster (TIES on the 1.5B benchmark
    # pair: 113 s with one thread, 150 s with two, on a 2-core machine).
    threads = torch.get_num_threads()
    if ctx.device.type == "cpu":
        torch.set_num_threads(CPU_COMPUTE_THREADS)
    reader = ThreadPoolExecutor(1, thread_name_prefix="l2s-read")
    writer_pool = ThreadPoolExecutor(1, thread_name_prefix="l2s-write")
    inflight: deque[tuple[_Piece, Future]] = deque()
    writes: deque[Future] = deque()
    bar = tqdm(total=len(job.plans), unit="tensor", desc=f"merge ({method.name})", disable=not progress)
    next_i = 0
    try:
        while next_i < len(pieces) or inflight:
            # Read ahead while the bytes held by pending reads stay under the budget (always at least one).
            while next_i < len(pieces) and (
                not inflight or sum(p.nbytes for p, _ in inflight) + pieces[next_i].nbytes <= PREFETCH_BYTES
            ):
                inflight.append((pieces[next_i], reader.submit(read, pieces[next_i])))
                next_i += 1
            piece, fut = inflight.popleft()
            base_raw, models_raw = fut.result()
            out = _merge_piece(piece, base_raw, models_raw, method, ctx, pool)
            del base_raw, models_raw
            writes.append(writer_pool.submit(write, piece, out))
            del out
            while len(writes) > 1:  # at most one merged tensor waits for the disk
                writes.popleft().result()
            if piece.last:
                bar.update(1)
        while writes:
            writes.popleft().result()
    finally:
        stop.set()
        for _, f in inflight:
            f.cancel()
        reader.shutdown(wait=True, cancel_futures=True)
        writer_pool.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(threads)
        bar.close()


def _merge_piece(piece: _Piece, base_raw, models_raw, method: MergeMethod, ctx: MergeContext,
                 pool: _BufferPool | None = None) -> torch.Tensor:
    """Merge one piece; the inputs become scratch (written in place by kernels, returned to the pool)."""
    plan = piece.plan
    if plan.copy_from_reference:
        return base_raw
    labels = (["base"] if base_raw is not None else []) + [f"models[{i}]" for i in range(len(models_raw))]
    raws = ([base_raw] if base_raw is not None else []) + list(models_raw)
    expected = tuple(plan.shape) if piece.rows is None else (piece.rows[1] - piece.rows[0], *plan.shape[1:])
    if method.elementwise and ctx.device.type == "cpu" and len(expected) >= 1 and expected[0] > 1:
        out = _merge_rows_in_cache(plan, raws, labels, method, ctx, expected, pool)
        if pool is not None:
            pool.give(*raws)
        return out
    if pool is not None and ctx.device.type == "cpu":
        xs = []
        for t, lab in zip(raws, labels):
            if t.dtype == ctx.compute_dtype:
                x = t  # already in the compute dtype: the read buffer is the scratch copy
            else:
                x = pool.empty(tuple(t.shape), ctx.compute_dtype)
                x.copy_(t)
                pool.give(t)
            if not all_finite(x):
                raise NonFiniteError(f"{plan.name}: input {lab} contains NaN or Inf")
            xs.append(x)
    else:
        xs = [_to_compute(t, ctx, plan.name, lab) for t, lab in zip(raws, labels)]
        if pool is not None and ctx.device.type != "cpu":
            # A copy from pageable memory to the GPU has finished with its source when .to() returns.
            pool.give(*[t for t, x in zip(raws, xs) if x is not t])
    # Keep the original values for the NaN diagnosis only when the kernel cannot have altered them.
    diag = [None] * len(raws)
    base, models = (xs[0], xs[1:]) if base_raw is not None else (None, xs)
    out = method.merge_tensor(plan.name, base, models, ctx)
    if tuple(out.shape) != expected:
        raise RuntimeError(f"{plan.name}: method {method.name} returned shape {tuple(out.shape)}, expected {expected}")
    _check_output(out, plan, diag, labels, method, ctx)
    if pool is not None and (out.device.type != "cpu" or out.dtype != plan.out_dtype):
        result = pool.empty(tuple(out.shape), plan.out_dtype)
        result.copy_(out)  # from the GPU: a synchronous copy into pageable memory
    else:
        result = out.to(device="cpu", dtype=plan.out_dtype)
    if pool is not None:
        pool.give(*[x for x in xs + [out] if x is not result])
    return result


def _merge_rows_in_cache(plan, raws, labels, method, ctx, shape, pool=None) -> torch.Tensor:
    """An element-wise kernel over cache-sized blocks of rows, written into one output buffer.

    Whole-tensor arithmetic on CPU is bound by memory traffic and by page faults: glibc hands every
    temporary above its mmap threshold (128 KB at first) straight back to the OS, so each conversion,
    subtraction and product faults its pages in again. Blocks of ~32K elements keep every temporary
    in the L2 cache and in the malloc heap; the merge then runs about 5x faster. Inputs are checked
    only when a block's output is not finite (element-wise kernels propagate NaN and Inf: x * 0 is NaN
    for both), to name the culprit without two extra passes.
    """
    rows = shape[0]
    row_numel = max(1, math.prod(shape[1:]))
    step = max(1, CACHE_BLOCK_ELEMENTS // row_numel)
    out = pool.empty(shape, plan.out_dtype) if pool is not None else torch.empty(shape, dtype=plan.out_dtype)
    has_base = labels[0] == "base"
    for r in range(0, rows, step):
        # copy=True: kernels may work in place (ctx.inputs_writable); the read buffers stay intact for
        # the NaN diagnosis. Block-sized copies are cheap (in cache).
        xs = [t[r:r + step].to(dtype=ctx.compute_dtype, copy=True) for t in raws]
        base, models = (xs[0], xs[1:]) if has_base else (None, xs)
        res = method.merge_tensor(plan.name, base, models, ctx)
        if res.shape != xs[0].shape:
            raise RuntimeError(f"{plan.name}: method {method.name} returned shape {tuple(res.shape)} for a block "
                               f"of shape {tuple(xs[0].shape)}")
        _check_output(res, plan, [t[r:r + step] for t in raws], labels, method, ctx)
        out[r:r + step].copy_(res)
    return out


def _check_output(out, plan, raws, labels, method, ctx) -> None:
    if all_finite(out):
        return
    for t, lab in zip(raws, labels):
        if t is not None and not all_finite(t):
            raise NonFiniteError(f"{plan.name}: input {lab} contains NaN or Inf")
    raise NonFiniteError(f"{plan.name}: the merged tensor contains NaN or Inf (method {method.name}, "
                         f"compute dtype {ctx.compute_dtype}); check the parameters")
