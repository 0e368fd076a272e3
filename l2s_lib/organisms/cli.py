"""``l2s organisms``: train a size end to end, rebuild the ladder sweep, write a held-out benchmark, list sizes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from l2s_lib import paths


def _train(args) -> int:
    from l2s_lib.organisms import configs, train

    if args.steps_factor <= 0 or (args.batch_size is not None and args.batch_size < 1):
        from l2s_lib.errors import ConfigError

        raise ConfigError("--steps-factor must be > 0 and --batch-size >= 1")
    recipe = configs.DEFAULT_RECIPE
    if args.steps_factor != 1 or args.batch_size:
        recipe = recipe.scaled(args.steps_factor, args.batch_size)
    out = args.out or paths.output_root() / "organisms" / f"{args.size}_s{args.seed}"
    got = train.train_organism(args.size, out, seed=args.seed, device=args.device, s1_style=args.s1_style,
                               recipe=recipe, control=args.control, deterministic=not args.nondeterministic)
    log = json.loads((Path(out) / "train_log.json").read_text())
    for role, p in got.items():
        if args.cards and role != "base":
            from l2s_lib.organisms import cards

            cards.write_card(p, cards.measure(p), log)
        print(f"{role}: {p} sha256 {log['sha256'][role]}")
    return 0


def _sweep(args) -> int:
    import shlex

    from l2s_lib.organisms import sweep

    args.command_line = shlex.join(["l2s"] + args.argv)  # recorded in OUT/sweep.json
    return sweep.run(args)


def _benchmark(args) -> int:
    from l2s_lib.organisms import benchmarks

    path = benchmarks.write_fresh(Path(args.out), args.seed, args.per_level)
    print(f"wrote {path}")
    return 0


def _sizes(args) -> int:
    from l2s_lib.organisms import configs

    for name, s in configs.SIZES.items():
        print(f"{name}: {configs.n_params(name) / 1e6:.2f}M parameters, hidden {s.hidden_size}, "
              f"layers {s.num_hidden_layers}, lr scale {s.lr_scale}")
    return 0


def register(subparsers) -> None:
    from l2s_lib.organisms import configs, world

    p = subparsers.add_parser("organisms", help="model organisms: train, sweep, benchmark, sizes")
    sub = p.add_subparsers(dest="organisms_command", metavar="SUBCOMMAND")
    t = sub.add_parser("train", help="rebuild one size: base -> System 1 -> System 2 -> DPO")
    t.add_argument("--size", required=True, choices=list(configs.SIZES))
    t.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", type=Path, default=None, help="output folder (default OUTPUT_ROOT/organisms/SIZE_sSEED)")
    t.add_argument("--s1-style", default=world.DEFAULT_S1_STYLE, choices=list(world.S1_STYLES),
                   help=f"System 1's style (default {world.DEFAULT_S1_STYLE}, the shipped design)")
    t.add_argument("--control", action="store_true", help="also train System 2 in the equal-rate world")
    t.add_argument("--steps-factor", type=float, default=1.0, help="multiply every stage's steps (quick runs)")
    t.add_argument("--batch-size", type=int, default=None, help="override every stage's batch size (quick runs)")
    t.add_argument("--nondeterministic", action="store_true",
                   help="PyTorch's default kernels (faster on CUDA, not repeatable); default: deterministic")
    t.add_argument("--cards", action="store_true",
                   help="also measure each checkpoint on the organism benchmarks (CPU) and write its model card")
    t.set_defaults(handler=_train)
    from l2s_lib.organisms import sweep

    w = sub.add_parser("sweep", help="rebuild the ladder (or some jobs): train each (style, size, seed) in its own "
                                     "process, run the merge study, write study.csv, jobs.jsonl and report.md",
                       description=sweep.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sweep.add_arguments(w)
    w.set_defaults(handler=_sweep)
    b = sub.add_parser("benchmark", help="write a fresh held-out problem set (jsonl, math500 layout)")
    b.add_argument("--seed", type=int, required=True)
    b.add_argument("--per-level", type=int, default=100)
    b.add_argument("--out", required=True)
    b.set_defaults(handler=_benchmark)
    s = sub.add_parser("sizes", help="list the size ladder")
    s.set_defaults(handler=_sizes)
    p.set_defaults(handler=lambda args: (p.print_help(), 2)[1])
