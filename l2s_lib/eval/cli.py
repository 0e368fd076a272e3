"""``l2s eval``: evaluate a model on benchmarks from the command line.

    l2s eval --model PATH_OR_HUB_ID --benchmarks gsm8k,math500 [--limit N] [--max-new-tokens T]
             [--prompt qwen25-math-cot|cot|chat|...] [--backend hf|vllm] [--device cpu|cuda] [--out DIR]
    l2s eval --model PATH --benchmark-file FILE.jsonl --layout math500

Prints the summary table and writes ``samples.jsonl``, ``summary.csv`` and ``settings.json`` to ``--out``
(default ``data/results/eval/<model folder name>/``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from l2s_lib import paths


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval",
        help="evaluate a model on benchmarks (accuracy, length, reflection, truncation)",
        description="Generate with a model on benchmarks, grade, and summarise as in Wu et al. (2025).",
    )
    p.add_argument("--model", required=True, help="local checkpoint folder or hub id")
    p.add_argument("--benchmarks", default=None, help="comma-separated registered benchmarks (e.g. gsm8k,math500)")
    p.add_argument("--benchmark-file", action="append", default=[], metavar="FILE.jsonl",
                   help="evaluate this jsonl file (repeatable); needs --layout")
    p.add_argument("--layout", default=None,
                   help="how to read --benchmark-file: a registered benchmark (its layout and grader) or a layout")
    p.add_argument("--limit", type=int, default=None, help="first N problems of each benchmark")
    p.add_argument("--max-new-tokens", type=int, default=None, help="generation budget (default: per benchmark, "
                   "else 10240)")
    p.add_argument("--prompt", default=None, help="prompt template (default: per benchmark, else qwen25-math-cot)")
    p.add_argument("--backend", choices=("hf", "vllm"), default="hf")
    p.add_argument("--tensor-parallel-size", type=int, default=1, help="GPUs per model (vllm)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (hf backend)")
    p.add_argument("--dtype", default="auto", help="auto (fp32 on CPU, bf16 on CUDA), float32, bfloat16, float16")
    p.add_argument("--batch-size", type=int, default=None,
                   help="prompts per batch (default: chosen for the model, decoder and device)")
    p.add_argument("--decoder", choices=("auto", "static", "generate"), default="auto",
                   help="hf backend: auto (the static greedy loop for small Qwen2 models, else transformers "
                        "generate), static, or generate (the reference)")
    p.add_argument("--keywords", choices=("paper", "paper-code"), default="paper",
                   help="reflection keyword list of the summary")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="output folder (default data/results/eval/<model name>)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the generation cache")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from l2s_lib.errors import ConfigError
    from l2s_lib.eval.benchmarks import benchmark_from_file
    from l2s_lib.eval.runner import evaluate

    benches: list = [b for b in (args.benchmarks or "").split(",") if b.strip()]
    if args.benchmark_file:
        if not args.layout:
            raise ConfigError("--benchmark-file needs --layout (a registered benchmark or a layout name)")
        for f in args.benchmark_file:
            if not Path(f).is_file():
                raise ConfigError(f"--benchmark-file {f}: no such file")
            benches.append(benchmark_from_file(f, like=args.layout))
    if not benches:
        raise ConfigError("give --benchmarks NAME[,NAME...] and/or --benchmark-file FILE --layout NAME")
    out = Path(args.out) if args.out else paths.results_dir() / "eval" / Path(str(args.model).rstrip("/")).name
    result = evaluate(
        args.model, benches, prompt=args.prompt, max_new_tokens=args.max_new_tokens, limit=args.limit,
        backend=args.backend, device=args.device, dtype=args.dtype, batch_size=args.batch_size, out_dir=out,
        use_cache=not args.no_cache, seed=args.seed, progress=not args.quiet, keywords=args.keywords,
        tensor_parallel_size=args.tensor_parallel_size, decoder=args.decoder,
    )
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(result.summary.round(2).to_string(index=False))
    print(f"\nwrote {paths.relative_to_root(out / 'samples.jsonl')} and {paths.relative_to_root(out / 'summary.csv')}")
    return 0
