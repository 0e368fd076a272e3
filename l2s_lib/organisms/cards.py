"""Model cards of the shipped organisms, measured with the evaluation harness (``l2s_lib.eval.evaluate``).

``write_card(folder)`` evaluates a checkpoint greedily on ``org_levels`` (and ``org_easy``, ``org_hard``),
writes ``eval_org.json`` (per-benchmark, per-level accuracy / first-pass accuracy / flip rate / mean length /
reflection rate, plus a spot-check list of the first ``SPOT`` problems of each level with the exact response
length and correctness, which the tests regenerate) and ``README.md`` (recipe, seeds, curve summary, numbers).
"""

from __future__ import annotations

import json
from pathlib import Path

from l2s_lib.organisms import configs, determinism, study, writers

BENCHES = ("org_levels", "org_easy", "org_hard")
SPOT = 2  # spot-check problems per level (the shipped-checkpoint test regenerates them on CPU)
#: Problems per level of ``org_levels`` measured for a card (its first ones of each level; None = all 100).
CARD_PER_LEVEL: int | None = None


def _subset(per_level: int | None):
    """``org_levels`` itself, or an unregistered copy holding its first ``per_level`` problems of each level."""
    import tempfile

    from l2s_lib.eval.benchmarks import benchmark_from_file
    from l2s_lib.organisms.benchmarks import benchmark_path

    if per_level is None:
        return "org_levels"
    rows = [json.loads(x) for x in benchmark_path("org_levels").read_text().splitlines()]
    keep: list[dict] = []
    for lv in sorted({r["level"] for r in rows}):
        keep += [r for r in rows if r["level"] == lv][:per_level]
    path = Path(tempfile.mkdtemp()) / "org_levels.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in keep))
    return benchmark_from_file(path, like="org_levels")


def measure(folder: Path, batch_size: int = 100, per_level: int | None = CARD_PER_LEVEL,
            device: str = "cpu") -> dict:
    """Per-level metrics of ``folder`` on ``org_levels`` (its first ``per_level`` problems of each level; with
    None also ``org_easy`` and ``org_hard``) through ``l2s_lib.eval.evaluate`` (greedy, fp32, on ``device``);
    first-pass accuracy and flips from eval's records (``study.rows_from_records``)."""
    from l2s_lib.eval import evaluate
    from l2s_lib.organisms import register_eval

    register_eval()
    benches = [_subset(per_level)] + (list(BENCHES[1:]) if per_level is None else [])
    res = evaluate(str(folder), benches, device=device, dtype="float32", batch_size=batch_size,
                   use_cache=False, progress=False)
    rec = res.records
    out: dict = {"benchmarks": {}, "spot_check": [], "per_level": per_level, "device": device,
                 "weights_sha256": determinism.weights_sha256(folder)}
    for bench in BENCHES:
        if not (rec.benchmark == bench).any():
            continue
        rows = study.rows_from_records(rec[rec.benchmark == bench])
        out["benchmarks"][bench] = [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in s.items()}
                                    for s in study.summarize(rows)]
        if bench == "org_levels":
            for lv in sorted({r["level"] for r in rows}):
                for r in [r for r in rows if r["level"] == lv][:SPOT]:
                    out["spot_check"].append({"level": lv, "correct": r["correct"], "length": r["length"],
                                              "response": r["text"]})
    return out


def _table(rows: list[dict]) -> str:
    lines = ["| level | n | accuracy | first-pass acc. | flip rate | mean length (tokens) | reflective |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['level']} | {r['n']} | {r['correct']:.3f} | {r['first_correct']:.3f} | {r['flip']:.3f} "
                     f"| {r['length']:.1f} | {r['reflect']:.3f} |")
    return "\n".join(lines)


_SLIP_RULE = ("an addition whose units digits sum to {c} or more drops its carry, a subtraction whose units digits "
              "differ by {b} or more forgets its borrow")
S1_TEXT = {
    "compressed": "two operations per written step, no verification",
    "slip": "one operation per step with a deterministic carry/borrow slip ("
            + _SLIP_RULE.format(c=writers.SLIP_CARRY_UNITS, b=writers.SLIP_BORROW_UNITS) + "), no verification",
    "tiring": f"one operation per step with a deterministic carry/borrow slip that loosens from step "
              f"{writers.LATE_FROM + 1} on (before: "
              + _SLIP_RULE.format(c=writers.SLIP_CARRY_UNITS, b=writers.SLIP_BORROW_UNITS) + "; from then: "
              + _SLIP_RULE.format(c=writers.LATE_CARRY_UNITS, b=writers.LATE_BORROW_UNITS) + "), no verification",
}
ROLE_TEXT = {
    "system1": "System 1: the quick thinker ({s1}), SFT from the pretrained base.",
    "system2": "System 2: System 1 fine-tuned on long solutions (one operation per step, a first and a second "
               "verification pass, both more frequent on harder levels; planted first-pass errors caught by the "
               "check and repaired by a tie-break pass).",
    "system2_equal": "Control System 2: trained from the same System 1 exactly as System 2, but in the `equal` "
                     "world (verification rates 0.8 / 0.57 on every level instead of rising with the level), so "
                     "that level-dependent reflection in a merge can be told apart from System 2's own habit.",
    "dpo": "DPO baseline: System 2 trained with DPO (+ NLL on the chosen side) on short-preferred pairs "
           "(chosen: the same solution without verification; rejected: with it).",
}


def _provenance_line(meta: dict) -> str:
    """Where and with what the checkpoint was trained (``organism.json``, written by ``train.save_checkpoint``)."""
    if not meta.get("versions"):
        return ("- trained with: not recorded (design-2 run of 2026-11-30 on an H200, before the trainer recorded "
                "versions and determinism settings)")
    v = meta["versions"]
    det = meta.get("determinism") or {}
    return (f"- trained with: {meta.get('device_name', meta['device'])}, torch {v.get('torch')}, transformers "
            f"{v.get('transformers')}, python {v.get('python')}; deterministic algorithms "
            f"{det.get('deterministic_algorithms')}, CUBLAS_WORKSPACE_CONFIG `{det.get('cublas_workspace_config')}`, "
            f"SDPA `{det.get('training_sdpa_backend')}`, TF32 {det.get('tf32_matmul')}")


def write_card(folder: Path, metrics: dict, train_log: dict | None = None, note: str = "") -> Path:
    meta = json.loads((folder / "organism.json").read_text())
    (folder / "eval_org.json").write_text(json.dumps(metrics, indent=1) + "\n")
    recipe = configs.DEFAULT_RECIPE.to_dict()
    size = configs.get_size(meta["size"])
    parts = [
        f"# Organism {meta['size']} / {meta['role']} (seed {meta['seed']})", "",
        ROLE_TEXT.get(meta["role"], meta["role"]).format(s1=S1_TEXT.get(meta["s1_style"], meta["s1_style"])), "",
        "A Qwen2ForCausalLM trained from scratch by this project on the synthetic arithmetic world of "
        "`l2s_lib.organisms` (levels 1-5 = number of +/- operations). Prompt: `Q: <question>\\nA:` "
        "(the `organism` prompt); answer: the last `\\boxed{N}`.", "",
        f"- parameters: {configs.n_params(meta['size']):,} (hidden {size.hidden_size}, {size.num_hidden_layers} "
        f"layers, tied embeddings), stored in bf16",
        f"- System 1 style: `{meta['s1_style']}`; world: `{meta['world']}`; parent: `{meta['parent']}`; "
        f"trained on `{meta['device']}`",
        f"- recipe (steps, peak lr x size scale {size.lr_scale}, batch): "
        + "; ".join(f"{k} {v['steps']} steps, lr {v['lr']}, batch {v['batch_size']}"
                    for k, v in recipe.items() if isinstance(v, dict)),
        f"- weights: `model.safetensors` sha256 `{determinism.weights_sha256(folder)}`",
        _provenance_line(meta),
        f"- rebuild: `l2s organisms train --size {meta['size']} --seed {meta['seed']} --device cuda"
        + (" --control" if meta["role"] == "system2_equal" else "") + "`"
        + (" (deterministic kernels: the same hardware and software give the same sha256)" if meta.get("determinism")
           else " (this checkpoint was trained before training was deterministic: a rebuild gives another draw "
                "of the same recipe, not these bytes)"), "",
        "## Training curve", "",
    ]
    if train_log and meta["role"] in train_log.get("stages", {}):
        st = train_log["stages"][meta["role"]]["loss"]
        parts.append(f"Loss (mean of first / middle / last tenth of {st['steps']} steps): "
                     f"{st['first_10pct']} / {st['middle_10pct']} / {st['last_10pct']}.")
    else:
        parts.append("Not recorded: the GPU run that trained this checkpoint was stopped (its time limit) "
                     "before it wrote `train_log.json`; the trainer now writes the log after every stage.")
    n = metrics.get("per_level")
    where = "CPU" if metrics.get("device", "cpu") == "cpu" else "CUDA"
    parts += ["", f"## Measured (greedy, fp32 on {where}, through `l2s_lib.eval.evaluate`)", "",
              (f"On the first {n} problems of each level of `org_levels` ({5 * n} of 500; the CPU time of this "
               "session allowed no more). The merge-study numbers of `data/organisms/README.md` use another "
               "held-out set of 40 per level." if n else "On all of `org_levels`."), ""]
    for bench, rows in metrics["benchmarks"].items():
        parts += [f"### {bench}", "", _table(rows), ""]
    parts += ["First-pass answer: the first `answer is N` or `\\boxed{N}`; flip: first answer right, final "
              "answer wrong; reflective: contains a paper keyword (wait, re-examine, recap, double-check, "
              "let me (just) check/verify). `eval_org.json` holds these numbers and a spot-check list that "
              "`tests/test_organisms_shipped.py` regenerates.", ""]
    if note:
        parts += [note, ""]
    (folder / "README.md").write_text("\n".join(parts))
    return folder / "README.md"


if __name__ == "__main__":  # python -m l2s_lib.organisms.cards [--text-only] [--device cuda] FOLDER...
    import argparse

    ap = argparse.ArgumentParser(description="measure organism checkpoints and write their model cards")
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--text-only", action="store_true", help="rewrite README.md from an existing eval_org.json")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=100)
    args = ap.parse_args()
    for folder in args.folders:
        log_path = folder.parent / "train_log.json"
        log = json.loads(log_path.read_text()) if log_path.exists() else None
        metrics = json.loads((folder / "eval_org.json").read_text()) if args.text_only \
            else measure(folder, batch_size=args.batch_size, device=args.device)
        print(write_card(folder, metrics, log))
