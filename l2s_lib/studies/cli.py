"""``l2s run NOTEBOOK [CONFIG|NAME]``: papermill with ``notebooks/params/<study>/<config>.yaml``, or an ad-hoc run
named NAME (the notebook's defaults plus ``-p`` overrides). ``l2s figures [STUDY] [--config C]``: every figure
redrawn from ``data/results/`` alone."""

from __future__ import annotations

import argparse

import yaml

from l2s_lib.errors import ConfigError
# registry (matplotlib, seaborn, nbformat) is imported by the handlers that need it: every `l2s` command
# builds this parser, and `l2s eval` should not pay seconds of plotting imports at start-up.
from l2s_lib.studies import notebooks


def _parse_override(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise ConfigError(f"override '{text}' must be NAME=VALUE (VALUE in YAML syntax)")
    key, value = text.split("=", 1)
    return key.strip(), yaml.safe_load(value)


def _run(args: argparse.Namespace) -> int:
    if args.list:
        for study in notebooks.list_studies():
            print(f"{study}: {', '.join(notebooks.list_configs(study))}")
        return 0
    if args.order:
        from l2s_lib.studies import registry

        print("\n".join(registry.order()))
        return 0
    if not args.notebook:
        raise ConfigError("name a study notebook (l2s run --list shows them)")
    overrides = dict(_parse_override(o) for o in args.param)
    study = notebooks.resolve_study(args.notebook)
    # notebooks.run validates the overrides against the notebook before it starts a kernel.
    out = notebooks.run(study, args.config, overrides=overrides, output_dir=args.output)
    print(f"executed {study} [{out.parent.name}] -> {out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a study notebook with papermill (paper-scale parameter files)",
                       description="Execute notebooks/NOTEBOOK.ipynb with notebooks/params/NOTEBOOK/CONFIG.yaml; the "
                                   "executed copy goes to data/results/NOTEBOOK/CONFIG/ (CONFIG+<digest>/ when -p changes a "
                                   "parameter file's values).")
    p.add_argument("notebook", nargs="?", help="study, e.g. 01_merge_methods or 01")
    p.add_argument("config", nargs="?", default=notebooks.DEFAULT_CONFIG,
                   help="a parameter file's name, or a new name for an ad-hoc run of the defaults plus -p overrides "
                        "(default: the notebook's defaults). A parameter file or 'default' with overrides is run "
                        "under CONFIG+<digest>, never over its committed results")
    p.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE", help="override one parameter")
    p.add_argument("--output", help="folder for the executed notebook (default data/results/NOTEBOOK/CONFIG)")
    p.add_argument("--list", action="store_true", help="list studies and their configs")
    p.add_argument("--order", action="store_true",
                   help="print every study, each after the studies whose results it reads (make reproduce's order)")
    p.set_defaults(handler=_run)

    f = sub.add_parser("figures", help="redraw figures from data/results/ (no model, checkpoint or cache needed)",
                       description="Redraw the figures of every finished study run from its result files: figures/ for "
                                   "the default runs, data/results/STUDY/CONFIG/figures/ for the others.")
    f.add_argument("study", nargs="?", help="one study, e.g. 01_merge_methods or 01 (default: all)")
    f.add_argument("--config", help="one run (default: every finished run)")
    f.add_argument("--check", action="store_true",
                   help="overwrite nothing; list the figures whose redrawn bytes differ from the saved ones (exit 1)")
    f.set_defaults(handler=_figures)


def _figures(args: argparse.Namespace) -> int:
    from l2s_lib import paths
    from l2s_lib.studies import registry

    try:
        files = registry.redraw(args.study, args.config, check=args.check)
    except FileNotFoundError as exc:
        raise ConfigError(str(exc)) from exc
    if args.check:
        for p in files:
            print(f"differs: {paths.relative_to_root(p)}")
        print(f"{len(files)} figure file(s) differ from a redraw" if files else "every figure redraws byte for byte")
        return 1 if files else 0
    for p in files:
        print(paths.relative_to_root(p))
    return 0
