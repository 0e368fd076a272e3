"""The task-vector methods of the paper: Average, Task Arithmetic, TIES, DARE (on linear/TA and TIES), SLERP.

As in mergekit, Task Arithmetic, TIES and DARE are settings of one *generalized task arithmetic*
(``generalized_task_arithmetic``): per tensor, each model's task vector ``delta_k = theta_k - base`` is
optionally sparsified (random drop and rescale: DARE; magnitude trim: TIES), weighted by its ``weight``,
optionally restricted to the entries that agree with the elected sign (TIES), summed, optionally divided by
the sum of the (agreeing) weights (``normalize``), scaled by ``lambda``, and added to the base. The order of
operations is mergekit's, so that mergekit configs give the same tensors here (see tests/test_merge_mergekit.py).

Parameter names follow mergekit (``weight``, ``density`` = fraction *kept*, ``lambda``, ``normalize``,
``rescale``); the paper's trim ratio k (fraction *removed*) and drop rate p are ``1 - density`` (see
configs/merges/README.md). Which tensors are sparsified is the ``scope`` policy; how TIES trims is the
``trim_mode`` policy (exact top-k, the paper's kth-value rule, or one global threshold per model).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch

from l2s_lib.errors import ConfigError
from l2s_lib.merge.base import MergeContext, MergeJob, MergeMethod, Param, in_scope

# ---------------------------------------------------------------------------------------------------
# Shared parameter specs (mergekit's names)
# ---------------------------------------------------------------------------------------------------

P_WEIGHT = Param("weight", float, 1.0, "coefficient of this model's task vector (the paper's alpha for TA)")
P_DENSITY = Param("density", float, 1.0, "fraction of task-vector entries kept (paper: 1 - k for TIES, 1 - p "
                  "for DARE)", low=0.0, high=1.0)
P_LAMBDA = Param("lambda", float, 1.0, "scale of the merged task vector (the paper's alpha for TIES)")
P_INT8 = Param("int8_mask", bool, False, "accepted for mergekit compatibility: a memory option of mergekit "
               "that does not change results")


def _normalize(default: bool) -> Param:
    return Param("normalize", bool, default, "divide the summed task vectors by the sum of the (agreeing) weights")


P_RESCALE = Param("rescale", bool, True, "rescale kept entries after the random drop (policy dare_rescale: "
                  "1/density or the L1 norm)")
P_TRIM_DENSITY = Param("trim_density", float, 1.0, "after the random drop, keep this fraction of entries by "
                       "magnitude (the paper's DARE-TIES trims with TIES's k; 1.0 = mergekit's dare_ties)",
                       low=0.0, high=1.0)


# ---------------------------------------------------------------------------------------------------
# Sparsification kernels
# ---------------------------------------------------------------------------------------------------


#: Elements per block in the selection and masking loops on CPU: the block's buffers stay in the L2
#: cache (the loops make several passes) and torch runs ops this small in the calling thread (its
#: parallel grain size is 32768): measured on the 2-core test machine, trimming 58M entries took 1.3 s
#: with blocks of 2^15, 110 s with 2^16 (OpenMP hand-offs per tiny op) and 17 s with 2^20.
CHUNK = 1 << 15
#: On a GPU, blocks are launch-bound instead: use large ones.
CHUNK_CUDA = 1 << 24


def _chunk(x: torch.Tensor) -> int:
    return CHUNK if x.device.type == "cpu" else CHUNK_CUDA


class _Workspace:
    """Reusable per-block buffers. Fresh multi-MB allocations are returned to the OS on free and
    page-faulted back on the next allocation, which made block loops 3-4x slower than the arithmetic."""

    def __init__(self, like: torch.Tensor):
        n = min(_chunk(like), max(like.numel(), 1))
        self.chunk = _chunk(like)
        self.abs = torch.empty(n, dtype=torch.float32, device=like.device)
        self.m1 = torch.empty(n, dtype=torch.bool, device=like.device)
        self.m2 = torch.empty(n, dtype=torch.bool, device=like.device)


def _abs_blocks(x: torch.Tensor, ws: _Workspace | None = None):
    """``|x|`` in fp32 (exact for bf16/fp16 inputs), block by block over the flattened tensor.

    Each yielded block is a view of a reused buffer: use it before asking for the next one."""
    flat = x.reshape(-1)
    ws = ws or _Workspace(x)
    ch = ws.chunk
    for i in range(0, flat.numel(), ch):
        a = ws.abs[: min(ch, flat.numel() - i)]
        a.copy_(flat[i:i + ch]).abs_()
        yield a


def kth_smallest(blocks, n: int, k: int, sample: int = 1 << 16, sampler=None) -> tuple[float, int, int]:
    """The exact k-th smallest (1-based) ``v`` of ``n`` non-negative values given as fp32 blocks by
    ``blocks()``, with the number of values ``> v`` and ``== v``.

    ``blocks`` is called again for each pass, so the values can live in one tensor (selection inside a
    TIES kernel) or be re-read from disk (the global TIES threshold). A strided sample brackets the target
    rank (``sampler(stride)``, when given, returns that sample directly); one counting pass keeps only the values inside the bracket (about 1-2% of them) and
    ``kthvalue`` finishes on those. The bracket is widened if the sample missed, up to the whole set, so
    the answer is always exact. Why not ``torch.kthvalue`` on the whole tensor: on CPU it copies its input
    and allocates an int64 index per element (12 bytes per value: 2.8 GB for a 1.5B-model embedding),
    and ``torch.quantile`` refuses inputs above ~16M elements.
    """
    if not 1 <= k <= n:
        raise ValueError(f"k={k} out of range for {n} values")
    stride = max(1, n // sample)
    if sampler is not None:
        samples = sampler(stride).float().cpu().sort().values
    else:
        samples = torch.cat([b[::stride].cpu() for b in blocks()]).sort().values
    s = samples.numel()
    q = k / n
    sigma = math.sqrt(max(q * (1 - q), 1.0 / s) / s)
    for widen in (1.0, 8.0, None):
        if widen is None:  # last resort: everything is a candidate
            lo, hi = -math.inf, math.inf
        else:
            m = 6 * sigma * widen + 2.0 / s
            lo_i, hi_i = math.floor((q - m) * s), math.ceil((q + m) * s)
            lo = float(samples[lo_i]) if lo_i >= 0 else -math.inf
            hi = float(samples[hi_i]) if hi_i < s else math.inf
        below = 0
        cands = []
        bufs: list[torch.Tensor] = []
        for b in blocks():
            if not bufs or bufs[0].numel() < b.numel():
                bufs = [torch.empty(b.numel(), dtype=torch.bool, device=b.device) for _ in range(2)]
            m1, m2 = bufs[0][: b.numel()], bufs[1][: b.numel()]
            torch.ge(b, lo, out=m1)
            below += b.numel() - int(torch.count_nonzero(m1))  # count_nonzero: 3x faster than bool sum
            m1.logical_and_(torch.le(b, hi, out=m2))
            cands.append(b[m1].cpu())  # boolean indexing: 4x faster than masked_select on CPU
        cand = torch.cat(cands)
        if below < k <= below + cand.numel():
            v = float(torch.kthvalue(cand, k - below).values)
            n_eq = int((cand == v).sum())
            n_gt = n - below - cand.numel() + int((cand > v).sum())
            return v, n_gt, n_eq
    raise AssertionError("unreachable: the last bracket holds every value")


def trim_exact(delta: torch.Tensor, density: float, inplace: bool = False) -> torch.Tensor:
    """Keep the ``max(1, floor(density*n))`` largest-magnitude entries (mergekit's count), zero the rest.

    Equal magnitudes at the boundary are kept in order of position (a stable sort's choice), so the
    result is deterministic on every device. O(n) selection, block-wise masking (no n-sized index).
    """
    if density >= 1:
        return delta
    n = delta.numel()
    if density <= 0 or n == 0:
        return torch.zeros_like(delta)
    k = max(1, int(density * n))
    out = delta.contiguous() if inplace else delta.clone(memory_format=torch.contiguous_format)
    ws = _Workspace(out)
    v, n_gt, n_eq = kth_smallest(lambda: _abs_blocks(out, ws), n, n - k + 1,  # v: the k-th largest
                                 sampler=lambda st: out.reshape(-1)[::st].abs())
    need = k - n_gt  # entries equal to v still to keep, first positions first
    keep_all_eq = need >= n_eq
    flat = out.view(-1)
    for i, a in zip(range(0, n, ws.chunk), _abs_blocks(out, ws)):
        keep = ws.m1[: a.numel()]
        if keep_all_eq:
            torch.ge(a, v, out=keep)
        else:
            torch.gt(a, v, out=keep)
            if need > 0:
                eq = torch.nonzero(a == v).reshape(-1)[:need]  # positions in increasing order
                keep[eq] = True
                need -= eq.numel()
        flat[i:i + ws.chunk].mul_(keep)
    return out


def trim_paper(delta: torch.Tensor, density: float, inplace: bool = False) -> torch.Tensor:
    """The L2S code's per-tensor trim: ``c = floor(n*k)`` with ``k = 1 - density``; keep ``|delta| >= t``
    where ``t`` is the c-th smallest magnitude (so ties at ``t``, and ``t`` itself, are kept); ``c = 0``
    trims nothing."""
    k = round(1.0 - density, 12)  # 1 - 0.2 must give the paper's 0.8, not 0.8000000000000000444
    n = delta.numel()
    c = int(n * k)
    if c <= 0:
        return delta
    out = delta.contiguous() if inplace else delta.clone(memory_format=torch.contiguous_format)
    ws = _Workspace(out)
    t, _, _ = kth_smallest(lambda: _abs_blocks(out, ws), n, c, sampler=lambda st: out.reshape(-1)[::st].abs())
    return trim_threshold(out, t, inplace=True, ws=ws)


def trim_threshold(delta: torch.Tensor, threshold: float, inplace: bool = False,
                   ws: _Workspace | None = None) -> torch.Tensor:
    """Keep ``|delta| >= threshold`` (the paper's rule; the global TIES threshold comes from the pre-pass)."""
    out = delta.contiguous() if inplace else delta.clone(memory_format=torch.contiguous_format)
    ws = ws or _Workspace(out)
    flat = out.view(-1)
    for i, a in zip(range(0, flat.numel(), ws.chunk), _abs_blocks(out, ws)):
        keep = ws.m1[: a.numel()]
        torch.ge(a, threshold, out=keep)
        flat[i:i + ws.chunk].mul_(keep)
    return out


def dare_keep(shape: tuple[int, ...] | torch.Size, density: float, name: str, k: int, ctx: MergeContext) -> torch.Tensor:
    """DARE's keep mask of model ``k`` for tensor ``name``: ``u < density`` with ``u`` fp32 uniforms from
    ``ctx.random_uniform`` (drawn on the CPU, seeded per tensor name and model): the same mask on every
    device. Drawn in fp32 whatever the compute dtype: the paper code's bf16 probabilities realise
    p = 0.30078 instead of 0.3."""
    return ctx.random_uniform(shape, name, f"dare:{k}") < density


def dare(delta: torch.Tensor, keep: torch.Tensor, density: float, rescale: str | None,
         paper_divisor: bool = False) -> torch.Tensor:
    """Zero the entries of ``delta`` where ``keep`` is false and rescale the survivors.

    ``rescale``: ``'inverse'`` divides by ``density`` (DARE and the L2S code), ``'l1'`` restores the
    tensor's L1 norm (mergekit), ``None`` does not rescale. ``paper_divisor`` divides by the paper code's
    ``1 - p`` with ``p = 1 - density`` (``torch.div`` by that Python float), for ``paper_bf16_arith``.
    """
    if density >= 1:
        return delta
    out = delta * keep
    if rescale == "inverse":
        out = torch.div(out, 1 - round(1.0 - density, 12)) if paper_divisor else out / density
    elif rescale == "l1":
        before, after = delta.abs().sum(), out.abs().sum()
        if before >= 1e-7 and after >= 1e-7:  # mergekit's guard against empty masks
            out = out * (before / after)
    return out


# ---------------------------------------------------------------------------------------------------
# Sparsifiers and consensus: the values that make one generalized task arithmetic into TA, TIES, DARE ...
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sparsifier:
    """One sparsification step applied to each model's task vector, in ``GeneralizedTaskArithmetic.sparsifiers``
    order (only to tensors in the ``scope`` policy).

    ``apply(delta, model_params, tensor_name, model_index, ctx)`` returns the sparsified task vector (it
    may work in place: ``delta`` is the kernel's own tensor). ``density_key`` names the per-model
    parameter holding the kept fraction. ``magnitude``: a magnitude trim (its threshold can be global:
    policy ``trim_mode``). ``random``: draws random numbers. ``paper_writes_back``: under
    ``paper_bf16_arith`` the paper code writes ``base + sparsified delta`` back into the bf16 model and
    derives the task vector again from it (DARE's ``mask_model_weights``). ``check`` validates the
    per-model parameters of a configuration.
    """

    name: str
    apply: Callable[[torch.Tensor, dict[str, Any], str, int, MergeContext], torch.Tensor]
    density_key: str
    magnitude: bool = False
    random: bool = False
    paper_writes_back: bool = False
    check: Callable[[list[dict[str, Any]], str], None] | None = None


def _dare_apply(d, mp, name, k, ctx):
    rescale = ctx.policies.get("dare_rescale", "inverse") if ctx.params.get("rescale", True) else None
    if mp["density"] >= 1:
        return d
    keep = dare_keep(d.shape, mp["density"], name, k, ctx)
    return dare(d, keep, mp["density"], rescale, paper_divisor=_paper_arith(ctx))


def _magnitude_apply(key: str):
    def apply(d, mp, name, k, ctx):
        return _trim(d, mp[key], name, k, ctx)

    return apply


def _check_positive_density(model_params: list[dict[str, Any]], where: str) -> None:
    for i, mp in enumerate(model_params):
        if mp["density"] <= 0:
            raise ConfigError(f"{where}: models[{i}] density must be > 0 for a random drop (it is the keep "
                              f"probability; the rescale divides by it), got {mp['density']}")


#: DARE's random drop and rescale (per-model ``density`` = keep probability).
DARE = Sparsifier("dare", _dare_apply, "density", random=True, paper_writes_back=True, check=_check_positive_density)
#: TIES's magnitude trim (per-model ``density`` = kept fraction).
MAGNITUDE = Sparsifier("magnitude", _magnitude_apply("density"), "density", magnitude=True)
#: The magnitude trim after DARE's drop of the paper's DARE-TIES (per-model ``trim_density``).
MAGNITUDE_AFTER_DROP = Sparsifier("magnitude", _magnitude_apply("trim_density"), "trim_density", magnitude=True)


@dataclass(frozen=True)
class Consensus:
    """How the weighted task vectors of one coordinate are combined.

    ``None`` in a method (no consensus) sums them, and ``normalize`` divides by the sum of the weights.
    ``SIGN`` is TIES's election: the elected sign of a coordinate is that of the weighted sum (zero counts
    as positive: mergekit's ``sum`` rule and the L2S code's), only the entries that agree with it are
    summed, and ``normalize`` divides by the sum of the agreeing weights (the disjoint mean).
    """

    name: str


SIGN = Consensus("sign")
#: The average of the base and the (sparsified) models, ``(A + sum_k B'_k) / (n + 1)``: each task vector
#: weighs ``1 / (n + 1)`` (the methods that use it have no ``weight``). The paper's DARE row is DARE on
#: Average merging of System 1 and System 2 (``mask_apply_method: average_merging``).
MEAN_WITH_BASE = Consensus("mean_with_base")


def _weights(ctx: MergeContext, consensus: Consensus | None) -> list[float]:
    if consensus is MEAN_WITH_BASE:
        return [1.0 / (len(ctx.model_params) + 1)] * len(ctx.model_params)
    return [mp["weight"] for mp in ctx.model_params]


def _paper_arith(ctx: MergeContext) -> bool:
    return ctx.policies.get("compute_dtype") == "paper_bf16_arith"


# ---------------------------------------------------------------------------------------------------
# Generalized task arithmetic
# ---------------------------------------------------------------------------------------------------


def generalized_task_arithmetic(
    name: str,
    base: torch.Tensor,
    models: list[torch.Tensor],
    ctx: MergeContext,
    sparsifiers: tuple[Sparsifier, ...] = (),
    consensus: Consensus | None = None,
) -> torch.Tensor:
    """``base + lambda * combine_k(weight_k * sparsify(theta_k - base))`` in mergekit's order of operations.

    ``sparsifiers`` run in order on each model's task vector (DARE's drop, a magnitude trim ...);
    ``consensus`` is ``None`` (plain weighted sum) or ``SIGN`` (TIES). Under ``compute_dtype:
    paper_bf16_arith`` the arithmetic is the paper code's instead (``paper_code_task_arithmetic``).
    """
    if _paper_arith(ctx):
        return paper_code_task_arithmetic(name, base, models, ctx, sparsifiers, consensus)
    scoped = in_scope(name, base.ndim, ctx)
    p = ctx.params
    deltas = []
    for k, (m, mp) in enumerate(zip(models, ctx.model_params)):
        d = m.sub_(base) if ctx.inputs_writable else m - base
        if scoped:
            for sp in sparsifiers:
                d = sp.apply(d, mp, name, k, ctx)
        deltas.append(d)
    weights = _weights(ctx, consensus)

    if len(deltas) == 1:
        # One model (the L2S setting): the same arithmetic as the general branch below without stacking
        # (sum over one row is the row; the agreeing weight of a non-zero entry is the weight itself).
        d, w = deltas[0], weights[0]  # d is the kernel's own tensor (fresh, or a writable scratch input)
        if w != 1:
            d.mul_(w)
        if p.get("normalize"):
            divisor = w if (w != 0 if consensus else abs(w) >= 1e-8) else 1.0
            if divisor != 1:
                d.div_(divisor)
        lam = p.get("lambda", 1.0)
        if lam != 1:
            d.mul_(lam)
        return d.add_(base)  # a + b == b + a exactly in IEEE arithmetic

    stacked = torch.stack(deltas)
    del deltas
    wt = torch.tensor(weights, dtype=stacked.dtype, device=stacked.device).reshape(-1, *([1] * base.ndim))
    stacked.mul_(wt)
    if consensus is SIGN:
        majority = (stacked.sum(dim=0) >= 0).to(stacked.dtype) * 2 - 1
        mask = stacked.sign() == majority
        mixed = (stacked * mask).sum(dim=0)
        divisor = (wt * mask).sum(dim=0)
        divisor[divisor == 0] = 1
    else:
        mixed = stacked.sum(dim=0)
        divisor = wt.sum(dim=0)
        divisor[divisor.abs() < 1e-8] = 1
    if p.get("normalize"):
        mixed /= divisor
    if p.get("lambda", 1.0) != 1:
        mixed *= p["lambda"]
    return base + mixed


def paper_code_task_arithmetic(name, base, models, ctx, sparsifiers=(), consensus=None) -> torch.Tensor:
    """The L2S code's arithmetic (``src/merging_methods.py``, ``src/mask_weights_utils.py``) on bf16 tensors.

    Step by step as the paper code does it (inputs are the bf16 weights; every op below is a bf16 op
    unless said otherwise):

    - task vector ``tau = B - A``;
    - DARE (``mask_model_weights``): ``tau * keep``, ``torch.div(., 1 - p)``; the result is written back
      into the model, ``B' = A + 1.0 * .``, and the merge method derives ``tau = B' - A`` again;
    - a magnitude trim: ``tau * (|tau| >= t)`` (``trim_mode`` decides ``t``; the paper's is ``paper``);
    - no consensus (``task_arithmetic``): ``A + alpha * (tau_1 + tau_2 + ...)``, ``alpha * .`` rounded to
      bf16 and the sum rounded again;
    - ``SIGN`` (``ties_merging``): elected sign ``sign(sum tau)`` (0 -> +1), agreeing entries kept, their
      bf16 sum divided by the fp32 count of kept entries (so the merged task vector is fp32), then
      ``A + alpha * .`` in fp32, rounded to bf16 once when it is stored;
    - ``MEAN_WITH_BASE`` (``average_merging`` of System 1 and the models, the paper's DARE row):
      ``torch.stack([A', B'_1, ...]).mean(0)`` with ``A' = A + 1.0 * (A - A)`` (masking System 1's zero
      task vector, as the paper's ``--weight_mask_rates p,p`` does).

    ``alpha`` is ``lambda * weight`` (``lambda`` alone where ``normalize`` cancels the weight). The paper
    code has one coefficient for all models, so several models need equal weights here.
    """
    weights = _weights(ctx, consensus)
    if len(set(weights)) > 1:
        raise ConfigError("compute_dtype paper_bf16_arith follows the paper code, which has one coefficient for "
                          f"all models: give every model the same weight (got {weights}) and scale with lambda")
    w, lam, n = weights[0], ctx.params.get("lambda", 1.0), len(models)
    if consensus is SIGN:
        alpha = lam * (1.0 if ctx.params.get("normalize") else w)
    else:
        alpha = lam * (1.0 / n if ctx.params.get("normalize") else w)
    scoped = in_scope(name, base.ndim, ctx)
    taus, written = [], []
    for k, (m, mp) in enumerate(zip(models, ctx.model_params)):
        tau = m - base
        if scoped:
            for sp in sparsifiers:
                tau = sp.apply(tau, mp, name, k, ctx)
                if sp.paper_writes_back:
                    m = base + 1.0 * tau
                    tau = m - base
        taus.append(tau)
        written.append(m)
    if consensus is MEAN_WITH_BASE:
        return torch.stack([base + 1.0 * (base - base), *written]).mean(dim=0)
    if consensus is None:
        merged = taus[0]
        for t in taus[1:]:
            merged = merged + t
        return base + alpha * merged
    summed = sum(taus)
    sign = torch.sign(summed)
    sign[sign == 0] = 1.0
    preserved = [t * (((sign > 0) & (t > 0)) | ((sign < 0) & (t < 0))).to(t.dtype) for t in taus]
    count = sum([(t != 0).float() for t in preserved])
    merged = sum(preserved) / torch.clamp(count, min=1.0)  # bf16 / fp32: an fp32 tensor
    return (base + alpha * merged).to(base.dtype)


def _trim(d: torch.Tensor, density: float, name: str, k: int, ctx: MergeContext) -> torch.Tensor:
    mode = ctx.policies.get("trim_mode", "exact")
    if mode == "exact":
        return trim_exact(d, density, inplace=True)  # d is the kernel's own fresh tensor
    if mode == "paper":
        return trim_paper(d, density, inplace=True)
    thresholds = ctx.state.get("global_trim_thresholds")
    if thresholds is None:
        raise RuntimeError("trim_mode=global needs the pre-pass (MergeMethod.prepare) to run first")
    return trim_threshold(d, thresholds[k], inplace=True)


class GeneralizedTaskArithmetic(MergeMethod):
    """Task arithmetic with a chain of sparsifiers and an optional consensus (not a registry entry itself).

    A registry entry is a subclass made by ``task_arithmetic_method`` with its name, parameters,
    ``sparsifiers`` and ``consensus`` as values, so a new trim or drop (DELLA, breadcrumbs ...) is a
    ``Sparsifier`` and one entry, not a change of the kernel.
    """

    sparsifiers: ClassVar[tuple[Sparsifier, ...]] = ()
    consensus: ClassVar[Consensus | None] = None
    has_prepass = False  # the global-threshold pre-pass runs only when trim_mode is global

    @classmethod
    def check(cls, params, model_params, where):
        for sp in cls.sparsifiers:
            if sp.check is not None:
                sp.check(model_params, where)

    def merge_tensor(self, name, base, models, ctx):
        return generalized_task_arithmetic(name, base, models, ctx, self.sparsifiers, self.consensus)

    def prepare(self, job: MergeJob, ctx: MergeContext) -> None:
        trims = [i for i, sp in enumerate(self.sparsifiers) if sp.magnitude]
        if trims and ctx.policies.get("trim_mode") == "global":
            ctx.state["global_trim_thresholds"] = global_trim_thresholds(job, ctx, self, trims[0])

    def task_vectors_before(self, step: int, name, base, models, ctx) -> list[torch.Tensor]:
        """The task vectors that sparsifier ``step`` sees (after the steps before it, for in-scope tensors)."""
        out = []
        for k, (m, mp) in enumerate(zip(models, ctx.model_params)):
            d = m - base
            if in_scope(name, base.ndim, ctx):
                for sp in self.sparsifiers[:step]:
                    d = sp.apply(d, mp, name, k, ctx)
            out.append(d)
        return out


def task_arithmetic_method(name: str, paper_name: str, reference: str, doc: str, *,
                           sparsifiers: tuple[Sparsifier, ...] = (), consensus: Consensus | None = None,
                           params: tuple[Param, ...], model_params: tuple[Param, ...]) -> type[GeneralizedTaskArithmetic]:
    """A registry entry of the task-arithmetic family: ``GeneralizedTaskArithmetic`` with these values.

    Element-wise (row blocks allowed) exactly when there is no sparsifier: a trim needs the whole tensor
    and a random draw its whole shape."""
    return type(f"GTA_{name}", (GeneralizedTaskArithmetic,), {
        "__doc__": doc, "__module__": __name__, "name": name, "paper_name": paper_name, "reference": reference,
        "sparsifiers": tuple(sparsifiers), "consensus": consensus, "elementwise": not sparsifiers,
        "params": tuple(params), "model_params": tuple(model_params),
    })


def global_trim_thresholds(job: MergeJob, ctx: MergeContext, method: GeneralizedTaskArithmetic,
                           step: int) -> list[float]:
    """Per model, the c-th smallest ``|delta|`` over every in-scope tensor of the model, exactly.

    ``c = floor(N * (1 - density))`` with N the number of in-scope entries (the original TIES and the
    L2S ``ties_merging_dare`` rule; entries ``>=`` the threshold are kept); ``delta`` is the task vector
    that magnitude sparsifier ``step`` sees. The model never sits in memory: ``kth_smallest`` re-reads
    the tensors for each of its passes (two, usually).
    """
    key = method.sparsifiers[step].density_key
    densities = [mp[key] for mp in ctx.model_params]
    shapes = ctx.state["shapes"]
    names = [n for n in job.names if in_scope(n, len(shapes[n]), ctx)]
    n_total = sum(math.prod(shapes[n]) for n in names)
    thresholds = []
    for k, density in enumerate(densities):
        c = int(n_total * round(1.0 - density, 12))
        if c <= 0 or n_total == 0:
            thresholds.append(0.0)  # nothing trimmed: |delta| >= 0 always holds
            continue

        def blocks(k=k):
            for name in names:
                base, models = job.load(name)
                d = method.task_vectors_before(step, name, base, models, ctx)[k]
                yield from _abs_blocks(d)

        thresholds.append(kth_smallest(blocks, n_total, c)[0])
    ctx.state["global_trim"] = {"entries": n_total, "thresholds": thresholds}
    return thresholds


# ---------------------------------------------------------------------------------------------------
# The methods
# ---------------------------------------------------------------------------------------------------


class Average(MergeMethod):
    """Weighted average of the models: M = sum_i w_i theta_i / sum_i w_i (mergekit ``linear``).

    With the default weights (all 1) this is the uniform average of model soups. No base is used: list
    System 1 *and* System 2 under ``models`` to get the paper's Average row, ``M = (A + B) / 2`` = TA(0.5)
    (the L2S code averages only the models to merge; one model alone returns that model unchanged).
    ``normalize: false`` gives the plain weighted sum.
    """

    name = "average"
    paper_name = "Average Merging"
    reference = "https://arxiv.org/abs/2203.05482"
    needs_base = False
    elementwise = True
    params = (_normalize(True),)
    model_params = (P_WEIGHT,)

    @classmethod
    def check(cls, params, model_params, where):
        if params["normalize"] and abs(sum(mp["weight"] for mp in model_params)) < 1e-12:
            raise ConfigError(f"{where}: the weights sum to 0, so normalize: true would divide by zero")

    def merge_tensor(self, name, base, models, ctx):
        # mergekit's accumulation (addcmul into a zero tensor, then one division), for identical results.
        w = torch.tensor([mp["weight"] for mp in ctx.model_params], dtype=ctx.compute_dtype, device=models[0].device)
        out = torch.zeros_like(models[0])
        for t, c in zip(models, w.unbind(0)):
            out.addcmul_(t, c)
        if ctx.params["normalize"]:
            out.div_(w.sum())
        return out




TaskArithmetic = task_arithmetic_method(
    "task_arithmetic", "Task Arithmetic (TA)", "https://arxiv.org/abs/2212.04089",
    """Task Arithmetic: M = base + lambda * sum_k w_k (theta_k - base); one model: A + alpha (B - A).

    With ``normalize: true`` the sum is divided by sum_k w_k.

    One model to merge (the paper): ``M = A + alpha (B - A)`` with alpha = ``weight`` (or ``lambda``);
    alpha = 0 gives System 1, alpha = 1 System 2, alpha = 0.5 the average. The paper uses alpha = 0.7.
    """,
    params=(P_LAMBDA, _normalize(False), P_INT8), model_params=(P_WEIGHT,))

Ties = task_arithmetic_method(
    "ties", "TIES-Merging", "https://arxiv.org/abs/2306.01708",
    """TIES-Merging: trim task vectors by magnitude, elect signs, average the agreeing entries, scale.

    Each task vector keeps its largest-magnitude entries; a sign is elected per entry; the agreeing
    entries are averaged (disjoint mean), scaled by ``lambda`` and added to the base.

    One model to merge (the paper): the sign election is the identity, so ``M = A + lambda * trim(B - A)``
    (with ``normalize: true`` the model's ``weight`` cancels). The paper's k (fraction removed) is
    ``1 - density``: 7B uses k = 0.8, alpha = 1, i.e. ``density: 0.2, lambda: 1``. ``trim_mode`` chooses
    the exact top-k (default, mergekit's count), the paper's kth-value rule (keeps ties) or the original
    global threshold (pre-pass over the whole model). density 1 gives Task Arithmetic.
    """,
    sparsifiers=(MAGNITUDE,), consensus=SIGN, params=(P_LAMBDA, _normalize(True), P_INT8),
    model_params=(P_WEIGHT, P_DENSITY))

DareLinear = task_arithmetic_method(
    "dare_linear", "DARE", "https://arxiv.org/abs/2311.03099",
    """DARE on task arithmetic (mergekit ``dare_linear``): random drop and rescale, then TA.

    Each task-vector entry is dropped with probability ``1 - density`` and the survivors are rescaled
    (by ``1/density``, the paper's ``1/(1 - p)``, under the default ``dare_rescale: inverse``; mergekit
    restores the L1 norm instead: ``dare_rescale: l1``).

    One model to merge: ``M = A + w * m * (B - A) / density`` with ``m ~ Bernoulli(density)`` seeded per
    tensor name (drawn on the CPU: the same mask on every device). The paper's DARE row (DARE on Average)
    is ``weight: 0.5``; its DARE-TA is ``weight: 0.7``; p = 0.3 is ``density: 0.7``. density 1 gives Task
    Arithmetic exactly.
    """,
    sparsifiers=(DARE,), params=(P_LAMBDA, _normalize(False), P_RESCALE, P_INT8),
    model_params=(P_WEIGHT, P_DENSITY))

DareAverage = task_arithmetic_method(
    "dare_average", "DARE", "https://arxiv.org/abs/2311.03099",
    """DARE on Average merging (the paper's DARE row): each model's task vector is dropped and rescaled,
    then the base and the models are averaged, ``M = (A + sum_k (A + m_k (B_k - A) / density)) / (n + 1)``.

    One model to merge: ``M = A + m (B - A) / (2 density)``, ``m ~ Bernoulli(density)`` seeded per tensor
    name: the same tensors as ``dare_linear`` with ``weight: 0.5`` on the fp32 path; under
    ``paper_bf16_arith`` it is the paper code's ``average_merging`` of System 1 and the masked System 2.
    density 1 gives the average of the base and the models.
    """,
    sparsifiers=(DARE,), consensus=MEAN_WITH_BASE, params=(P_RESCALE, P_INT8), model_params=(P_DENSITY,))

DareTies = task_arithmetic_method(
    "dare_ties", "DARE-TIES", "https://arxiv.org/abs/2311.03099",
    """DARE-TIES: DARE's random drop and rescale, an optional magnitude trim, then TIES's sign election.

    mergekit's ``dare_ties`` has no magnitude trim (``trim_density: 1``, the default). The paper's DARE-TIES
    applies TIES with its k after DARE: ``trim_density: 1 - k``. One model to merge:
    ``M = A + lambda * trim(w * m * (B - A) / density)`` (normalize false: the weight stays). density 1 and
    trim_density 1 give Task Arithmetic; density 1 alone gives TIES with ``normalize: false``.
    """,
    sparsifiers=(DARE, MAGNITUDE_AFTER_DROP), consensus=SIGN, params=(P_LAMBDA, _normalize(False), P_RESCALE, P_INT8),
    model_params=(P_WEIGHT, P_DENSITY, P_TRIM_DENSITY))


class Slerp(MergeMethod):
    """Spherical linear interpolation between the base and one model, tensor by tensor.

    ``M = sin((1-t) W)/sin W * A + sin(t W)/sin W * B`` with ``W`` the angle between the flattened tensors
    (linear interpolation when they are nearly colinear, |cos W| > 0.9995, as in mergekit).

    It is a two-model method by nature: t = 0 gives the base (System 1), t = 1 the model (System 2); t plays
    the role of TA's alpha but follows the arc instead of the chord, which keeps the tensor's norm.
    """

    name = "slerp"
    paper_name = "SLERP"
    reference = "https://dl.acm.org/doi/10.1145/325165.325242"
    max_models = 1
    params = (Param("t", float, 0.5, "interpolation position: 0 = base, 1 = model", low=0.0, high=1.0),
              Param("dot_threshold", float, 0.9995, "above this |cos|, interpolate linearly", low=0.0, high=1.0))

    def merge_tensor(self, name, base, models, ctx):
        a, b = base, models[0]
        t = ctx.params["t"]
        eps = 1e-8
        na = torch.linalg.vector_norm(a)
        nb = torch.linalg.vector_norm(b)
        na = na if na > eps else torch.ones_like(na)
        nb = nb if nb > eps else torch.ones_like(nb)
        dot = float(((a / na) * (b / nb)).sum().clamp(-1, 1))
        if abs(dot) > ctx.params["dot_threshold"]:
            ca, cb = 1.0 - t, t
        else:
            theta = math.acos(dot)
            s = math.sin(theta)
            ca, cb = math.sin((1 - t) * theta) / s, math.sin(t * theta) / s
        return a * ca + b * cb
