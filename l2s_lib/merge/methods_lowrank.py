"""SVD-based merges: LoRE-Merging, Twin-Merging (SVD part, no router) and Iso-C.

All three are separable per tensor and need no data, so they stream like task arithmetic; their cost
is one SVD per 2-D tensor (or per model and iteration for LoRE with more than two inputs). SVDs run
in fp32 (``svd_dtype: float64`` on request) with ``full_matrices=False``: bf16 SVD is unsupported or
inaccurate, and full matrices of an embedding would be vocab^2 entries (METHODS.md sections 5-6).

Which tensors get the SVD treatment: 2-D tensors that the merge's ``policies.scope`` keeps in scope
(``base.in_scope``: embeddings can be excluded there for every sparsifying and SVD method) and that
the method's own ``svd_scope`` parameter admits:

- ``all_2d``: every 2-D tensor, embeddings and lm_head included;
- ``linear_only``: 2-D tensors except ``embed_tokens`` / ``lm_head``.

Tensors left out are treated like 1-D tensors (each method's ``vector_policy``).

We use ``torch.linalg.svd`` (exact) rather than ``torch.svd_lowrank``: the randomized version is
faster for small ranks but approximate, and LoRE's threshold needs the whole spectrum.
"""

from __future__ import annotations

import torch

from l2s_lib.errors import ConfigError
from l2s_lib.merge.base import MergeContext, MergeMethod, Param, in_scope

SVD_SCOPES = ("all_2d", "linear_only")
SVD_DTYPES = ("float32", "float64")


def is_embedding(name: str) -> bool:
    """Input embedding or output head (rows indexed by token id)."""
    return "embed_tokens" in name or "lm_head" in name


def svd_applies(name: str, tensor: torch.Tensor, ctx: MergeContext) -> bool:
    """Whether ``tensor`` is treated as a matrix (SVD): 2-D, in the merge's scope policy, and admitted by
    the method's ``svd_scope``."""
    scope = ctx.params.get("svd_scope", "all_2d")
    if scope not in SVD_SCOPES:
        raise ConfigError(f"svd_scope '{scope}' is not allowed; one of {', '.join(SVD_SCOPES)}")
    if tensor.ndim != 2 or not in_scope(name, 2, ctx):
        return False
    return not (scope == "linear_only" and is_embedding(name))


def svd(x: torch.Tensor, dtype: str = "float32") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD ``x = U diag(S) Vh`` in ``dtype`` (fp32 or fp64) on ``x``'s device.

    A wide matrix is decomposed through its transpose: LAPACK's CPU path was measured about 4x slower
    on 1536 x 8960 (``down_proj`` at 1.5B) than on 8960 x 1536 with torch 2.13.
    """
    if dtype not in SVD_DTYPES:
        raise ConfigError(f"svd_dtype '{dtype}' is not allowed; one of {', '.join(SVD_DTYPES)}")
    x = x.to(getattr(torch, dtype))
    if x.shape[0] < x.shape[1]:
        u, s, vh = torch.linalg.svd(x.mT.contiguous(), full_matrices=False)
        return vh.mT, s, u.mT
    return torch.linalg.svd(x, full_matrices=False)


def svt(x: torch.Tensor, threshold: float, dtype: str = "float32",
        factors: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Singular value thresholding ``U diag(max(S - t, 0)) Vh`` (the prox of ``t * nuclear norm``)."""
    u, s, vh = factors if factors is not None else svd(x, dtype)
    s = (s - threshold).clamp_min(0)
    keep = int((s > 0).sum())
    return ((u[:, :keep] * s[:keep]) @ vh[:keep]).to(x.dtype)


def group_shrink(v: torch.Tensor, threshold: float) -> torch.Tensor:
    """``v * max(0, 1 - t / ||v||)``: SVT of a vector seen as a 1-row matrix (its only singular value is ||v||)."""
    norm = float(torch.linalg.vector_norm(v.double()))
    return v * max(0.0, 1.0 - threshold / norm) if norm > 0 else torch.zeros_like(v)


def truncate(x: torch.Tensor, rank: int, dtype: str = "float32") -> torch.Tensor:
    """``P_r(x)``: the best rank-``rank`` approximation of a matrix (truncated SVD)."""
    if rank <= 0:
        return torch.zeros_like(x)
    if rank >= min(x.shape):
        return x.clone()
    u, s, vh = svd(x, dtype)
    return ((u[:, :rank] * s[:rank]) @ vh[:rank]).to(x.dtype)


def _model_weights(ctx: MergeContext, n: int, default: float) -> list[float]:
    weights = [mp.get("weight") for mp in ctx.model_params] if ctx.model_params else [None] * n
    if len(weights) != n:
        raise ConfigError(f"{n} models to merge but {len(weights)} per-model parameter sets")
    return [default if w is None else float(w) for w in weights]


# ---------------------------------------------------------------------------------------------------
# LoRE-Merging
# ---------------------------------------------------------------------------------------------------


def lore_decompose(thetas: list[torch.Tensor], threshold: float, *, relative: bool = True, iterations: int = 20,
                   tolerance: float = 1e-7, as_matrix: bool = True, vector_policy: str = "group_shrink",
                   svd_dtype: str = "float32", closed_form_two: bool = True
                   ) -> tuple[torch.Tensor, list[torch.Tensor], float]:
    """LoRE's coordinate descent: ``min sum_i ||theta0 + delta_i - theta_i||_F^2 + mu ||delta_i||_*``.

    Starts from ``theta0 = mean(theta_i)``, ``delta_i = 0``; each round does the delta-step
    ``delta_i = SVT_t(theta_i - theta0)`` then the theta0-step ``theta0 = mean(theta_i - delta_i)``, and
    stops after ``iterations`` rounds or when theta0 moves by less than ``tolerance`` (relative). The
    threshold ``t`` is given directly (without the 1/2 of the Frobenius term the exact prox threshold of
    ``mu`` is ``mu/2``); ``relative`` means ``t = threshold * max_i sigma_max(theta_i - mean theta)``.
    With two inputs the fixed point is known in closed form (one SVD): ``theta0 = (A+B)/2``,
    ``delta_B = -delta_A = SVT_t((B-A)/2)``, which one round of the iteration reaches exactly
    (METHODS.md section 5) and ``closed_form_two`` uses. Vectors (and out-of-scope matrices) use
    ``group_shrink`` (the same prox for a 1-row matrix) or ``passthrough`` (no shrinkage).

    Returns ``(theta0, deltas, absolute threshold)``.
    """
    n = len(thetas)
    theta0 = torch.stack(thetas).mean(0)
    centred = [t - theta0 for t in thetas]

    if not as_matrix and vector_policy == "passthrough":
        return theta0, centred, 0.0
    if as_matrix:
        factors = [svd(c, svd_dtype) for c in centred]
        scale = max(float(f[1][0]) if f[1].numel() else 0.0 for f in factors)
    else:
        factors = None
        scale = max(float(torch.linalg.vector_norm(c.double())) for c in centred)
    t_abs = threshold * scale if relative else threshold

    def prox(x, f=None):
        return svt(x, t_abs, svd_dtype, f) if as_matrix else group_shrink(x, t_abs)

    if n == 2 and closed_form_two:
        d = prox(centred[1], factors[1] if factors else None)
        return theta0, [-d, d], t_abs
    deltas = [prox(c, factors[i] if factors else None) for i, c in enumerate(centred)]
    for it in range(iterations):
        if it > 0:
            deltas = [prox(t - theta0) for t in thetas]
        new_theta0 = torch.stack([t - d for t, d in zip(thetas, deltas)]).mean(0)
        moved = float(torch.linalg.vector_norm((new_theta0 - theta0).double()))
        size = float(torch.linalg.vector_norm(theta0.double()))
        theta0 = new_theta0
        if moved <= tolerance * max(size, 1e-30):
            break
    return theta0, deltas, t_abs


class LoREMerging(MergeMethod):
    """LoRE-Merging: a shared base and low-rank task vectors estimated from the inputs alone, then combined.

    Per tensor: ``(theta0, delta_i) = lore_decompose(theta_1..theta_n)`` (coordinate descent with
    singular value thresholding, no base model), then ``M = theta0 + lambda * sum_i w_i delta_i``.
    Base-free: list System 1 *and* System 2 under ``models`` (a ``base_model``, if the config has
    one, is not used by the kernel). With S2 alone the problem is degenerate (``theta0 = S2``) and the
    merge returns S2, hence ``min_models = 2``.

    Two inputs (A = S1, B = S2) [recon, METHODS.md section 5]: ``M = (A+B)/2 + lambda (w_B - w_A)
    SVT_t((B-A)/2)``. Any symmetric combination (equal weights, the default) is *exactly* the average
    of the inputs, whatever the threshold, so the paper's asymmetric recipe is unknown; the
    compendium's reading is **LoRE-TA**: weights ``(1 - alpha, alpha)`` on (S1, S2), lambda = 1, which
    gives ``(A+B)/2 + (2 alpha - 1) SVT_t((B-A)/2)``: TA(alpha) at ``threshold = 0`` and the midpoint as
    the threshold grows. The original's inner TIES step is not offered: on ``delta_A = -delta_B`` every
    coordinate's sign sum cancels (METHODS.md section 5).
    """

    name = "lore"
    paper_name = "LoRE-Merging"
    reference = "https://arxiv.org/abs/2502.10749"
    needs_base = False
    min_models = 2
    params = (
        Param("threshold", float, 0.01, "singular value threshold t (relative to sigma_max unless threshold_mode "
              "is absolute)", low=0.0),
        Param("threshold_mode", str, "relative", "relative: t * max_i sigma_max(theta_i - mean); absolute: t",
              choices=("relative", "absolute")),
        Param("iterations", int, 20, "maximum coordinate-descent rounds (more than two inputs)", low=1),
        Param("tolerance", float, 1e-7, "stop when theta0 moves less than this (relative)", low=0.0),
        Param("lambda", float, 1.0, "scale of the combined low-rank task vectors", low=0.0),
        Param("vector_policy", str, "group_shrink", "1-D tensors: group soft-threshold, or passthrough "
              "(no shrinkage)", choices=("group_shrink", "passthrough")),
        Param("svd_scope", str, "all_2d", "which 2-D tensors get the SVD", choices=SVD_SCOPES),
        Param("svd_dtype", str, "float32", "precision of the SVD", choices=SVD_DTYPES),
        Param("closed_form_two", bool, True, "two inputs: use the exact one-SVD fixed point"),
    )
    model_params = (
        Param("weight", float, None, "weight w_i of this input's low-rank task vector (default 1/n; "
              "LoRE-TA: 1 - alpha for S1, alpha for S2)"),
    )

    def merge_tensor(self, name, base, models, ctx):
        p = ctx.params
        as_matrix = svd_applies(name, models[0], ctx)
        # Out-of-scope tensors (a 1-D tensor excluded by the scope policy, or a 2-D one left out of the
        # SVD) get the dense counterpart of the shrinkage, unless group_shrink applies to them.
        shrink_vector = p["vector_policy"] == "group_shrink" and models[0].ndim < 2 and in_scope(name, 1, ctx)
        theta0, deltas, _ = lore_decompose(
            [m.to(ctx.compute_dtype) for m in models], p["threshold"],
            relative=p["threshold_mode"] == "relative", iterations=p["iterations"], tolerance=p["tolerance"],
            as_matrix=as_matrix, vector_policy="group_shrink" if shrink_vector else "passthrough",
            svd_dtype=p["svd_dtype"], closed_form_two=p["closed_form_two"])
        weights = _model_weights(ctx, len(models), 1.0 / len(models))
        combined = sum(w * d for w, d in zip(weights, deltas))
        return (theta0 + p["lambda"] * combined).to(ctx.compute_dtype)


# ---------------------------------------------------------------------------------------------------
# Twin-Merging (SVD part, no router)
# ---------------------------------------------------------------------------------------------------


def twin_rank(shape: tuple[int, ...], rank_ratio: float, rank: int | None) -> int:
    """Rank kept per matrix: ``rank`` if given, else ``floor(rank_ratio * min(m, n))`` (Twin's ``sparsify.svd``)."""
    full = min(shape)
    return min(rank, full) if rank is not None else int(rank_ratio * full)


class TwinMerging(MergeMethod):
    """Twin-Merging, SVD part without router: shared TA expert plus each expert's rank-r exclusive knowledge.

    Per tensor: ``theta* = base + lambda * sum_t delta_t`` (the shared expert, task arithmetic as in the
    Twin repository), twin vectors ``v_t = P_r(theta_t - theta*)`` (rank-r truncated SVD), and, with no
    router, fixed weights: ``M = theta* + sum_t w_t v_t`` (``w_t`` defaults to 1/K: a uniform router;
    with one expert that is the repository's one-twin path ``theta* + v``). Tensors outside the SVD
    scope follow ``vector_policy``: ``expert`` adds the full residual (the repository: 1-D tensors pass
    through unchanged), ``shared`` keeps ``theta*``.

    One model to merge (L2S: base = S1, expert = S2, ``delta = B - A``) [recon, METHODS.md section 6]:
    ``M = A + lambda delta + (1 - lambda) P_r(delta)`` for matrices: the top-r singular directions of
    the task vector at full strength, the tail at lambda. Full rank gives S2; rank 0 gives TA(lambda)
    (and, for 1-D tensors, ``M = B`` under ``vector_policy: expert``).
    """

    name = "twin"
    paper_name = "Twin-Merging"
    reference = "https://arxiv.org/abs/2406.15479"
    params = (
        Param("lambda", float, 0.7, "task-arithmetic coefficient of the shared expert theta*", low=0.0),
        Param("rank_ratio", float, 0.1, "fraction of min(m, n) kept per matrix (Twin default 0.1)", low=0.0, high=1.0),
        Param("rank", int, None, "fixed rank per matrix (overrides rank_ratio; capped at min(m, n))", low=0),
        Param("vector_policy", str, "expert", "tensors outside the SVD scope: add the full residual (expert) "
              "or keep theta* (shared)", choices=("expert", "shared")),
        Param("svd_scope", str, "all_2d", "which 2-D tensors get the SVD", choices=SVD_SCOPES),
        Param("svd_dtype", str, "float32", "precision of the SVD", choices=SVD_DTYPES),
    )
    model_params = (Param("weight", float, None, "router-free weight of this expert's twin vector (default 1/K)"),)

    def merge_tensor(self, name, base, models, ctx):
        p = ctx.params
        base = base.to(ctx.compute_dtype)
        models = [m.to(ctx.compute_dtype) for m in models]
        shared = base + p["lambda"] * sum(m - base for m in models)
        weights = _model_weights(ctx, len(models), 1.0 / len(models))
        if svd_applies(name, base, ctx):
            r = twin_rank(tuple(base.shape), p["rank_ratio"], p["rank"])
            twins = [truncate(m - shared, r, p["svd_dtype"]) for m in models]
        elif p["vector_policy"] == "expert":
            twins = [m - shared for m in models]
        else:
            return shared
        return (shared + sum(w * v for w, v in zip(weights, twins))).to(ctx.compute_dtype)


# ---------------------------------------------------------------------------------------------------
# Iso-C
# ---------------------------------------------------------------------------------------------------


def isotropic(x: torch.Tensor, dtype: str = "float32") -> torch.Tensor:
    """``mean(S) * U Vh`` for ``x = U diag(S) Vh``: the same singular vectors with a flat spectrum."""
    u, s, vh = svd(x, dtype)
    return (s.mean() * (u @ vh)).to(x.dtype)


class IsoC(MergeMethod):
    """Iso-C: task arithmetic with the spectrum of the summed task vector flattened to its mean.

    Per matrix: ``sum_t delta_t = U diag(S) Vh``, ``M = base + alpha * mean(S) * U Vh``; per vector (and
    embeddings under ``svd_scope: linear_only``, FusionBench's LLM variant): ``M = base + alpha * mean_t
    delta_t``. The default scope, ``all_2d``, is the official code's: it decomposes every 2-D tensor,
    embeddings and lm_head included. Unlike TSV-M or WUDI this does not reduce to TA with one
    expert: ``M = A + alpha * mean(S) * U Vh`` with ``delta = U diag(S) Vh`` keeps the task vector's
    singular directions but gives them equal strength (its Frobenius norm is ``mean(S) sqrt(r) <=
    ||delta||_F``). Iso-CTS (task-specific subspaces) is not implemented: with one expert it has no
    task-specific subspace to add.
    """

    name = "iso_c"
    paper_name = "Iso-C"
    reference = "https://arxiv.org/abs/2502.04959"
    params = (
        Param("alpha", float, 1.0, "scale of the flattened task vector", low=0.0),
        Param("svd_scope", str, "all_2d", "which 2-D tensors get the SVD (all_2d: the official code; "
              "linear_only: FusionBench's LLM variant, embeddings take the mean task vector)", choices=SVD_SCOPES),
        Param("svd_dtype", str, "float32", "precision of the SVD", choices=SVD_DTYPES),
    )

    def merge_tensor(self, name, base, models, ctx):
        base = base.to(ctx.compute_dtype)
        deltas = [m.to(ctx.compute_dtype) - base for m in models]
        if svd_applies(name, base, ctx):
            update = isotropic(sum(deltas), ctx.params["svd_dtype"])
        else:
            update = sum(deltas) / len(deltas)
        return (base + ctx.params["alpha"] * update).to(ctx.compute_dtype)
