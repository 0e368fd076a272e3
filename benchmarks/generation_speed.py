"""Generation throughput of the transformers backend: batched against one sample at a time, on CPU.

    .venv/bin/python benchmarks/generation_speed.py [--n 32] [--max-new-tokens 64] [--batch-size 16]

Builds a small seeded Qwen2 checkpoint (``l2s_lib.tiny``, shape "small": 4 layers, width 256, vocab
2048), generates greedily for ``--n`` math prompts through ``HFBackend`` twice in the same process
(``batch_size=1``, then ``--batch-size``) and prints tokens per second of each and their ratio. A random
model rarely emits EOS, so every response runs to the cap and both runs generate the same tokens (checked).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from l2s_lib import tiny
from l2s_lib.eval.generation import DecodingParams, HFBackend
from l2s_lib.eval.prompts import build_prompt

QUESTIONS = [
    "What is {a} + {b}?",
    "A shop sells {a} apples in the morning and {b} in the afternoon. How many apples does it sell?",
    "Solve for x: {a}x + {b} = {c}.",
    "Compute the remainder when {c} is divided by {a}.",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=32, help="number of prompts")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    ap.add_argument("--shape", default="small", choices=sorted(tiny.SHAPES))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        model = tiny.make_model(tmp, seed=0, shape=args.shape)
        params = DecodingParams(max_new_tokens=args.max_new_tokens)
        runs = {}
        for bs in (1, args.batch_size):
            backend = HFBackend(model, device="cpu", dtype="float32", batch_size=bs)
            prompts = [build_prompt("qwen25-math-cot", QUESTIONS[i % len(QUESTIONS)].format(a=i + 3, b=2 * i + 7,
                                    c=5 * i + 11), backend.tokenizer) for i in range(args.n)]
            backend.model  # load outside the timed region
            list(backend.generate(prompts[:1], DecodingParams(max_new_tokens=4), progress=False))  # warm-up
            start = time.perf_counter()
            out = dict(backend.generate(prompts, params, progress=False))
            seconds = time.perf_counter() - start
            tokens = sum(g.n_tokens for g in out.values())
            runs[bs] = (tokens / seconds, seconds, tokens, out)
            print(f"batch_size={bs:>3}: {tokens} tokens in {seconds:6.2f} s = {tokens / seconds:8.1f} tokens/s")
        same = runs[1][3] == runs[args.batch_size][3]
        print(f"batched / one-at-a-time throughput: {runs[args.batch_size][0] / runs[1][0]:.2f}x "
              f"(shape {args.shape}, {args.n} prompts, {args.max_new_tokens} new tokens, {args.threads} threads; "
              f"identical outputs: {same})")


if __name__ == "__main__":
    main()
