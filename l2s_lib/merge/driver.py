"""The streaming merge driver: validate, pre-pass, then merge tensor by tensor into an atomic output folder.

``merge(config, out_dir)`` does, in order:

1. **Validate** everything before reading a tensor: the configuration (``merge.config``), the output
   folder (refused if it exists unless ``overwrite``), the device, the architecture fields of every input
   (hidden size, layers, heads, vocabulary, RoPE base ...), the tensor names and the shapes; every
   difference is listed (``merge.plan``).
2. **Plan** the output (``merge.plan``): which tensors, their dtype and place in which shard
   (``ShardedWriter.plan``), how tied embeddings are handled (``tie_policy``), which config and tokenizer
   the output gets.
3. **Pre-pass**: ``method.prepare(job, ctx)`` (a global threshold, activation statistics ...).
4. **Stream** (``merge.stream``): for each tensor (or block of rows, for element-wise methods), a reader
   thread loads the inputs from disk while the main thread merges the previous one on the compute device
   and a writer thread writes the one before to its place in the output shard. Each step: inputs cast to
   the compute dtype on the device and checked for NaN/Inf, kernel, output checked, cast to the output
   dtype, written (element-wise kernels run over cache-sized blocks and check their inputs only when the
   output is not finite: see ``stream._merge_rows_in_cache``).
   Peak memory is a few tensors (for element-wise methods, a few blocks), whatever the model size.
5. **Finish**: config, tokenizer, generation config, ``l2s_provenance.json``, then the temporary folder
   is renamed to the target.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from l2s_lib import paths
from l2s_lib.checkpoints import (
    GENERATION_CONFIG,
    HEAD_NAME,
    PROVENANCE_FILE,
    TOKENIZER_FILES,
    ModelCheckpoint,
    ShardedWriter,
    open_model,
)
from l2s_lib.errors import CheckpointError, ConfigError
from l2s_lib.fingerprint import model_fingerprint
from l2s_lib.provenance import git_sha, versions
from l2s_lib.merge.base import MergeContext, MergeMethod
from l2s_lib.merge.config import MergeConfig, load_config
from l2s_lib.merge.plan import (
    COMPUTE_DTYPES,
    OUTPUT_DTYPES,
    check_architectures,
    output_config,
    output_generation_config,
    plan_tensors,
)
from l2s_lib.merge.stream import MergeJobImpl, stream_tensors


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
        stream_tensors(job, method, writer, progress=progress)
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

