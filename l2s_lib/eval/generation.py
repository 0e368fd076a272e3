"""Generation backends: transformers (default) and vLLM behind one interface.

A backend turns a list of prompt texts into ``Generation`` records and yields them batch by batch, so a
caller can store each one as soon as it exists (the resumable cache relies on that).

What is counted (the same for both backends):

- ``n_tokens``: tokens the model generated for the response, **excluding** the end-of-sequence token
  that stopped it (EOS is a control token, not part of the answer; vLLM's ``token_ids`` include it and
  are trimmed to match). When generation stops on a stop string, its tokens are counted. A response cut
  by the length cap has ``n_tokens == max_new_tokens``.
- ``n_tokens_retok``: the decoded text (special tokens skipped) encoded again with the same tokenizer,
  without special tokens. It differs from ``n_tokens`` where BPE merges differ. (The paper's own count,
  default special tokens on the stripped text, is ``metrics.paper_length``, the records' ``n_tokens_paper``.)
- ``finish_reason``: ``"eos"`` (an EOS id of the tokenizer or of the generation config), ``"stop"`` (a
  stop string of the prompt; the text is cut before it) or ``"length"`` (the ``max_new_tokens`` cap).

The transformers backend pads on the left with an attention mask (positions are derived from the mask
by ``generate``), sorts prompts by length so that each batch wastes little padding, decodes with the KV
cache, greedily unless a temperature is given.

Sampling (``temperature > 0``, with ``top_p`` and ``top_k``) gives every answer its own random stream,
seeded per (question, sample) by ``sample_seed``: vLLM gets one request per answer with that seed, the
transformers backend one ``torch.Generator`` per batch row (``RowSampler``). An answer therefore does not
depend on the batch it was decoded in nor on how many samples were asked for, which is what lets the
cache store, resume and extend a sampled run answer by answer. Under greedy decoding in float32 a batched run produces
the same tokens as one prompt at a time (tested); in bf16 the padding changes rounding and may flip a
near-tie.
"""

from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from l2s_lib.errors import CheckpointError, ConfigError

FINISH_REASONS = ("eos", "stop", "length")
DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float16": "float16", "fp16": "float16", "half": "float16"}


#: How a sampled answer gets its random stream (part of a sampled run's cache key): one generator per
#: (question, sample), seeded by ``sample_seed``, so a sample does not depend on its batch or on how many
#: samples a run asks for. Changing the rule must change this name (the cache would serve other samples).
SEEDING_RULE = "per-sample-sha256-v1"


def sample_seed(seed: int, question, sample: int) -> int:
    """The random seed of sample ``sample`` of question ``question`` (its benchmark id) in a run seeded ``seed``.

    A hash rather than arithmetic (``seed * N + sample``) so that no two (question, sample) pairs of any run
    share a stream; 63 bits, which both ``torch.Generator.manual_seed`` and vLLM's per-request seed accept.
    """
    if not isinstance(sample, int) or sample < 0:
        raise ConfigError(f"a sample index is a non-negative integer, got {sample!r}")
    digest = hashlib.sha256(f"{int(seed)}|{question}|{sample}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


@dataclass(frozen=True)
class DecodingParams:
    """Decoding parameters: greedy when ``temperature == 0`` (the paper's protocol), else sampled.

    Sampling draws from the softmax of ``logits / temperature`` restricted to the ``top_k`` most likely tokens
    (``0``: no limit) and then to the smallest set of mass ``>= top_p`` (applied in that order, as both
    transformers and vLLM do). ``seed`` is the run's seed; each sampled answer draws from its own stream
    (``sample_seed``).
    """

    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = field(default=())
    top_k: int = 0

    def __post_init__(self):
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be a positive integer, got {self.max_new_tokens!r}")
        if self.temperature < 0:
            raise ConfigError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")
        if not isinstance(self.top_k, int) or isinstance(self.top_k, bool) or self.top_k < 0:
            raise ConfigError(f"top_k must be a non-negative integer (0 = no limit), got {self.top_k!r}")
        object.__setattr__(self, "stop", tuple(self.stop))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def as_dict(self) -> dict:
        """The parameters as the cache key sees them.

        Greedy keys leave ``top_k`` out: it cannot change a greedy answer, and greedy caches written before
        ``top_k`` existed stay valid. Sampled keys name the seeding rule (``SEEDING_RULE``).
        """
        out = asdict(self)
        if self.greedy:
            del out["top_k"]
        else:
            out["seeding"] = SEEDING_RULE
        return out


@dataclass(frozen=True)
class Generation:
    """One response: its text, its length in tokens (two counts, see the module docstring), why it stopped."""

    text: str
    n_tokens: int
    n_tokens_retok: int
    finish_reason: str


def resolve_dtype(dtype: str | None, device: str) -> str:
    """A canonical dtype name; ``"auto"``/None is float32 on CPU and bfloat16 on CUDA."""
    if dtype in (None, "auto"):
        return "bfloat16" if str(device).startswith("cuda") else "float32"
    name = str(dtype).replace("torch.", "")
    if name not in DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}; allowed: auto, {', '.join(sorted(set(DTYPES.values())))}")
    return DTYPES[name]


def prompt_ids(tokenizer, prompt: str) -> list[int]:
    """The token ids a backend feeds the model for ``prompt`` (also hashed into the generation cache)."""
    # A chat template usually writes the BOS token itself (R1-Distill does); adding it again would
    # give the model two, so special tokens are added only when the text does not start with BOS.
    bos = getattr(tokenizer, "bos_token", None)
    add = not (bos and prompt.startswith(bos))
    return tokenizer(prompt, add_special_tokens=add)["input_ids"]


def eos_token_ids(tokenizer, generation_config=None) -> list[int]:
    """The union of the tokenizer's EOS id, the generation config's EOS ids (a merge lists both inputs')
    and the special token that closes a turn in the chat template (``<|im_end|>``: the toolkit stops on it
    for Qwen models, whose base configs list only ``<|endoftext|>``)."""
    from l2s_lib.tokenization import chat_end_of_turn_ids

    ids: list[int] = []
    for source in (getattr(tokenizer, "eos_token_id", None),
                   getattr(generation_config, "eos_token_id", None) if generation_config is not None else None,
                   chat_end_of_turn_ids(tokenizer)):
        if source is None:
            continue
        for i in source if isinstance(source, (list, tuple)) else [source]:
            if i is not None and int(i) not in ids:
                ids.append(int(i))
    if not ids:
        raise CheckpointError("the tokenizer and generation config name no EOS token: generation could not stop")
    return ids


def finish(tokenizer, ids: Sequence[int], eos_ids: Sequence[int], stop: Sequence[str] = (),
           pad_id: int | None = None) -> Generation:
    """Turn the generated ids of one sequence into a ``Generation`` (cut at EOS or a stop string)."""
    ids = list(ids)
    eos = set(eos_ids)
    cut = next((i for i, t in enumerate(ids) if t in eos), None)
    if cut is not None:
        content, reason = ids[:cut], "eos"
    else:
        content, reason = ids, "length"
        if stop and pad_id is not None:
            # Ended by a stop string while the rest of its batch went on: padded since.
            while content and content[-1] == pad_id:
                content = content[:-1]
    text = tokenizer.decode(content, skip_special_tokens=True)
    hits = [text.find(s) for s in stop if s in text]
    if hits:
        text, reason = text[: min(hits)], "stop"
    retok = len(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0
    return Generation(text=text, n_tokens=len(content), n_tokens_retok=retok, finish_reason=reason)


class Backend(ABC):
    """A generation backend: loads a model lazily, yields ``(index, Generation)`` batch by batch."""

    name: str = "?"

    def __init__(self, model: str | os.PathLike, *, device: str = "cpu", dtype: str | None = "auto",
                 batch_size: int | None = None, trust_remote_code: bool = False):
        if batch_size is not None and batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.model_id = str(model)
        self.device = device
        self.dtype = resolve_dtype(dtype, device)
        self.batch_size = batch_size
        self.trust_remote_code = trust_remote_code
        self._tokenizer = None

    @property
    def tokenizer(self):
        """The model's tokenizer (loaded on first use, without loading the weights)."""
        if self._tokenizer is None:
            from l2s_lib.tokenization import load_tokenizer

            try:
                self._tokenizer = load_tokenizer(self.model_id, trust_remote_code=self.trust_remote_code)
            except (OSError, ValueError) as exc:
                raise CheckpointError(f"cannot load the tokenizer of {self.model_id!r}: {exc}") from exc
            self._tokenizer.padding_side = "left"
        return self._tokenizer

    def identity(self) -> dict:
        """What of the backend can change the generated text (part of the cache key)."""
        return {"backend": self.name, "dtype": self.dtype}

    @abstractmethod
    def generate(self, prompts: Sequence[str], params: DecodingParams, progress: bool = True,
                 desc: str = "generate", seeds: Sequence[int] | None = None) -> Iterator[tuple[int, Generation]]:
        """Yield ``(i, generation)`` for every prompt ``i``, a batch at a time, in any order.

        Sampled decoding draws prompt ``i``'s answer from a stream seeded ``seeds[i]`` (the evaluation passes
        ``sample_seed(seed, question, sample)``; a prompt may appear several times, once per sample);
        ``seeds=None`` seeds prompt ``i`` with ``sample_seed(params.seed, i, 0)``. Greedy decoding ignores them.
        """


def resolve_seeds(prompts: Sequence[str], params: DecodingParams, seeds: Sequence[int] | None) -> list[int]:
    """One seed per prompt: ``seeds`` checked, or the default of ``Backend.generate``."""
    if seeds is None:
        return [sample_seed(params.seed, i, 0) for i in range(len(prompts))]
    seeds = [int(x) for x in seeds]
    if len(seeds) != len(prompts):
        raise ConfigError(f"{len(seeds)} seeds for {len(prompts)} prompts: give one seed per prompt")
    return seeds


class RowSampler:
    """A logits processor that samples each row of a batch from its own seeded ``torch.Generator``.

    transformers' ``generate`` samples a batch from the one global generator, so a row's tokens depend on the
    rows beside it; this processor makes them depend on the row's seed only. It applies transformers' own
    temperature, top-k and top-p warpers (the order of ``generate``'s sampling), draws one token per row with
    that row's generator and returns scores that are ``-inf`` everywhere except at the drawn token, so that
    ``generate`` run greedily (``do_sample=False``) emits exactly the drawn tokens; EOS, stop strings and
    padding of finished rows stay ``generate``'s. Each generator advances once per step, so a row's stream
    depends only on its seed and its own tokens. Any decoding loop that takes the argmax of processed scores
    can call it the same way and draw the same answers.
    """

    def __init__(self, params: DecodingParams, seeds: Sequence[int], device):
        import torch
        from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

        if params.greedy:
            raise ConfigError("RowSampler samples: greedy decoding needs no sampler")
        self.warpers = [TemperatureLogitsWarper(params.temperature)]
        if params.top_k:
            self.warpers.append(TopKLogitsWarper(params.top_k))
        if params.top_p < 1:
            self.warpers.append(TopPLogitsWarper(params.top_p))
        self.generators = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]

    def __call__(self, input_ids, scores):
        import torch

        if scores.shape[0] != len(self.generators):
            raise ValueError(f"RowSampler built for {len(self.generators)} rows got {scores.shape[0]}")
        for warp in self.warpers:
            scores = warp(input_ids, scores)
        probs = torch.softmax(scores.float(), dim=-1)
        picks = torch.cat([torch.multinomial(probs[r], 1, generator=g) for r, g in enumerate(self.generators)])
        out = torch.full_like(scores, float("-inf"))
        out[torch.arange(len(picks), device=scores.device), picks] = 0.0
        return out


#: Below this many parameters, CPU generation runs on one intra-op thread (see ``HFBackend.generate``).
SMALL_MODEL_PARAMS = 50_000_000
# The static decoder also runs small models on one thread. Two threads made the 6m organism's decoding 1.5x
# faster on the idle 2-core machine (batch 256), but 4x slower for 1m, and under the load of other jobs the
# whole 6m `l2s eval` took 94 s instead of about 22 s: OpenMP workers spinning for a busy core. Re-measured
# at load 1.5 (benchmarks/results/generation_speed_cpu.txt): 2 threads 1.35x faster in wall time for 6m. Still one
# thread: the pipeline's grid runs several evaluations at once, and the load average, the only cheap signal
# of a busy machine, lags by a minute, so a choice by load would oversubscribe exactly when workers start.


#: Decoders of the transformers backend: ``static`` is ``decoding.StaticDecoder`` (small Qwen2 models, greedy,
#: no stop strings), ``generate`` is transformers' ``generate`` (the reference), ``auto`` the first that applies.
DECODERS = ("auto", "static", "generate")
#: Memory the static decoder's KV cache may take per batch (bytes), by device type: it sets the batch size.
STATIC_CACHE_BUDGET = {"cpu": 1 << 30, "cuda": 16 << 30}
#: Largest batch the static decoder is given by default, by device type (CPU: past 256 rows a step's matrix
#: products no longer get faster per row; CUDA: the steps of an organism stay launch-bound far beyond).
STATIC_MAX_BATCH = {"cpu": 256, "cuda": 1024}
#: Default batch of transformers' ``generate`` (real models: their KV caches are large).
GENERATE_BATCH = {"cpu": 8, "cuda": 32}


class HFBackend(Backend):
    """transformers models: batched, length-sorted, left-padded, KV cache, on CPU or CUDA.

    ``decoder``: ``"auto"`` (default) decodes greedily with ``decoding.StaticDecoder`` wherever it applies
    (a small Qwen2 model, greedy, no stop strings: the same tokens in float32, many times faster) and with
    transformers' ``generate`` otherwise; ``"generate"`` always uses ``generate`` (the reference);
    ``"static"`` insists on the static decoder (an error where it does not apply). ``batch_size=None``
    picks one for the decoder and device (``default_batch_size``). ``last_decoder`` names the decoder the
    latest ``generate`` call used (the evaluation records it in its settings).
    """

    name = "hf"

    def __init__(self, model, *, decoder: str = "auto", batch_size: int | None = None, **kw):
        if decoder not in DECODERS:
            raise ConfigError(f"unknown decoder {decoder!r}; allowed: {', '.join(DECODERS)}")
        super().__init__(model, batch_size=batch_size, **kw)  # None: chosen per call (default_batch_size)
        self.decoder = decoder
        self.last_decoder: str | None = None
        self._model = None
        self._static = None

    def identity(self) -> dict:
        """The base identity, plus the decoder setting where it can change the tokens: in float32 the static loop
        gives exactly ``generate``'s tokens (tested), in bf16/fp16 their kernels round differently."""
        ident = super().identity()
        if self.dtype != "float32":
            ident["decoder"] = self.decoder
        return ident

    def choose_decoder(self, params: DecodingParams) -> str:
        """The decoder ``generate`` will use for ``params``: ``decoding.NAME`` or ``"generate"``."""
        from l2s_lib.eval import decoding

        if self.decoder == "generate":
            return "generate"
        reason = decoding.unsupported_reason(self.model)
        if reason is None and not params.greedy:
            reason = "it decodes greedily only (temperature 0)"
        if reason is None and params.stop:
            reason = "it does not handle stop strings"
        if reason is None:
            return decoding.NAME
        if self.decoder == "static":
            raise ConfigError(f"decoder 'static' cannot run {self.model_id!r}: {reason}")
        return "generate"

    def default_batch_size(self, decoder: str, params: DecodingParams, prompt_len: int) -> int:
        """Rows per batch when none was given: for the static decoder as many as its KV cache budget allows
        (``STATIC_CACHE_BUDGET``, at most ``STATIC_MAX_BATCH``), for ``generate`` ``GENERATE_BATCH``."""
        kind = "cuda" if self.device.startswith("cuda") else "cpu"
        if decoder == "generate":
            return GENERATE_BATCH[kind]
        cfg = self.model.config
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        itemsize = next(self.model.parameters()).element_size()
        per_row = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * head_dim * itemsize \
            * (prompt_len + params.max_new_tokens)
        return int(max(1, min(STATIC_MAX_BATCH[kind], STATIC_CACHE_BUDGET[kind] // per_row)))

    @property
    def model(self):
        if self._model is None:
            import torch
            from transformers import AutoModelForCausalLM

            if self.device.startswith("cuda") and not torch.cuda.is_available():
                raise ConfigError(f"device {self.device!r} asked for, but torch sees no CUDA device")
            try:
                model = AutoModelForCausalLM.from_pretrained(
                    self.model_id, dtype=getattr(torch, self.dtype), trust_remote_code=self.trust_remote_code
                )
            except (OSError, ValueError) as exc:
                raise CheckpointError(f"cannot load the model {self.model_id!r}: {exc}") from exc
            self._model = model.to(self.device).eval()
        return self._model

    def generate(self, prompts, params, progress=True, desc="generate", seeds=None):
        import torch
        from tqdm.auto import tqdm
        from transformers import GenerationConfig, LogitsProcessorList

        seeds = resolve_seeds(prompts, params, seeds)
        tok, model = self.tokenizer, self.model
        eos_ids = eos_token_ids(tok, model.generation_config)
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else eos_ids[0]
        encoded = [prompt_ids(tok, p) for p in prompts]
        # Longest first: similar lengths share a batch, and an out-of-memory batch shows up at once.
        order = sorted(range(len(prompts)), key=lambda i: (-len(encoded[i]), i))
        decoder = self.choose_decoder(params)
        self.last_decoder = decoder
        batch_size = self.batch_size or self.default_batch_size(
            decoder, params, max((len(e) for e in encoded), default=1))
        if decoder != "generate":
            yield from self._generate_static(encoded, order, params, eos_ids, pad_id, batch_size, progress, desc)
            return
        # A fresh config (not the checkpoint's, which may carry sampling defaults or penalties), as the
        # toolkit passes only these parameters to vLLM.
        # Sampling is ``RowSampler``'s (one seeded generator per row), so ``generate`` itself runs greedily
        # over the scores it returns.
        gen_cfg = GenerationConfig(
            max_new_tokens=params.max_new_tokens,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            eos_token_id=eos_ids,
            pad_token_id=pad_id,
            stop_strings=list(params.stop) or None,
        )
        bar = tqdm(total=len(prompts), desc=desc, disable=not progress, unit="sample")
        threads = self._small_model_threads()
        try:
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                width = max(len(encoded[i]) for i in idx)
                input_ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
                mask = torch.zeros((len(idx), width), dtype=torch.long)
                for row, i in enumerate(idx):
                    n = len(encoded[i])
                    input_ids[row, width - n :] = torch.tensor(encoded[i])
                    mask[row, width - n :] = 1
                sampler = None if params.greedy else LogitsProcessorList(
                    [RowSampler(params, [seeds[i] for i in idx], model.device)])
                with torch.inference_mode():
                    out = model.generate(
                        input_ids=input_ids.to(model.device),
                        attention_mask=mask.to(model.device),
                        generation_config=gen_cfg,
                        logits_processor=sampler,
                        tokenizer=tok if params.stop else None,
                    )
                new = out[:, width:].tolist()
                for row, i in enumerate(idx):
                    yield i, finish(tok, new[row], eos_ids, params.stop, pad_id)
                bar.update(len(idx))
        finally:
            torch.set_num_threads(threads)
            bar.close()

    def _small_model_threads(self) -> int:
        """Use one intra-op thread for a small model on CPU; returns the thread count to restore after."""
        import torch

        threads = torch.get_num_threads()
        if self.model.device.type == "cpu" and self.model.num_parameters() < SMALL_MODEL_PARAMS:
            # A decoding step of a small model is a few tiny matmuls: extra intra-op threads only add
            # synchronisation, and on a loaded machine spinning threads slow it down by an order of magnitude
            # (measured: 43 s vs 2 s for 100 steps of a 1M-parameter model at batch 128, load 10 on 2 cores).
            torch.set_num_threads(1)
        return threads

    def _generate_static(self, encoded, order, params, eos_ids, pad_id, batch_size, progress, desc):
        import torch
        from tqdm.auto import tqdm

        from l2s_lib.eval.decoding import StaticDecoder

        if self._static is None:
            self._static = StaticDecoder(self.model)
        tok = self.tokenizer
        bar = tqdm(total=len(order), desc=desc, disable=not progress, unit="sample")
        threads = self._small_model_threads()
        try:
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                for row, ids in self._static.generate([encoded[i] for i in idx], params.max_new_tokens, eos_ids,
                                                      pad_id):
                    yield idx[row], finish(tok, ids, eos_ids)
                    bar.update(1)
        finally:
            torch.set_num_threads(threads)
            bar.close()


class VLLMBackend(Backend):
    """vLLM: continuous batching on GPUs, ``tensor_parallel_size`` GPUs per model (optional extra)."""

    name = "vllm"

    def __init__(self, model, *, tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.9,
                 max_model_len: int | None = None, chunk_size: int = 512, **kw):
        try:
            import vllm  # noqa: F401
        except ImportError as exc:
            raise ConfigError("backend 'vllm' needs vLLM: pip install 'l2s-lib[vllm]' (GPU machines)") from exc
        kw.setdefault("device", "cuda")
        super().__init__(model, **kw)
        self.tensor_parallel_size = tensor_parallel_size
        self.gpu_memory_utilization = gpu_memory_utilization
        self.max_model_len = max_model_len
        self.chunk_size = chunk_size  # prompts per vLLM call: results reach the cache chunk by chunk
        self._llm = None

    @property
    def llm(self):
        if self._llm is None:
            from vllm import LLM

            self._llm = LLM(model=self.model_id, tokenizer=self.model_id, dtype=self.dtype,
                            tensor_parallel_size=self.tensor_parallel_size,
                            gpu_memory_utilization=self.gpu_memory_utilization, max_model_len=self.max_model_len,
                            trust_remote_code=self.trust_remote_code, seed=0)
        return self._llm

    @staticmethod
    def sampling_params(sampling_cls, params: DecodingParams, seeds: Sequence[int], eos_ids: Sequence[int]):
        """vLLM ``SamplingParams`` for the prompts of one call: one object for greedy decoding, else one per prompt.

        Each sampled request is ``n=1`` with its own ``seed`` (``seeds[i]``, from ``sample_seed``) rather than
        one request with ``n=N`` and one seed: vLLM draws the ``n`` answers of a request from one stream, so
        sample ``s`` would depend on ``n`` and could not be cached, resumed or extended sample by sample.
        vLLM's prefix cache shares the prompt's prefill between the repeated requests. ``top_k=0`` (no limit)
        is sent as ``-1``, which every vLLM version reads as "all tokens" (newer ones also accept 0).
        """
        common = dict(max_tokens=params.max_new_tokens, stop=list(params.stop) or None,
                      stop_token_ids=list(eos_ids), skip_special_tokens=True, n=1)
        if params.greedy:
            return sampling_cls(temperature=0.0, top_p=1.0, top_k=-1, seed=params.seed, **common)
        return [sampling_cls(temperature=params.temperature, top_p=params.top_p, top_k=params.top_k or -1,
                             seed=int(seed), **common) for seed in seeds]

    def generate(self, prompts, params, progress=True, desc="generate", seeds=None):
        from tqdm.auto import tqdm
        from transformers import GenerationConfig
        from vllm import SamplingParams

        seeds = resolve_seeds(prompts, params, seeds)
        tok = self.tokenizer
        try:
            gen_config = GenerationConfig.from_pretrained(self.model_id)
        except OSError:
            gen_config = None
        eos_ids = eos_token_ids(tok, gen_config)
        sampling = self.sampling_params(SamplingParams, params, seeds, eos_ids)
        bar = tqdm(total=len(prompts), desc=desc, disable=not progress, unit="sample")
        try:
            for start in range(0, len(prompts), self.chunk_size):
                chunk = list(range(start, min(start + self.chunk_size, len(prompts))))
                requests = [{"prompt_token_ids": prompt_ids(tok, prompts[i])} for i in chunk]
                per_request = sampling if not isinstance(sampling, list) else [sampling[i] for i in chunk]
                outputs = self.llm.generate(requests, per_request, use_tqdm=False)
                for i, out in zip(chunk, outputs):
                    o = out.outputs[0]
                    ids = list(o.token_ids)
                    if o.finish_reason == "length":
                        reason = "length"
                    elif isinstance(o.stop_reason, str):
                        reason = "stop"
                    else:
                        reason = "eos"
                    if ids and ids[-1] in eos_ids:
                        ids = ids[:-1]
                    text = o.text
                    retok = len(tok(text, add_special_tokens=False)["input_ids"]) if text else 0
                    yield i, Generation(text=text, n_tokens=len(ids), n_tokens_retok=retok, finish_reason=reason)
                bar.update(len(chunk))
        finally:
            bar.close()


BACKENDS = {"hf": HFBackend, "vllm": VLLMBackend}


def make_backend(name: str, model: str | os.PathLike | Path, **kw) -> Backend:
    """A backend by name (``"hf"`` or ``"vllm"``); keyword arguments go to its constructor."""
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}; allowed: {', '.join(BACKENDS)}")
    return BACKENDS[name](model, **kw)

