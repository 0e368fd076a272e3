"""A greedy decoding loop for small Qwen2 models that runs at the speed of their matrix products.

For the organisms (1M-100M parameters) transformers' ``generate`` is pure per-step overhead: logits
processors, stopping criteria, cache bookkeeping and mask building cost more than the forward pass, and
finished sequences keep being computed until the longest one of the batch ends. ``StaticDecoder`` does
only what greedy decoding needs:

- the weights are taken from the loaded transformers model (no copy of the architecture's parameters
  elsewhere), with q/k/v and gate/up fused into one matrix each, so a layer is four matrix products;
- one key/value cache per layer is allocated once for the whole batch (``[rows, kv_heads, columns,
  head_dim]``); prompts are left-padded as ``generate`` pads them, and positions count from each row's
  first real token, as ``generate`` derives them from the attention mask;
- a step is the forward pass of one token per row and an argmax; a row that emits an EOS id or reaches
  ``max_new_tokens`` leaves the batch at once: the rows behind the survivors move into the holes (only
  the moved rows are copied), so the batch shrinks with the work left;
- on CUDA the step is captured in a CUDA graph per batch-size bucket (powers of two) and replayed
  ``SYNC_EVERY`` steps between host checks, so the GPU is not waiting on Python; attention then runs
  over the whole preallocated cache with a mask (a graph needs fixed shapes), on CPU over the columns
  written so far.

The arithmetic follows transformers' Qwen2 code operation by operation (RMSNorm in float32, the same
rotary tables, ``pack_gqa``-style grouped attention for the one-token step, SDPA with a boolean mask), so
under greedy float32 decoding the tokens equal ``generate``'s (tested on the shipped organisms: full
token sequences). We do not use transformers' ``StaticCache`` + ``torch.compile`` path instead: on CPU
its compilation costs more than a whole organism evaluation, and without it each step still runs the
generic mask and cache machinery that dominates a small model's step.

Supported: ``Qwen2ForCausalLM`` with default RoPE, SiLU, full attention (no sliding window); greedy
decoding; no stop strings. ``supports`` says whether a model and decoding parameters qualify; the
transformers backend falls back to ``generate`` otherwise.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F

#: Name recorded in evaluation settings for generations produced by this loop.
NAME = "static-greedy"
#: Decoding steps replayed on CUDA between two looks at the finished rows (one host sync each).
SYNC_EVERY = 8
#: Smallest CUDA graph bucket (rows); buckets are powers of two up to the batch size.
MIN_BUCKET = 8


def _bucket(n: int) -> int:
    """The CUDA graph bucket (rows) that holds a batch of ``n`` rows: the next power of two, at least 8."""
    return max(MIN_BUCKET, 1 << (n - 1).bit_length())


def unsupported_reason(model) -> str | None:
    """Why ``StaticDecoder`` cannot run ``model`` (None when it can)."""
    cfg = getattr(model, "config", None)
    if type(model).__name__ != "Qwen2ForCausalLM" or cfg is None:
        return f"only Qwen2ForCausalLM is supported, got {type(model).__name__}"
    # transformers 5 names the RoPE settings rope_parameters (rope_scaling is an alias of it).
    rope = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        return "only the default RoPE is supported"
    if getattr(cfg, "hidden_act", "silu") != "silu":
        return f"only SiLU MLPs are supported, got {cfg.hidden_act}"
    if getattr(cfg, "use_sliding_window", False) or any(
            t != "full_attention" for t in (getattr(cfg, "layer_types", None) or [])):
        return "sliding-window attention is not supported"
    return None


def supports(model, params) -> bool:
    """True when ``model`` and the decoding parameters (``DecodingParams``) can use ``StaticDecoder``."""
    return unsupported_reason(model) is None and params.greedy and not params.stop


class StaticDecoder:
    """Greedy decoding of a loaded ``Qwen2ForCausalLM`` with a static KV cache (see the module docstring).

    ``generate(prompts, max_new_tokens, eos_ids)`` yields ``(i, ids)`` for each prompt ``i`` (token id
    lists) as soon as it finishes: the generated ids, ending with the EOS id that stopped it, if any.
    """

    def __init__(self, model, loop: str | None = None):
        reason = unsupported_reason(model)
        if reason is not None:
            raise ValueError(f"StaticDecoder: {reason}")
        cfg = model.config
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.n_heads = cfg.num_attention_heads
        self.n_kv = cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.eps = cfg.rms_norm_eps
        self.scaling = self.head_dim ** -0.5
        inner = model.model
        self.embed = inner.embed_tokens.weight
        self.lm_head = model.lm_head.weight
        self.final_norm = inner.norm.weight
        self.layers = []
        with torch.no_grad():
            for layer in inner.layers:
                att, mlp = layer.self_attn, layer.mlp
                self.layers.append({
                    "ln1": layer.input_layernorm.weight, "ln2": layer.post_attention_layernorm.weight,
                    "qkv_w": torch.cat([att.q_proj.weight, att.k_proj.weight, att.v_proj.weight]),
                    "qkv_b": torch.cat([att.q_proj.bias, att.k_proj.bias, att.v_proj.bias]),
                    "o_w": att.o_proj.weight,
                    "gu_w": torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]),
                    "down_w": mlp.down_proj.weight,
                })
        self.q_size = self.n_heads * self.head_dim
        self.kv_size = self.n_kv * self.head_dim
        self.inter = inner.layers[0].mlp.gate_proj.weight.shape[0]
        # The rotary tables, computed as Qwen2RotaryEmbedding computes them per position (float32, then cast).
        rope = getattr(cfg, "rope_parameters", None) or {}
        base = rope.get("rope_theta", getattr(cfg, "rope_theta", 10000.0))
        self.inv_freq = 1.0 / (base ** (torch.arange(0, self.head_dim, 2, dtype=torch.int64).to(
            device=self.device, dtype=torch.float) / self.head_dim))
        self._rope_len = 0
        # "bucketed": fixed-shape steps over batch buckets, SYNC_EVERY steps per host check, captured in CUDA
        # graphs on CUDA (the default there); "eager": one step at a time over the written columns (CPU).
        # The bucketed loop also runs on CPU (without graphs), which is how its logic is tested there.
        self.loop = loop or ("bucketed" if self.device.type == "cuda" else "eager")
        if self.loop not in ("eager", "bucketed"):
            raise ValueError(f"StaticDecoder: unknown loop {self.loop!r} (eager or bucketed)")
        self.use_cuda_graphs = self.loop == "bucketed" and self.device.type == "cuda"

    # --- building blocks (each mirrors the transformers Qwen2 operation it replaces) ------------------

    def _rope_tables(self, n: int) -> None:
        if n <= self._rope_len:
            return
        pos = torch.arange(n, device=self.device)
        freqs = pos[:, None].float() * self.inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        self.cos_table, self.sin_table = emb.cos().to(self.dtype), emb.sin().to(self.dtype)
        self._rope_len = n

    def _norm(self, x, w):
        h = x.to(torch.float32)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return w * h.to(x.dtype)

    @staticmethod
    def _rotate(x, cos, sin):
        half = x.shape[-1] // 2
        return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin

    def _mlp_and_residual(self, x, h, lw):
        # In place where transformers allocates (the same elementwise operations in the same order, so the
        # same bits): ``x`` is this decoder's own activation, never a view of a weight or of the cache.
        x = x.add_(F.linear(h, lw["o_w"]))
        g, u = F.linear(self._norm(x, lw["ln2"]), lw["gu_w"]).split(self.inter, dim=-1)
        return x.add_(F.linear(F.silu(g, inplace=True).mul_(u), lw["down_w"]))

    def _logits(self, x):
        return F.linear(self._norm(x, self.final_norm), self.lm_head)

    # --- prefill: the prompts, left-padded, in one forward pass ---------------------------------------

    def _prefill(self, ids, pad, caches):
        """Fill the caches' first ``P`` columns from ``ids [b, P]``; return the first generated token."""
        b, P = ids.shape
        col = torch.arange(P, device=self.device)
        valid = col[None, :] >= pad[:, None]  # key column holds a real token of the row
        # Causal and padding mask; a pad query also sees itself, so that no softmax row is empty (an empty
        # row gives NaN, which would then reach the real rows through the pad columns' values).
        mask = (col[None, :, None] >= col[None, None, :]) & valid[:, None, :]
        mask = (mask | torch.eye(P, dtype=torch.bool, device=self.device)[None])[:, None]
        pos = (col[None, :] - pad[:, None]).clamp_min(0)
        cos, sin = self.cos_table[pos][:, None], self.sin_table[pos][:, None]
        x = self.embed[ids]
        rep = self.n_heads // self.n_kv
        for lw, (kc, vc) in zip(self.layers, caches):
            qkv = F.linear(self._norm(x, lw["ln1"]), lw["qkv_w"], lw["qkv_b"])
            q, k, v = qkv.split([self.q_size, self.kv_size, self.kv_size], dim=-1)
            q = self._rotate(q.view(b, P, self.n_heads, self.head_dim).transpose(1, 2), cos, sin)
            k = self._rotate(k.view(b, P, self.n_kv, self.head_dim).transpose(1, 2), cos, sin)
            v = v.view(b, P, self.n_kv, self.head_dim).transpose(1, 2)
            kc[:b, :, :P] = k
            vc[:b, :, :P] = v
            att = F.scaled_dot_product_attention(q, k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1),
                                                 attn_mask=mask, scale=self.scaling)
            x = self._mlp_and_residual(x, att.transpose(1, 2).reshape(b, P, self.q_size), lw)
        return self._logits(x[:, -1]).argmax(-1)

    # --- one decoding step --------------------------------------------------------------------------

    def _step(self, tok, pos, caches, write, key_mask):
        """The next token of each row from ``tok [b]`` at rotary position ``pos [b]``.

        ``write(cache, new)`` stores the new key/value column; ``key_mask [b, t]`` marks the cache columns
        (the first ``t``) that a row attends to.
        """
        b = tok.shape[0]
        cos, sin = self.cos_table[pos][:, None], self.sin_table[pos][:, None]  # [b, 1, d]
        x = self.embed[tok]
        t = key_mask.shape[1]
        mask = key_mask[:, None, None, :]
        g = self.n_heads // self.n_kv
        for lw, (kc, vc) in zip(self.layers, caches):
            qkv = F.linear(self._norm(x, lw["ln1"]), lw["qkv_w"], lw["qkv_b"])
            qk, v = qkv.split([self.q_size + self.kv_size, self.kv_size], dim=-1)
            # The query and key heads of a row share its rotary position: one rotation for both (elementwise,
            # so the same bits as rotating each).
            qk = self._rotate(qk.view(b, self.n_heads + self.n_kv, self.head_dim), cos, sin)
            q, k = qk[:, :self.n_heads], qk[:, self.n_heads:]
            write(kc, k)
            write(vc, v.view(b, self.n_kv, self.head_dim))
            # One query per row: its heads are grouped under their key/value head (transformers' pack_gqa).
            att = F.scaled_dot_product_attention(q.reshape(b, self.n_kv, g, self.head_dim), kc[:b, :, :t],
                                                 vc[:b, :, :t], attn_mask=mask, scale=self.scaling)
            x = self._mlp_and_residual(x, att.reshape(b, self.q_size), lw)
        return self._logits(x).argmax(-1)

    # --- the loop ------------------------------------------------------------------------------------

    @torch.inference_mode()
    def generate(self, prompts: Sequence[Sequence[int]], max_new_tokens: int, eos_ids: Sequence[int],
                 pad_id: int = 0) -> Iterator[tuple[int, list[int]]]:
        """Greedy continuations of ``prompts`` (one batch), yielded as ``(i, ids)`` as each one ends."""
        n = len(prompts)
        if n == 0:
            return
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        lens = [len(p) for p in prompts]
        if min(lens) < 1:
            raise ValueError("an empty prompt cannot be decoded (nothing to condition on)")
        P = max(lens)
        T = P + max_new_tokens
        self._rope_tables(T)
        dev = self.device
        ids = torch.full((n, P), pad_id, dtype=torch.long)
        for r, p in enumerate(prompts):
            ids[r, P - len(p):] = torch.as_tensor(list(p), dtype=torch.long)
        ids = ids.to(dev)
        pad = torch.tensor([P - m for m in lens], dtype=torch.long, device=dev)
        # With CUDA graphs the cache also holds the rows that pad the batch up to its bucket, and attention
        # reads every column under a mask: unwritten columns must hold zeros, not NaN (NaN * 0 is NaN). The
        # eager loop reads only written columns, so it skips the memset.
        rows = _bucket(n) if self.loop == "bucketed" else n
        alloc = torch.zeros if self.loop == "bucketed" else torch.empty
        caches = [(alloc(rows, self.n_kv, T, self.head_dim, device=dev, dtype=self.dtype),
                   alloc(rows, self.n_kv, T, self.head_dim, device=dev, dtype=self.dtype))
                  for _ in self.layers]
        first = self._prefill(ids, pad, caches)
        del ids
        eos = torch.tensor(sorted(set(int(e) for e in eos_ids)), dtype=torch.long, device=dev)
        if self.loop == "bucketed":
            yield from self._loop_bucketed(first, pad, caches, P, T, max_new_tokens, eos)
        else:
            yield from self._loop_eager(first, pad, caches, P, max_new_tokens, eos)

    @staticmethod
    def _compact(alive: list[int], tensors, caches, upto: int):
        """Move the surviving rows (positions ``alive`` in the current batch) into ``[0, len(alive))``.

        Only survivors sitting at or beyond the new size are copied, into the holes the finished rows left;
        returns the permutation applied (new position -> old position) as a list.
        """
        m = len(alive)
        keep_in_place = [r for r in alive if r < m]
        holes = sorted(set(range(m)) - set(keep_in_place))
        movers = [r for r in alive if r >= m]
        order = list(range(m))
        if movers:
            dev = tensors[0].device
            src = torch.tensor(movers, device=dev)
            dst = torch.tensor(holes, device=dev)
            for t in tensors:
                t[dst] = t[src]
            for kc, vc in caches:
                kc[dst, :, :upto] = kc[src, :, :upto]
                vc[dst, :, :upto] = vc[src, :, :upto]
            for h, r in zip(holes, movers):
                order[h] = r
        return order

    def _loop_eager(self, tok, pad, caches, P, max_new, eos):
        n = tok.shape[0]
        rows = list(range(n))  # original prompt index of each batch position
        out = [[] for _ in range(n)]
        col = P  # cache column the next token's key/value goes to
        for step in range(max_new):
            b = len(rows)
            toks = tok.tolist()
            for r in range(b):
                out[rows[r]].append(toks[r])
            finished = torch.isin(tok, eos).tolist() if step < max_new - 1 else [True] * b
            done = [r for r in range(b) if finished[r]]
            for r in done:
                yield rows[r], out[rows[r]]
            if len(done) == b:
                return
            if done:
                dead = set(done)
                alive = [r for r in range(b) if r not in dead]
                order = self._compact(alive, [tok, pad], caches, col)
                rows = [rows[o] for o in order]
                b = len(rows)
                tok, pad = tok[:b], pad[:b]
            key_mask = torch.arange(col + 1, device=tok.device)[None, :] >= pad[:, None]

            def write(cache, new, _c=col, _b=b):
                cache[:_b, :, _c] = new

            tok = self._step(tok, col - pad, caches, write, key_mask)
            col += 1

    def _loop_bucketed(self, tok, pad, caches, P, T, max_new, eos):
        """Fixed-shape steps per bucket of rows, ``SYNC_EVERY`` of them per host check; on CUDA each bucket's
        step is captured once in a CUDA graph and replayed."""
        dev = tok.device
        n = tok.shape[0]
        cap = _bucket(n)
        # Static buffers the graphs read and write (a graph replays fixed addresses).
        s_tok = torch.zeros(cap, dtype=torch.long, device=dev)
        s_pad = torch.zeros(cap, dtype=torch.long, device=dev)
        s_col = torch.full((1,), P, dtype=torch.long, device=dev)
        s_hist = torch.zeros(cap, SYNC_EVERY, dtype=torch.long, device=dev)
        s_slot = torch.zeros(1, dtype=torch.long, device=dev)
        cols = torch.arange(T, device=dev)
        s_tok[:n] = tok
        s_pad[:n] = pad
        graphs: dict = {}

        def body(b):
            tk, pd = s_tok[:b], s_pad[:b]
            key_mask = (cols[None, :] >= pd[:, None]) & (cols[None, :] <= s_col)

            def write(cache, new):
                cache[:b].index_copy_(2, s_col, new[:, :, None])

            nxt = self._step(tk, s_col - pd, caches, write, key_mask)
            tk.copy_(nxt)
            s_hist[:b].index_copy_(1, s_slot, nxt[:, None])
            s_col.add_(1)
            s_slot.add_(1)

        def graph_for(b):
            if not self.use_cuda_graphs:
                return lambda: body(b)
            if b not in graphs:
                saved = (s_tok.clone(), s_col.clone(), s_slot.clone(), s_hist.clone())
                stream = torch.cuda.Stream()
                stream.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(stream):  # warm-up outside the graph, as capture requires
                    body(b)
                torch.cuda.current_stream().wait_stream(stream)
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g):
                    body(b)
                # Capture and warm-up ran the step: restore the state, then replay it for real.
                s_tok.copy_(saved[0]); s_col.copy_(saved[1]); s_slot.copy_(saved[2]); s_hist.copy_(saved[3])
                graphs[b] = g
            return graphs[b].replay

        rows = list(range(n))
        out = [[tok_] for tok_ in tok.tolist()]  # the prefill's token is each row's first
        first_done = torch.isin(tok, eos).tolist()
        emitted = 1
        alive = []
        for r in range(n):
            if first_done[r] or max_new == 1:
                yield r, out[r]
            else:
                alive.append(r)
        while alive:
            m = len(alive)
            if len(alive) < len(rows):
                order = self._compact(alive, [s_tok, s_pad], caches, int(s_col.item()))
                rows = [rows[o] for o in order]
            rows = rows[:m]
            b = _bucket(m)
            s_pad[m:b] = 0  # bucket padding rows: junk, but a valid (non-empty) mask row
            steps = min(SYNC_EVERY, max_new - emitted)
            s_slot.zero_()
            replay = graph_for(b)
            for _ in range(steps):
                replay()
            hist = s_hist[:m, :steps].tolist()
            eos_set = set(eos.tolist())
            alive = []
            for r in range(m):
                seq = out[rows[r]]
                stop = False
                for t in hist[r]:
                    seq.append(t)
                    if t in eos_set:
                        stop = True
                        break
                if stop or emitted + steps >= max_new:
                    yield rows[r], seq
                else:
                    alive.append(r)
            emitted += steps
