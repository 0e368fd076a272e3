"""The tensor stream of a merge: read ahead, merge, write behind, in bounded memory.

For each tensor of the plan (or block of rows, for element-wise methods), a reader thread loads the
inputs from disk while the main thread merges the previous one on the compute device and a writer thread
writes the one before to its place in the output shard (``stream_tensors``). Each step: inputs cast to
the compute dtype on the device and checked for NaN/Inf, kernel, output checked, cast to the output
dtype, written (element-wise kernels run over cache-sized blocks and check their inputs only when the
output is not finite: see ``_merge_rows_in_cache``). Peak memory is a few tensors (for element-wise
methods, a few blocks), whatever the model size.

``MergeJobImpl`` is the job the stream runs over, and what ``MergeMethod.prepare`` receives: the plans
(``merge.plan``) with the opened inputs, loaded exactly as the kernels see them.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import torch

from l2s_lib.checkpoints import ModelCheckpoint, ShardedWriter
from l2s_lib.errors import NonFiniteError
from l2s_lib.merge.base import MergeContext, MergeMethod
from l2s_lib.merge.plan import TensorPlan

#: Element-wise methods merge large tensors in blocks of rows of at most this many elements. 4M keeps
#: fp32 temporaries (16 MB) under glibc's largest mmap threshold (32 MB), so freed blocks are reused
#: from the heap instead of being unmapped and page-faulted back in for every block (2x slower).
BLOCK_ELEMENTS = 1 << 22
#: Element-wise methods on CPU compute in blocks of rows of about this many elements (see
#: ``_merge_rows_in_cache``).
CACHE_BLOCK_ELEMENTS = 1 << 15
#: torch threads for the arithmetic of a CPU stream (restored afterwards); see ``stream_tensors``.
CPU_COMPUTE_THREADS = 1
#: The reader may run ahead of the merge while the inputs it holds stay under this many bytes.
PREFETCH_BYTES = 1 << 28


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


def stream_tensors(job: MergeJobImpl, method: MergeMethod, writer: ShardedWriter, progress: bool) -> None:
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
