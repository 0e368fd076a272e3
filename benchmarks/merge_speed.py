"""Merge speed and peak memory: ``l2s merge`` against ``mergekit-yaml`` on a Qwen2.5-1.5B-shaped pair.

    .venv/bin/python benchmarks/merge_speed.py                     # CPU, task_arithmetic and ties
    .venv/bin/python benchmarks/merge_speed.py --device cuda
    .venv/bin/python benchmarks/merge_speed.py --methods task_arithmetic,ties,dare_linear
    .venv/bin/python benchmarks/merge_speed.py --tools l2s --methods aim_ties,sens,twin   # l2s-only methods

Builds once (cached in ``~/.cache/l2s-bench``, outside the repository) a seeded random Qwen2 pair of the
Qwen2.5-1.5B / R1-Distill-1.5B shape in bf16 (untied head, 1.78B parameters, 3.5 GB per model): System 1
random, System 2 = System 1 + 5% of each tensor's RMS of seeded noise. The tensors are written directly
with ``safetensors`` (building them through ``transformers`` takes minutes). Then, for each method, both
tools merge the pair with the same settings in child processes, one after the other, with the inputs in
the page cache evicted before each run (``--start cold``, the default: ``POSIX_FADV_DONTNEED`` after
``sync``) or read into it (``--start warm``), and the script prints wall time and peak resident memory
(``ru_maxrss`` of the child from ``os.wait4``, in a small launcher process: see ``run_child``) of each, their ratios, the bytes read and written per second
next to the disk's read speed (``O_DIRECT`` reads after ``sync``), and each run's I/O floor: the inputs read
and the output written at the disk's measured speeds (``O_DIRECT`` reads; ``O_DIRECT`` writes of a fresh
file with ``fsync``).
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from l2s_lib import tiny  # noqa: E402

CACHE = Path(os.environ.get("L2S_BENCH_CACHE", Path.home() / ".cache" / "l2s-bench"))
#: The settings of each method, shared by both tools (the paper's 7B values: TA alpha 0.7, TIES k 0.8).
METHODS = {
    "task_arithmetic": {"models_params": {"weight": 0.7}, "parameters": {}},
    "ties": {"models_params": {"weight": 1.0, "density": 0.2}, "parameters": {"lambda": 1.0}},
    "dare_linear": {"models_params": {"weight": 0.7, "density": 0.7}, "parameters": {}},
    "dare_ties": {"models_params": {"weight": 1.0, "density": 0.7}, "parameters": {"lambda": 1.0}},
    "linear": {"models_params": {"weight": 0.5}, "parameters": {}, "base_in_models": True},
    # SVD and calibration methods (no mergekit counterpart, so l2s only). Calibration: the repository's
    # small fixture set (few short texts on CPU); the first run computes the statistics (its pre-pass time
    # is the calibration cost), a second run reads them from the cache ("cached" row).
    "lore": {"models_params": {"weight": 0.7}, "base_params": {"weight": 0.3}, "parameters": {"threshold": 0.01},
             "base_in_models": True, "tools": ("l2s",)},
    "twin": {"models_params": {}, "parameters": {"lambda": 0.7, "rank_ratio": 0.1}, "tools": ("l2s",)},
    "iso_c": {"models_params": {}, "parameters": {"alpha": 1.0}, "tools": ("l2s",)},
    "aim_ties": {"models_params": {"weight": 1.0, "density": 0.2}, "tools": ("l2s",), "calibrated": True,
                 "parameters": {"lambda": 1.0, "omega": 0.4, "calibration": "tests/fixtures/calibration/arithmetic.jsonl",
                                "calibration_n": 12, "calibration_side": "both"}},
    "sens": {"models_params": {}, "tools": ("l2s",), "calibrated": True,
             "parameters": {"alpha": 0.7, "temperature": 2.0, "calibration": "tests/fixtures/calibration/arithmetic.jsonl",
                            "calibration_n": 4, "max_length": 128, "calibration_dtype": "bfloat16"}},
}


# ---------------------------------------------------------------------------------------------------
# The pair
# ---------------------------------------------------------------------------------------------------


def qwen2_shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of an untied Qwen2ForCausalLM (the safetensors layout of HF checkpoints)."""
    h, i, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    kv = cfg["num_key_value_heads"] * (h // cfg["num_attention_heads"])
    shapes = {"model.embed_tokens.weight": (v, h), "lm_head.weight": (v, h), "model.norm.weight": (h,)}
    for layer in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        shapes |= {
            p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,),
            p + "self_attn.q_proj.weight": (h, h), p + "self_attn.q_proj.bias": (h,),
            p + "self_attn.k_proj.weight": (kv, h), p + "self_attn.k_proj.bias": (kv,),
            p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.v_proj.bias": (kv,),
            p + "self_attn.o_proj.weight": (h, h),
            p + "mlp.gate_proj.weight": (i, h), p + "mlp.up_proj.weight": (i, h), p + "mlp.down_proj.weight": (h, i),
        }
    return shapes


def build_pair(root: Path, seed: int = 0, shard_bytes: int = 2 * 10**9) -> tuple[Path, Path]:
    """Write (or reuse) the bf16 1.5B-shaped pair under ``root``; returns (system1, system2)."""
    from safetensors.torch import save_file

    s1, s2 = root / "system1", root / "system2"
    cfg = tiny.qwen2_config("qwen2.5-1.5b").to_dict()
    cfg |= {"dtype": "bfloat16", "architectures": ["Qwen2ForCausalLM"]}
    if (root / "DONE").is_file():
        return s1, s2
    shutil.rmtree(root, ignore_errors=True)
    shapes = qwen2_shapes(cfg)
    tok = tiny.build_tokenizer(512)
    gen = torch.Generator().manual_seed(seed)
    for d in (s1, s2):
        d.mkdir(parents=True)
        (d / "config.json").write_text(json.dumps(cfg, indent=2))
        tok.save_pretrained(d)
    # Shard plan shared by both models.
    shards, cur, size = [], [], 0
    for name, shape in shapes.items():
        nbytes = 2 * int(torch.tensor(shape).prod())
        if cur and size + nbytes > shard_bytes:
            shards.append(cur)
            cur, size = [], 0
        cur.append(name)
        size += nbytes
    shards.append(cur)
    weight_map = {}
    t0 = time.time()
    for k, names in enumerate(shards, 1):
        fname = f"model-{k:05d}-of-{len(shards):05d}.safetensors"
        a, b = {}, {}
        for name in names:
            shape = shapes[name]
            if len(shape) == 1:
                x = 1.0 + 0.02 * torch.randn(shape, generator=gen)
            else:
                x = torch.randn(shape, generator=gen).mul_(0.02)
            noise = torch.randn(shape, generator=gen).mul_(0.05 * float(x.pow(2).mean().sqrt()))
            a[name] = x.bfloat16()
            b[name] = (x + noise).bfloat16()
            weight_map[name] = fname
            del x, noise
        save_file(a, s1 / fname, metadata={"format": "pt"})
        save_file(b, s2 / fname, metadata={"format": "pt"})
        print(f"  built shard {k}/{len(shards)} ({time.time() - t0:.0f} s)", flush=True)
    index = {"metadata": {"total_size": sum(2 * int(torch.tensor(s).prod()) for s in shapes.values())},
             "weight_map": weight_map}
    for d in (s1, s2):
        (d / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    (root / "DONE").write_text("ok\n")
    return s1, s2


# ---------------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------------


def disk_read_speed(files: list[Path], limit: int = 2 * 10**9) -> float:
    """Bytes per second of ``O_DIRECT`` reads (the disk, not the page cache) over up to ``limit`` bytes,
    after ``os.sync()`` (the pair's build leaves gigabytes of dirty pages whose writeback would share the disk:
    that is why a reading right after the build once gave 646 MB/s and 1,788 MB/s four minutes later)."""
    os.sync()
    block = 64 * 2**20
    buf = mmap.mmap(-1, block)  # page-aligned, as O_DIRECT requires
    done, t0 = 0, time.perf_counter()
    for f in files:
        try:
            fd = os.open(f, os.O_RDONLY | os.O_DIRECT)
        except OSError:
            return float("nan")  # a filesystem without O_DIRECT
        try:
            off = 0
            while done < limit:
                n = os.preadv(fd, [buf], off)
                if n <= 0:
                    break
                off += n
                done += n
        finally:
            os.close(fd)
        if done >= limit:
            break
    return done / (time.perf_counter() - t0)


def evict(files: list[Path]) -> None:
    """Drop files from the page cache (flush dirty pages first; ``POSIX_FADV_DONTNEED`` needs no root), so that
    the next read of them comes from the disk: a cold start."""
    os.sync()
    try:  # as root, also the kernel's whole cache (some sandboxes keep pages that fadvise leaves)
        Path("/proc/sys/vm/drop_caches").write_text("1\n")
    except OSError:
        pass
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def disk_write_speed(folder: Path, nbytes: int = 10**9) -> float:
    """Bytes per second of writing a fresh file with ``O_DIRECT`` and ``fsync`` (the disk, not the page cache)."""
    block = 64 * 2**20
    buf = mmap.mmap(-1, block)
    buf.write(os.urandom(2**20) * 64)
    f = folder / "l2s-bench-write-probe"
    os.sync()  # nothing else waiting for the disk while it is timed
    try:
        fd = os.open(f, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o644)
    except OSError:
        return float("nan")
    try:
        t0 = time.perf_counter()
        done = 0
        while done < nbytes:
            done += os.pwritev(fd, [buf], done)
        os.fsync(fd)
        return done / (time.perf_counter() - t0)
    finally:
        os.close(fd)
        f.unlink(missing_ok=True)


def warm(files: list[Path]) -> None:
    """Read files once so that both tools start with the inputs in the page cache."""
    buf = bytearray(64 * 2**20)
    for f in files:
        with open(f, "rb", buffering=0) as fh:
            while fh.readinto(buf):
                pass


#: Runs the command given in argv, waits for it and prints its wall time, peak RSS and exit code as JSON.
_LAUNCHER = (
    "import json, os, subprocess, sys, time\n"
    "t = time.perf_counter()\n"
    "p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
    "_, status, usage = os.wait4(p.pid, 0)\n"
    "print(json.dumps([time.perf_counter() - t, usage.ru_maxrss * 1024, os.waitstatus_to_exitcode(status)]))\n"
)


def run_child(cmd: list[str], env: dict[str, str]) -> tuple[float, int, int]:
    """Run a command; return (wall seconds, peak RSS bytes, exit code).

    Through a small launcher process: Linux records the peak RSS of the memory a process replaces at
    ``exec`` in its ``ru_maxrss``, so a child started straight from this process (which holds gigabytes
    after building the pair) would report this process's peak, not its own; the launcher is itself small.
    """
    proc = subprocess.run([sys.executable, "-c", _LAUNCHER, *cmd], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr.decode()[-3000:]}")
    wall, rss, code = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    if code != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({code}):\n{proc.stderr.decode()[-3000:]}")
    return wall, rss, code


def folder_bytes(d: Path, suffix: str = ".safetensors") -> int:
    return sum(f.stat().st_size for f in d.glob(f"*{suffix}"))


def config_for(method: str, s1: Path, s2: Path) -> dict:
    spec = METHODS[method]
    models = [{"model": str(s2), "parameters": dict(spec["models_params"])}]
    if spec.get("base_in_models"):
        models.insert(0, {"model": str(s1), "parameters": dict(spec.get("base_params", spec["models_params"]))})
    cfg = {"merge_method": method, "base_model": str(s1), "models": models, "dtype": "bfloat16"}
    if spec["parameters"]:
        cfg["parameters"] = dict(spec["parameters"])
    return cfg


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", default="task_arithmetic,ties",
                    help=f"comma-separated, among {', '.join(METHODS)} (default: task_arithmetic,ties)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (l2s --device cuda, mergekit --cuda)")
    ap.add_argument("--repeats", type=int, default=1, help="runs per tool and method (the best is kept)")
    ap.add_argument("--tools", default="l2s,mergekit", help="which tools to run")
    ap.add_argument("--start", choices=("cold", "warm"), default="cold",
                    help="cold: inputs evicted from the page cache before each run (the disk floor applies); "
                         "warm: inputs read into the page cache before each run")
    args = ap.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        ap.error(f"unknown method(s) {', '.join(unknown)}; known: {', '.join(METHODS)}")
    tools = [t.strip() for t in args.tools.split(",")]

    import yaml

    print(f"pair: {CACHE / 'qwen2.5-1.5b-bf16'} (built once)", flush=True)
    s1, s2 = build_pair(CACHE / "qwen2.5-1.5b-bf16")
    inputs = sorted(s1.glob("*.safetensors")) + sorted(s2.glob("*.safetensors"))
    in_bytes = sum(f.stat().st_size for f in inputs)
    disk = disk_read_speed(sorted(s1.glob("*.safetensors")))
    disk_w = disk_write_speed(CACHE)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONWARNINGS="ignore",
               L2S_OUTPUT_ROOT=str(CACHE / "l2s-output"))  # calibration caches outside the repository
    work = CACHE / "runs"
    work.mkdir(parents=True, exist_ok=True)
    results = []
    for method in methods:
        cfg = config_for(method, s1, s2)
        cfg_file = work / f"{method}.yaml"
        cfg_file.write_text(yaml.safe_dump(cfg, sort_keys=False))
        for tool in tools:
            if tool not in METHODS[method].get("tools", (tool,)):
                print(f"  {method:16s} {tool:9s} (not offered)", flush=True)
                continue
            calibrated = tool == "l2s" and METHODS[method].get("calibrated", False)
            if calibrated:  # cold statistics cache for the first run
                shutil.rmtree(env["L2S_OUTPUT_ROOT"], ignore_errors=True)
            best = None
            for rep in range(args.repeats + (1 if calibrated else 0)):
                out = work / f"out-{tool}-{method}"
                shutil.rmtree(out, ignore_errors=True)
                if tool == "l2s":
                    cmd = [sys.executable, "-m", "l2s_lib.cli", "merge", str(cfg_file), str(out), "--no-progress",
                           "--device", args.device]
                else:
                    # `python -m` rather than the console script: identical code, and it also works where
                    # mergekit was installed with `pip --target` (no script on PATH), as on the GPU machine.
                    cmd = [sys.executable, "-m", "mergekit.scripts.run_yaml", str(cfg_file), str(out)]
                    if args.device.startswith("cuda"):
                        cmd.append("--cuda")
                (evict if args.start == "cold" else warm)(inputs)
                wall, rss, _ = run_child(cmd, env)
                out_bytes = folder_bytes(out)
                timing = json.loads((out / "l2s_provenance.json").read_text())["timing_s"] if tool == "l2s" else {}
                shutil.rmtree(out, ignore_errors=True)
                if calibrated and rep == 0:  # the run that computed the calibration statistics
                    results.append({"method": f"{method} (calibration)", "tool": tool, "wall_s": wall, "peak_rss": rss,
                                    "io_bytes": in_bytes + out_bytes})
                    print(f"  {method:16s} {tool:9s} {wall:7.1f} s  {rss / 2**30:6.2f} GiB  with calibration: "
                          f"pre-pass {timing['prepass']:.1f} s", flush=True)
                    continue
                if best is None or wall < best[0]:
                    best = (wall, rss, out_bytes)
            results.append({"method": f"{method} (cached)" if calibrated else method, "tool": tool,
                            "wall_s": best[0], "peak_rss": best[1],
                            "io_bytes": in_bytes + best[2], "out_bytes": best[2]})
            print(f"  {method:16s} {tool:9s} {best[0]:7.1f} s  {best[1] / 2**30:6.2f} GiB", flush=True)

    print()
    print(f"device: {args.device}; CPU threads: {torch.get_num_threads()}; inputs {in_bytes / 1e9:.2f} GB "
          f"(2 models, bf16); start: {args.start}; disk read (O_DIRECT, after sync): {disk / 1e6:.0f} MB/s; "
          f"disk write (O_DIRECT + fsync, fresh file): {disk_w / 1e6:.0f} MB/s")
    print("I/O floor of a run = input bytes / read speed + output bytes / write speed (one disk; a cold start "
          "reads every input byte from it)" if args.start == "cold" else
          "I/O floor of a run = output bytes / write speed (inputs in the page cache)")
    print()
    header = "| method | tool | wall (s) | peak RSS (GiB) | read+written (MB/s) | vs disk read | I/O floor (s) | wall / floor |"
    print(header)
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        rate = r["io_bytes"] / r["wall_s"]
        out_b = r.get("out_bytes", r["io_bytes"] - in_bytes)
        floor = (in_bytes / disk if args.start == "cold" else 0.0) + out_b / disk_w
        print(f"| {r['method']} | {r['tool']} | {r['wall_s']:.1f} | {r['peak_rss'] / 2**30:.2f} | "
              f"{rate / 1e6:.0f} | {rate / disk:.2f}x | {floor:.1f} | {r['wall_s'] / floor:.2f} |")
    if "l2s" in tools and "mergekit" in tools:
        print()
        print("| method | time l2s / mergekit | peak RSS l2s / mergekit |")
        print("|---|---:|---:|")
        for method in methods:
            if "mergekit" not in METHODS[method].get("tools", ("mergekit",)):
                continue
            a = next(r for r in results if r["method"] == method and r["tool"] == "l2s")
            b = next(r for r in results if r["method"] == method and r["tool"] == "mergekit")
            print(f"| {method} | {a['wall_s'] / b['wall_s']:.2f} | {a['peak_rss'] / b['peak_rss']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
