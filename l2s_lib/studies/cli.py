"""``l2s run NOTEBOOK [CONFIG|NAME]``: papermill with ``notebooks/params/<study>/<config>.yaml``, or an ad-hoc run
named NAME (the notebook's defaults plus ``-p`` overrides)."""

from __future__ import annotations

import argparse

import yaml

from l2s_lib.errors import ConfigError
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
    p.set_defaults(handler=_run)
