"""Decoding speed of the organisms: the static greedy loop against transformers' ``generate``, and both
against the machine's matrix-product rate on the model's own shapes, measured in the same run.

    .venv/bin/python benchmarks/generation_speed.py                    # CPU: the shipped 1m and 6m System 2
    .venv/bin/python benchmarks/generation_speed.py --device cuda      # CUDA: the ladder's four sizes
    .venv/bin/python benchmarks/generation_speed.py --no-command       # CPU, without the whole `l2s eval` run
    .venv/bin/python benchmarks/generation_speed.py --threads-ab 1,2   # CPU, plus the 6m decoder at 1 and 2 threads

For each model, both decoders of ``HFBackend`` generate greedily for the 500 ``org_levels`` prompts (the
shipped organisms: their own budget of 320 tokens; on CUDA, seeded random-initialised organisms of the
ladder's shapes, which rarely emit EOS, so every row runs to ``--cuda-max-new-tokens``), and the script
prints:

- tokens/s of each decoder, their ratio, and whether the generations are identical (they must be in
  float32; on CUDA the default dtype is bfloat16, where the two paths' kernels may round a near-tie
  differently, so the float32 check is a separate, shorter run);
- useful GFLOP/s: 2 x non-embedding parameters per generated token (the arithmetic a decoder cannot
  avoid), next to the GEMM rate measured just before on the model's four matrix shapes (fused q/k/v,
  o, fused gate/up, down) at the static loop's batch size, with 1 thread and with all threads on CPU; the
  roofline is the best of those, and the fraction is useful rate / roofline;
- on CPU, the whole command ``l2s eval --model data/organisms/6m/system2 --benchmarks org_levels
  --no-cache`` (start-up, loading, grading and writing included) as a child process: wall time, tokens
  and its fraction of the roofline, here the best of the 6m rates above and one measured right after it.

A machine shared with other jobs moves every absolute figure; the fractions and ratios, measured within
seconds of each other, move less.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from l2s_lib.eval.benchmarks import get_benchmark, load_benchmark  # noqa: E402
from l2s_lib.eval.decoding import NAME  # noqa: E402
from l2s_lib.eval.generation import DecodingParams, HFBackend  # noqa: E402
from l2s_lib.eval.prompts import get_prompt  # noqa: E402
from l2s_lib.organisms import register_eval  # noqa: E402

register_eval()  # the shipped organisms' org_levels problems and prompt

SHIPPED = ROOT / "data" / "organisms"


def non_embedding_params(model) -> int:
    """Parameters outside the (tied) embedding / head: what each token's forward pass multiplies by."""
    return sum(p.numel() for n, p in model.named_parameters() if "embed_tokens" not in n and "lm_head" not in n)


def layer_shapes(model) -> list[tuple[int, int]]:
    """(in, out) of the four matrix products of a layer as the static decoder runs them (q/k/v, gate/up fused)."""
    cfg = model.config
    h, i = cfg.hidden_size, cfg.intermediate_size
    hd = getattr(cfg, "head_dim", None) or h // cfg.num_attention_heads
    q, kv = cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd
    return [(h, q + 2 * kv), (q, h), (h, 2 * i), (i, h)]


def load_average() -> str:
    """The 1/5/15-minute load averages: on a shared machine they say how far the absolute figures can be trusted."""
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def gemm_rate(model, rows: int, device: str, dtype, threads: int | None = None, seconds: float = 1.0) -> float:
    """GFLOP/s of ``F.linear`` over the model's layer shapes at ``rows`` rows (best of three timed rounds)."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(0)
        mats = [(torch.randn(rows, a, generator=g).to(device, dtype), torch.randn(b, a, generator=g).to(device, dtype))
                for a, b in layer_shapes(model)]
        flop = sum(2 * rows * a * b for a, b in layer_shapes(model))

        def once():
            for x, w in mats:
                F.linear(x, w)

        once()
        sync(device)
        t = time.perf_counter()
        reps = 0
        while time.perf_counter() - t < 0.2:
            once()
            reps += 1
        sync(device)
        reps = max(1, int(reps * seconds / 3 / max(time.perf_counter() - t, 1e-9)))
        best = float("inf")
        for _ in range(3):
            sync(device)
            t = time.perf_counter()
            for _ in range(reps):
                once()
            sync(device)
            best = min(best, (time.perf_counter() - t) / reps)
        return flop / best / 1e9
    finally:
        torch.set_num_threads(before)


def prompts_for(backend) -> list[str]:
    bench = get_benchmark("org_levels")
    template = get_prompt(bench.prompt)
    return [template.build(p.question, backend.tokenizer) for p in load_benchmark(bench)]


def timed(backend, prompts, params) -> tuple[float, int, dict]:
    sync(backend.device)
    t = time.perf_counter()
    out = dict(backend.generate(prompts, params, progress=False))
    sync(backend.device)
    seconds = time.perf_counter() - t
    return seconds, sum(g.n_tokens for g in out.values()), out


def random_organism(size: str, root: Path) -> Path:
    """A seeded random-initialised organism of a ladder size (the organisms' tokenizer), saved in ``root``."""
    from transformers import Qwen2ForCausalLM

    from l2s_lib.organisms import configs
    from l2s_lib.organisms import tokenizer as tok_mod
    from l2s_lib.organisms.train import Encoder

    enc = Encoder()
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(configs.qwen2_config(size, len(enc.vocab), enc.eos_id, enc.pad_id))
    out = root / size
    model.save_pretrained(out)
    tok_mod.save_tokenizer(out)
    return out


def bench_model(label: str, folder: Path, device: str, dtype: str, max_new: int | None, hf_batch: int,
                check_fp32: bool) -> dict:
    fast = HFBackend(folder, device=device, dtype=dtype, decoder="static")
    ref = HFBackend(folder, device=device, dtype=dtype, decoder="generate", batch_size=hf_batch)
    ref._model = fast.model  # one copy of the weights for both
    prompts = prompts_for(fast)
    bench = get_benchmark("org_levels")
    params = DecodingParams(max_new_tokens=max_new or bench.max_new_tokens)
    # Warm-up (kernels, allocator, the small CUDA-graph buckets), outside the timed region.
    for b in (fast, ref):
        list(b.generate(prompts[:4], DecodingParams(max_new_tokens=4), progress=False))
    batch = fast.default_batch_size(NAME, params, max(len(fast.tokenizer(p)["input_ids"]) for p in prompts))
    torch_dtype = next(fast.model.parameters()).dtype
    threads = torch.get_num_threads()
    rates = {}
    if device == "cpu":
        rates["1 thread"] = gemm_rate(fast.model, batch, device, torch_dtype, threads=1)
        if threads > 1:
            rates[f"{threads} threads"] = gemm_rate(fast.model, batch, device, torch_dtype, threads=threads)
    else:
        rates["GPU"] = gemm_rate(fast.model, batch, device, torch_dtype)
    s_fast, n_fast, out_fast = timed(fast, prompts, params)
    s_ref, n_ref, out_ref = timed(ref, prompts, params)
    flop_per_token = 2 * non_embedding_params(fast.model)
    roof = max(rates.values())
    row = {"model": label, "device": device, "dtype": str(torch_dtype).replace("torch.", ""), "batch": batch,
           "hf_batch": hf_batch, "tokens": n_fast, "static_s": s_fast, "generate_s": s_ref,
           "static_tok_s": n_fast / s_fast, "generate_tok_s": n_ref / s_ref,
           "speedup": (n_fast / s_fast) / (n_ref / s_ref), "identical": out_fast == out_ref,
           "useful_gflops": n_fast * flop_per_token / s_fast / 1e9,
           "generate_gflops": n_ref * flop_per_token / s_ref / 1e9, "gemm_gflops": rates,
           "roofline_fraction": n_fast * flop_per_token / s_fast / 1e9 / roof,
           "params_non_embedding": flop_per_token // 2}
    if check_fp32 and torch_dtype != torch.float32:
        f32 = HFBackend(folder, device=device, dtype="float32", decoder="static")
        r32 = HFBackend(folder, device=device, dtype="float32", decoder="generate", batch_size=hf_batch)
        r32._model = f32.model
        short = DecodingParams(max_new_tokens=min(params.max_new_tokens, 64))
        a = dict(f32.generate(prompts[:128], short, progress=False))
        b = dict(r32.generate(prompts[:128], short, progress=False))
        row["identical_fp32"] = f"{sum(a[i] == b[i] for i in a)}/{len(a)}"
        del f32, r32
    print(f"  {label:>5s} {device}/{row['dtype']}: static {row['static_tok_s']:9.0f} tok/s "
          f"(batch {batch}), generate {row['generate_tok_s']:8.0f} tok/s (batch {hf_batch}): "
          f"{row['speedup']:.1f}x; useful {row['useful_gflops']:.1f} GFLOP/s = {row['roofline_fraction']:.0%} of "
          f"the GEMM roofline {roof:.0f} GFLOP/s; identical: {row['identical']}"
          + (f", fp32 {row['identical_fp32']}" if "identical_fp32" in row else ""), flush=True)
    return row


def whole_command(roofline: dict[str, float], flop_per_token: int, batch: int) -> dict:
    """``l2s eval`` of the 6m System 2 on org_levels as a child process: wall time and roofline fraction."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "l2s_lib.cli", "eval", "--model", str(SHIPPED / "6m" / "system2"),
               "--benchmarks", "org_levels", "--no-cache", "--quiet", "--out", tmp]
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        t = time.perf_counter()
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
        wall = time.perf_counter() - t
        tokens = sum(json.loads(line)["n_tokens"] for line in open(Path(tmp) / "samples.jsonl"))
        decoder = json.loads((Path(tmp) / "settings.json").read_text())["benchmarks"]["org_levels"]["decoder"]
    # The GEMM rate again right after the command (one thread, as the command decodes): on a shared machine
    # the load moves between the two measurements, and the roofline is the best rate seen in this run.
    model = HFBackend(SHIPPED / "6m" / "system2").model
    after = gemm_rate(model, batch, "cpu", next(model.parameters()).dtype, threads=1)
    roofline = dict(roofline, **{"1 thread, after the command": after})
    roof = max(roofline.values())
    rate = tokens * flop_per_token / wall / 1e9
    print(f"  whole `l2s eval` (6m System 2, org_levels, --no-cache): {wall:.1f} s, {tokens} tokens, "
          f"{tokens / wall:.0f} tok/s, useful {rate:.1f} GFLOP/s = {rate / roof:.0%} of the roofline "
          f"{roof:.0f} GFLOP/s (decoder: {decoder}; load average after it {load_average()})", flush=True)
    return {"wall_s": wall, "tokens": tokens, "useful_gflops": rate, "roofline_fraction": rate / roof,
            "decoder": decoder, "gemm_gflops": roofline}


def threads_ab(counts: list[int], rounds: int = 2) -> list[dict]:
    """The 6m static decoder on org_levels at each intra-op thread count in ``counts``, alternating, each
    against the GEMM rate at its own thread count measured just before (on a shared machine the load moves)."""
    be = HFBackend(SHIPPED / "6m" / "system2", decoder="static")
    be._small_model_threads = torch.get_num_threads  # keep the count set here (HFBackend would pick one thread)
    prompts = prompts_for(be)
    params = DecodingParams(max_new_tokens=get_benchmark("org_levels").max_new_tokens)
    flop_per_token = 2 * non_embedding_params(be.model)
    batch = be.default_batch_size(NAME, params, max(len(be.tokenizer(p)["input_ids"]) for p in prompts))
    before, rows = torch.get_num_threads(), []
    try:
        for _ in range(rounds):
            for th in counts:
                torch.set_num_threads(th)
                gemm = gemm_rate(be.model, batch, "cpu", next(be.model.parameters()).dtype, threads=th)
                list(be.generate(prompts[:4], DecodingParams(max_new_tokens=4), progress=False))
                seconds, tokens, _ = timed(be, prompts, params)
                useful = tokens * flop_per_token / seconds / 1e9
                rows.append({"threads": th, "seconds": seconds, "useful_gflops": useful, "gemm_gflops": gemm})
                print(f"  6m static, {th} thread(s): {seconds:.1f} s, {tokens / seconds:.0f} tok/s, useful "
                      f"{useful:.1f} GFLOP/s = {useful / gemm:.0%} of the GEMM rate at {th} thread(s) {gemm:.0f} "
                      f"GFLOP/s; load average {load_average()}", flush=True)
    finally:
        torch.set_num_threads(before)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu (shipped organisms) or cuda (the ladder, random weights)")
    ap.add_argument("--sizes", default=None, help="comma-separated sizes (default: 1m,6m on CPU, 1m,6m,30m,100m on "
                    "CUDA)")
    ap.add_argument("--dtype", default="auto", help="auto: float32 on CPU, bfloat16 on CUDA")
    ap.add_argument("--hf-batch", type=int, default=None,
                    help="batch of transformers generate (default: its default batch for the device)")
    ap.add_argument("--cuda-max-new-tokens", type=int, default=64, help="tokens per row of the random organisms")
    ap.add_argument("--no-command", action="store_true", help="CPU: skip the whole `l2s eval` command")
    ap.add_argument("--threads-ab", default=None, metavar="COUNTS",
                    help="CPU: also time the 6m static decoder at these intra-op thread counts, e.g. 1,2")
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = ap.parse_args(argv)
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        ap.error("--device cuda, but torch sees no CUDA device")
    sizes = [s for s in (args.sizes or ("1m,6m,30m,100m" if cuda else "1m,6m")).split(",") if s]
    from l2s_lib.eval.generation import GENERATE_BATCH

    hf_batch = args.hf_batch or GENERATE_BATCH["cuda" if cuda else "cpu"]
    print(f"device {args.device} ({torch.cuda.get_device_name() if cuda else f'{torch.get_num_threads()} threads'}), "
          f"torch {torch.__version__}, load average {load_average()}", flush=True)
    rows, command = [], None
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            if cuda:
                folder = random_organism(size, Path(tmp))
                rows.append(bench_model(f"{size}*", folder, args.device, args.dtype, args.cuda_max_new_tokens,
                                        hf_batch, check_fp32=True))
            else:
                folder = SHIPPED / size / "system2"
                rows.append(bench_model(size, folder, args.device, args.dtype, None, hf_batch, check_fp32=False))
    if not cuda and not args.no_command:
        six = next((r for r in rows if r["model"] == "6m"), None)
        if six is not None:
            command = whole_command(six["gemm_gflops"], 2 * six["params_non_embedding"], six["batch"])
    ab = None
    if not cuda and args.threads_ab:
        ab = threads_ab([int(c) for c in args.threads_ab.split(",")])
    print()
    print("| model | device | dtype | static tok/s (batch) | generate tok/s (batch) | speed-up | useful GFLOP/s | "
          "GEMM GFLOP/s | roofline | identical |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        gemm = ", ".join(f"{v:.0f} ({k})" for k, v in r["gemm_gflops"].items())
        ident = str(r["identical"]) + (f" (fp32: {r['identical_fp32']})" if "identical_fp32" in r else "")
        print(f"| {r['model']} | {r['device']} | {r['dtype']} | {r['static_tok_s']:.0f} ({r['batch']}) | "
              f"{r['generate_tok_s']:.0f} ({r['hf_batch']}) | {r['speedup']:.1f}x | {r['useful_gflops']:.1f} | {gemm} | "
              f"{r['roofline_fraction']:.0%} | {ident} |")
    if cuda:
        print("\n(* random-initialised organisms of the ladder's shapes: every row runs to the token cap)")
    if command:
        gemm = ", ".join(f"{v:.0f} ({k})" for k, v in command["gemm_gflops"].items())
        print(f"\nwhole `l2s eval` command: {command['wall_s']:.1f} s, {command['useful_gflops']:.1f} GFLOP/s useful "
              f"= {command['roofline_fraction']:.0%} of the roofline (GEMM GFLOP/s: {gemm})")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "command": command, "threads_ab": ab}, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
