"""Activation- and gradient-informed merges: AIM (on top of any merge) and Sens-Merging (layer-wise TA).

Both have a whole-model pre-pass (``prepare``) that runs the calibration passes of
``l2s_lib.merge.calibration`` (cached, one model in memory at a time) and leaves small per-module or
per-layer numbers in ``ctx.state``; the per-tensor kernels then stream like task arithmetic. The
calibration set's hash, source and options go to ``ctx.state["provenance"]["calibration"]``.

AIM applies to any data-free merge with a base: ``aim(inner)`` makes the method "AIM on ``inner``"
(its parameters are the wrapped method's plus AIM's, its per-model parameters the wrapped method's,
its kernel the wrapped method's kernel followed by the relaxation). The registry
(``l2s_lib.merge.registry``) offers it as ``aim_<name>`` for every registered method it applies to
(the paper's AIM-TIES is ``aim_ties``).

Calibration data is always given by the caller (the ``calibration`` parameter, required): the merge
engine knows no default data set.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch

from l2s_lib.errors import ConfigError
from l2s_lib.fingerprint import model_fingerprint
from l2s_lib.merge import calibration as cal
from l2s_lib.merge.base import MergeContext, MergeMethod, Param


def _record_provenance(ctx: MergeContext, key: str, value: dict[str, Any]) -> None:
    ctx.state.setdefault("provenance", {}).setdefault("calibration", {})[key] = value


def _progress(ctx: MergeContext) -> bool:
    """Progress bars for the calibration passes unless the caller put ``progress: False`` in the state."""
    return bool(ctx.state.get("progress", True))


def _calibration_params(default_side: str, side_name: str = "calibration_side") -> tuple[Param, ...]:
    return (
        Param("calibration", str, None, "calibration jsonl (question, short_answer, long_answer), "
              "or hf:<dataset> / simplescaling/s1K for s1K from the hub", required=True),
        Param(side_name, str, default_side, "which answers: short, long or both (two texts per question)",
              choices=cal.SIDES),
        Param("calibration_n", int, 100, "number of calibration questions (the paper: 10, 20, 100); null = all", low=1),
        Param("calibration_seed", int, 0, "seed that picks the calibration questions", low=0),
        Param("template", str, "plain", "text format: plain 'question\\nanswer' or the tokenizer's chat template",
              choices=cal.TEMPLATES),
        Param("calibration_dtype", str, "auto", "dtype of the calibration model (auto: bf16 on CUDA, fp32 on CPU)",
              choices=cal.DTYPES),
        Param("batch_size", int, 8, "texts or blocks per batched forward", low=1),
    )


# ---------------------------------------------------------------------------------------------------
# AIM
# ---------------------------------------------------------------------------------------------------

AIM_PARAMS = (
    Param("omega", float, 0.4, "balance factor: the most salient input channel keeps this fraction of its update "
          "(1 = no effect)", low=0.0, high=1.0),
    *_calibration_params("short"),
    Param("block_size", int, 512, "tokens per calibration block (texts are concatenated and cut)", low=1),
    Param("skip_longer", bool, False, "skip texts longer than one block, as the original (drops most s1K answers)"),
    Param("relax_norms", bool, True, "also relax RMSNorm gains (the original relaxes every non-embedding weight)"),
)


class _JobView:
    """The driver's job seen with another context (the wrapped method's)."""

    def __init__(self, job, ctx: MergeContext):
        self._job, self.ctx = job, ctx

    def __getattr__(self, attr):
        return getattr(self._job, attr)


class _AIMRuntime:
    """What AIM's kernel needs from its pre-pass: the wrapped method, its context and the saliencies.

    Kept in ``ctx.state["aim"]``; its ``str`` is a one-line summary, which is what the driver's
    provenance record keeps of an object that is not plain data.
    """

    def __init__(self, inner: MergeMethod, inner_ctx: MergeContext, importance: dict[str, torch.Tensor]):
        self.inner, self.inner_ctx, self.importance = inner, inner_ctx, importance

    def __str__(self) -> str:
        inner_state = sorted(k for k in self.inner_ctx.state if k != "shapes")
        return (f"AIM on '{self.inner.name}': saliency of {len(self.importance)} modules; "
                f"wrapped pre-pass state: {', '.join(inner_state) or 'none'}")

    __repr__ = __str__


class AIMBase(MergeMethod):
    """Shared machinery of the methods made by ``aim`` (not a registry entry itself)."""

    inner: type[MergeMethod]
    has_prepass = True

    @classmethod
    def check(cls, params, model_params, where):
        """The wrapped method's cross-parameter checks, on its own parameters."""
        cls.inner.check(cls.inner_params(params), model_params, where)

    @classmethod
    def inner_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        own = {p.name for p in AIM_PARAMS}
        return {k: v for k, v in params.items() if k not in own}

    def prepare(self, job, ctx: MergeContext) -> None:
        if job.base is None:
            raise ConfigError(f"{self.name}: AIM needs base_model (its activations define the saliency)")
        inner = self.inner()
        # The wrapped method sees what the driver put in the state (tensor shapes ...) but writes to its
        # own copy; its pre-pass (e.g. the global TIES threshold) runs whatever has_prepass says.
        driver_keys = set(ctx.state)
        inner_ctx = dataclasses.replace(ctx, params=self.inner_params(ctx.params), state=dict(ctx.state))
        inner.prepare(_JobView(job, inner_ctx), inner_ctx)
        p = ctx.params
        calib = cal.load_calibration(p["calibration"], p["calibration_side"], p["calibration_n"],
                                     p["calibration_seed"])
        options = {"block_size": p["block_size"], "template": p["template"], "skip_longer": p["skip_longer"],
                   "dtype": p["calibration_dtype"]}
        fp = model_fingerprint(job.base.path)
        key = cal.cache_key("aim", model=fp, calibration=calib.fingerprint, options=options)
        hit = cal.cache_load("aim", key)
        if hit is not None:
            stats = hit["tensors"]
        else:
            stats = cal.aim_activation_statistics(job.base.path, calib, device=ctx.device, dtype=p["calibration_dtype"],
                                                  block_size=p["block_size"], batch_size=p["batch_size"],
                                                  template=p["template"], skip_longer=p["skip_longer"],
                                                  progress=_progress(ctx))
            cal.cache_save("aim", key, {"model": fp, "calibration": calib.provenance(), "options": options}, stats)
        importance = {m: cal.saliency(s) for m, s in stats.items()}
        ctx.state["aim"] = _AIMRuntime(inner, inner_ctx, importance)
        wrapped = {k: v for k, v in inner_ctx.state.items() if k not in driver_keys}
        if wrapped:
            ctx.state["aim_wrapped_state"] = wrapped  # e.g. the global TIES thresholds, for the provenance
        # What the provenance keeps: how concentrated each module's saliency is (METHODS.md section 7:
        # massive-activation channels give I ~ 1 on a few channels and ~ 0 elsewhere).
        ctx.state["aim_saliency"] = {
            m: {"mean": round(float(i.mean()), 4), "above_half": round(float((i > 0.5).float().mean()), 4)}
            for m, i in importance.items()}
        _record_provenance(ctx, "aim", calib.provenance() | {"options": options, "base_fingerprint": fp,
                                                             "cache_key": key, "cache_hit": hit is not None})

    def merge_tensor(self, name, base, models, ctx):
        state = ctx.state.get("aim")
        if state is None:
            raise RuntimeError(f"{self.name}: prepare() must run before merge_tensor (the driver does this)")
        merged = state.inner.merge_tensor(name, base, models, state.inner_ctx)
        module, _, leaf = name.rpartition(".")
        imp = state.importance.get(module)
        if leaf != "weight" or imp is None or (base.ndim == 1 and not ctx.params["relax_norms"]):
            return merged  # embeddings, biases (and norms when asked) keep the wrapped merge's value
        if base.shape[-1] != imp.numel():
            raise ConfigError(f"{self.name}: {name} has {base.shape[-1]} input channels but the calibration "
                              f"statistics of {module} have {imp.numel()}")
        relax = 1.0 - (1.0 - ctx.params["omega"]) * imp.to(device=merged.device, dtype=merged.dtype)
        base = base.to(merged.dtype)
        return base + (merged - base) * relax  # broadcast along the last (input) axis


_AIM_DOC = """AIM on {paper}: the {inner} merge with its update shrunk along the base's salient input channels.

Per weight ``W`` of a module with an input (linears, RMSNorm gains, lm_head; not embeddings, not
biases): ``M = A + (M_{inner} - A) * (1 - (1 - omega) * I)``, broadcast along the input axis, where
``A`` is the base and ``I = a / max(a)`` with ``a`` the sum over calibration blocks of the per-block
mean |input| of that module in the *base* model [AIM code: ``relax_on_merged``]. The most salient
channel keeps a fraction omega of the update, channels that never fire keep all of it. omega = 1 is
the {inner} merge itself. The q/k/v projections share one input and so one ``I``. A tied lm_head
(the 1.5B System 1 with ``tie_policy: follow_base``) is the embedding tensor and stays unrelaxed; an
untied ``lm_head.weight`` uses the final-norm output as its input.

One model to merge (L2S: base = S1, model = S2): ``M = A + (M_{inner} - A) * (1 - (1 - omega) I_S1)``,
e.g. for TIES ``A + alpha * trim_k(delta) * (1 - (1 - omega) I_S1)`` (the paper: omega = 0.4).

Wrapped method: {inner_doc}
"""


def _aim_problem(inner: type[MergeMethod]) -> str | None:
    if inner.has_prepass or not inner.needs_base or issubclass(inner, AIMBase):
        return f"AIM wraps a data-free merge with a base model; '{inner.name}' is not one"
    clash = {p.name for p in inner.params} & {p.name for p in AIM_PARAMS}
    if clash:
        return f"AIM cannot wrap '{inner.name}': parameter name(s) {sorted(clash)} collide with AIM's"
    return None


def aim_applies(inner: type[MergeMethod]) -> bool:
    """Whether AIM can wrap ``inner``: a data-free merge (no pre-pass) with a base, not AIM itself."""
    return _aim_problem(inner) is None


def aim(inner: type[MergeMethod]) -> type[MergeMethod]:
    """The method "AIM on ``inner``", named ``aim_<inner.name>``; ``ConfigError`` if AIM cannot wrap it."""
    problem = _aim_problem(inner)
    if problem:
        raise ConfigError(problem)
    inner_doc = (inner.__doc__ or "").strip().splitlines()[0]
    return type(f"AIM_{inner.name}", (AIMBase,), {
        "__doc__": _AIM_DOC.format(paper=inner.paper_name, inner=inner.name, inner_doc=inner_doc),
        "__module__": __name__,
        "name": f"aim_{inner.name}",
        "paper_name": f"AIM-{inner.paper_name}",
        "reference": "https://arxiv.org/abs/2502.02421",
        "inner": inner,
        "params": tuple(inner.params) + AIM_PARAMS,
        "model_params": tuple(inner.model_params),
        "needs_base": True,
        "min_models": inner.min_models,
        "max_models": inner.max_models,
        # the relaxation is a per-column scale fixed per tensor, so row blocks are fine when the
        # wrapped kernel allows them
        "elementwise": inner.elementwise,
    })


# ---------------------------------------------------------------------------------------------------
# Sens-Merging
# ---------------------------------------------------------------------------------------------------


def sens_coefficients(sensitivities: list[dict[str, float]], distances: list[list[float]], *, alpha: float,
                      temperature: float, coefficient: str = "alpha_k_sigma",
                      tau_direction: str = "distance") -> dict[str, list[float]]:
    """Layer-wise coefficients ``{group: [lambda_i for every participant i]}`` [recon, METHODS.md section 8].

    ``a_i^l = S_i^l / ||S_i||_2`` (over groups; a group a participant lacks counts 0),
    ``tau_i = sum_{j != i} g_ij`` normalised to sum 1 (``inverse``: ``1 / that`` first),
    ``sigma_i^l = softmax_i(a_i^l tau_i / T)`` (uniform at T = inf) and ``lambda_i^l = alpha K sigma_i^l``
    (``alpha_k_sigma``, so uniform sigma gives TA(alpha)) or ``K sigma_i^l`` (``k_sigma``, the
    reimplementation, which ignores alpha).
    """
    if coefficient not in ("alpha_k_sigma", "k_sigma"):
        raise ConfigError(f"coefficient '{coefficient}' is not allowed; one of 'alpha_k_sigma', 'k_sigma'")
    if tau_direction not in ("distance", "inverse"):
        raise ConfigError(f"tau_direction '{tau_direction}' is not allowed; one of 'distance', 'inverse'")
    k = len(sensitivities)
    normed = [cal.l2_normalise(s) for s in sensitivities]
    groups = sorted(set().union(*(s.keys() for s in sensitivities)))
    raw = [sum(distances[i][j] for j in range(k) if j != i) for i in range(k)]
    if tau_direction == "inverse":
        raw = [1.0 / r if r > 0 else 0.0 for r in raw]
    total = sum(raw)
    tau = [r / total for r in raw] if total > 0 else [1.0 / k] * k
    scale = alpha * k if coefficient == "alpha_k_sigma" else float(k)
    out = {}
    for g in groups:
        if math.isinf(temperature):
            sigma = torch.full((k,), 1.0 / k, dtype=torch.float64)
        else:
            logits = torch.tensor([normed[i].get(g, 0.0) * tau[i] / temperature for i in range(k)], dtype=torch.float64)
            sigma = torch.softmax(logits, dim=0)
        out[g] = [scale * float(s) for s in sigma]
    return out


class SensMerging(MergeMethod):
    """Sens-Merging: task arithmetic with layer-wise coefficients from gradient sensitivities and logit alignment.

    Per tensor of layer group l (a transformer block; embeddings, final norm and lm_head each their
    own): ``M = base + sum_t lambda_t^l delta_t``, with ``lambda`` from ``sens_coefficients`` [recon,
    METHODS.md section 8]: per-sample ``|theta * grad|`` sensitivities of each participant on its own
    calibration data, cross-model logit distances on each other's data, a softmax across participants
    at temperature T. With ``include_base`` (the paper: System 1 is calibrated too) the base takes part
    in the softmax with a zero task vector. Open choices are parameters: ``coefficient`` (alpha K sigma,
    our inference, or the reimplementation's K sigma), ``tau_direction``, ``loss_on``, ``max_length``.
    The reading with the task vector in the sensitivity (``|delta * grad|``) is not offered: it needs
    the base's weights next to each model's (two models in memory).

    One model to merge (L2S: base = S1 on long answers, S2 on short answers, K = 2):
    ``M^l = A^l + 2 alpha sigmoid((a_S2^l tau_S2 - a_S1^l tau_S1) / T) delta^l``, a layer-wise
    modulated TA; T -> inf (or ``include_base: false`` with one model) gives TA(alpha) exactly. A
    group no participant has (none in practice) gets alpha.
    """

    name = "sens"
    paper_name = "Sens-Merging"
    reference = "https://arxiv.org/abs/2502.12420"
    has_prepass = True
    elementwise = True  # one scalar per (tensor, model): row blocks of an embedding merge the same
    params = (
        Param("alpha", float, 0.7, "task-arithmetic coefficient (the paper: 0.4 / 0.7 / 0.8 at 1.5B / 7B / 14B)",
              low=0.0),
        Param("temperature", float, 2.0, "softmax temperature T (> 0; .inf gives TA(alpha))", low=1e-6),
        Param("coefficient", str, "alpha_k_sigma", "lambda = alpha K sigma (recon) or K sigma (reimplementation)",
              choices=("alpha_k_sigma", "k_sigma")),
        Param("tau_direction", str, "distance", "cross-model scale grows with the logit distance, or its inverse",
              choices=("distance", "inverse")),
        Param("include_base", bool, True, "the base takes part in the softmax (the paper calibrates both models)"),
        *_calibration_params("long", "base_calibration_side"),
        Param("max_length", int, 512, "truncate each calibration text to this many tokens (reimplementation: 512)",
              low=2),
        Param("loss_on", str, "all", "loss tokens: the whole text or the answer only", choices=cal.LOSS_MASKS),
        Param("gradient_checkpointing", bool, False, "trade compute for memory in the backward passes"),
    )
    model_params = (
        Param("calibration_side", str, "short", "answers this model is calibrated on (the paper: short for S2)",
              choices=cal.SIDES),
    )

    def prepare(self, job, ctx: MergeContext) -> None:
        if job.base is None:
            raise ConfigError("sens: needs base_model (task vectors are taken against it)")
        p = ctx.params
        model_sides = [mp.get("calibration_side", "short") for mp in ctx.model_params] or ["short"] * len(job.models)
        sources = ([(job.base, p["base_calibration_side"], "base")] if p["include_base"] else []) + \
                  [(src, side, f"model{i}") for i, (src, side) in enumerate(zip(job.models, model_sides))]
        participants = [
            cal.SensParticipant(label, src.path, model_fingerprint(src.path),
                                cal.load_calibration(p["calibration"], side, p["calibration_n"], p["calibration_seed"]))
            for src, side, label in sources
        ]
        stats = cal.sens_statistics(participants, tokenizer_path=job.base.path, device=ctx.device,
                                    dtype=p["calibration_dtype"], template=p["template"], max_length=p["max_length"],
                                    loss_on=p["loss_on"], batch_size=p["batch_size"],
                                    gradient_checkpointing=p["gradient_checkpointing"], progress=_progress(ctx))
        coeffs = sens_coefficients(stats["sensitivities"], stats["distances"], alpha=p["alpha"],
                                   temperature=p["temperature"], coefficient=p["coefficient"],
                                   tau_direction=p["tau_direction"])
        offset = 1 if p["include_base"] else 0  # the experts' columns in the coefficient table
        ctx.state["sens"] = {"coefficients": {g: c[offset:] for g, c in coeffs.items()},
                             "participants": [q.label for q in participants], "distances": stats["distances"]}
        _record_provenance(ctx, "sens", {
            "participants": [{"label": q.label, "fingerprint": q.fingerprint} | q.calib.provenance()
                             for q in participants],
            "cache_hits": stats["cache_hits"], "models_loaded": stats["passes"],
            "options": {k: p[k] for k in ("template", "max_length", "loss_on", "calibration_dtype")},
        })

    def merge_tensor(self, name, base, models, ctx):
        state = ctx.state.get("sens")
        if state is None:
            raise RuntimeError("sens: prepare() must run before merge_tensor (the driver does this)")
        lam = state["coefficients"].get(cal.sens_group(name), [ctx.params["alpha"]] * len(models))
        base = base.to(ctx.compute_dtype)
        return base + sum(l * (m.to(ctx.compute_dtype) - base) for l, m in zip(lam, models))

