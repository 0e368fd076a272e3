"""``l2s eval``: evaluate a model on benchmarks from the command line.

    l2s eval --model PATH_OR_HUB_ID --benchmarks gsm8k,math500 [--limit N] [--max-new-tokens T]
             [--prompt qwen25-math-cot|qwen25-math-cot-chat|cot|chat|...] [--backend hf|vllm] [--device cpu|cuda]
             [--keywords paper|paper-code] [--length generated|paper|retok] [--max-model-len N]
             [--context-overflow warn|error] [--out DIR]
             [--n-samples 16 --temperature 0.6 --top-p 0.95 --top-k 20] [--thinking on|off]
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
                   help="evaluate this jsonl file (repeatable); its layout is told from its rows, or given by --layout")
    p.add_argument("--layout", default=None,
                   help="how to read --benchmark-file: a registered benchmark (its layout and grader) or a layout "
                        "(default: told from the file's rows when they can tell)")
    p.add_argument("--limit", type=int, default=None, help="N problems of each benchmark, evenly spread over the file (every level)")
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
    p.add_argument("--keywords", choices=("paper", "paper-code"), default=None,
                   help="reflection keyword list of the summary (default: per benchmark; the real benchmarks use "
                        "paper-code, the paper code's regex)")
    p.add_argument("--length", choices=("generated", "paper", "retok"), default=None,
                   help="length count of the summary (default: per benchmark; the real benchmarks use paper, "
                        "len(tokenizer(response.strip())['input_ids']))")
    p.add_argument("--max-model-len", type=int, default=None,
                   help="context (prompt + new tokens) the engine may use (default: longest prompt + budget, "
                        "rounded up to 1024; vllm)")
    p.add_argument("--context-overflow", choices=("warn", "error"), default="warn",
                   help="when prompt + budget exceeds the model's max_position_embeddings: warn and generate "
                        "past it, or refuse")
    p.add_argument("--seed", type=int, default=0, help="run seed: answer s of question q samples from a stream "
                   "seeded by (seed, q, s)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 (default): greedy, the paper's protocol")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (sampling only)")
    p.add_argument("--top-k", type=int, default=0, help="sample among the k most likely tokens; 0: no limit")
    p.add_argument("--n-samples", type=int, default=1, help="sampled answers per question (needs --temperature > 0); "
                   "the summary's accuracy is then avg@n, with pass@k")
    p.add_argument("--thinking", choices=("on", "off"), default=None,
                   help="render the model's chat template with enable_thinking on/off (Qwen3; needs a chat-template "
                        "prompt: --prompt chat or qwen25-math-cot-chat); default: the template's own")
    p.add_argument("--out", default=None, help="output folder (default data/results/eval/<model name>)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the generation cache")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from l2s_lib.errors import ConfigError
    from l2s_lib.eval.benchmarks import benchmark_from_file, infer_layout
    from l2s_lib.eval.runner import evaluate

    benches: list = [b for b in (args.benchmarks or "").split(",") if b.strip()]
    if args.benchmark_file:
        for f in args.benchmark_file:
            if not Path(f).is_file():
                raise ConfigError(f"--benchmark-file {f}: no such file")
            benches.append(benchmark_from_file(f, like=args.layout or infer_layout(f)))
    if not benches:
        raise ConfigError("give --benchmarks NAME[,NAME...] and/or --benchmark-file FILE [--layout NAME]")
    out = Path(args.out) if args.out else paths.results_dir() / "eval" / Path(str(args.model).rstrip("/")).name
    result = evaluate(
        args.model, benches, prompt=args.prompt, max_new_tokens=args.max_new_tokens, limit=args.limit,
        backend=args.backend, device=args.device, dtype=args.dtype, batch_size=args.batch_size, out_dir=out,
        use_cache=not args.no_cache, seed=args.seed, progress=not args.quiet, keywords=args.keywords,
        tensor_parallel_size=args.tensor_parallel_size, length=args.length, max_model_len=args.max_model_len,
        context_overflow=args.context_overflow, decoder=args.decoder, temperature=args.temperature,
        top_p=args.top_p, top_k=args.top_k, n_samples=args.n_samples,
        thinking={None: None, "on": True, "off": False}[args.thinking],
    )
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(result.summary.round(2).to_string(index=False))
    print(f"\nwrote {paths.relative_to_root(out / 'samples.jsonl')} and {paths.relative_to_root(out / 'summary.csv')}")
    return 0
