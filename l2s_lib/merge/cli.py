"""``l2s merge CONFIG.yaml OUTPUT_DIR`` and ``l2s methods``."""

from __future__ import annotations

import argparse
import json
import signal
import textwrap

from l2s_lib.merge.registry import aliases as method_aliases
from l2s_lib.merge.registry import available_methods, get_method


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "merge",
        help="merge checkpoints from a mergekit-style YAML config",
        description="Merge a base (System 1) and model(s) (System 2) tensor by tensor into OUTPUT_DIR "
                    "(written atomically, with l2s_provenance.json). See configs/merges/README.md.",
    )
    p.add_argument("config", help="merge config (YAML): merge_method, base_model, models, parameters, policies")
    p.add_argument("output_dir", help="folder to create (refused if it exists, unless --overwrite)")
    p.add_argument("--device", default="cpu", help="where the arithmetic runs: cpu (default), cuda or cuda:N")
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT_DIR if it exists")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=_merge)

    m = subparsers.add_parser("methods", help="list merge methods, their parameters, defaults and references")
    m.add_argument("--json", action="store_true", help="machine-readable output")
    m.set_defaults(handler=_methods)


def _merge(args: argparse.Namespace) -> int:
    from l2s_lib.merge.driver import merge

    # A terminated merge must clean up its temporary folder like an interrupted one does.
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        out = merge(args.config, args.output_dir, device=args.device, overwrite=args.overwrite,
                    progress=not args.no_progress)
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(out)
    return 0


def _raise_interrupt(signum, frame):  # noqa: ARG001 - signal handler signature
    raise KeyboardInterrupt


def _methods(args: argparse.Namespace) -> int:
    aliases: dict[str, list[str]] = {}
    for alias, target in method_aliases().items():
        aliases.setdefault(target, []).append(alias)
    described = []
    for name in available_methods():
        d = get_method(name).describe()
        d["aliases"] = sorted(aliases.get(name, []))
        described.append(d)
    if args.json:
        print(json.dumps(described, indent=2, default=str))
        return 0
    for d in described:
        alias = f" (aliases: {', '.join(d['aliases'])})" if d["aliases"] else ""
        print(f"{d['name']}{alias} -- {d['paper_name']}  [{d['reference']}]")
        print(textwrap.indent(textwrap.fill(d["summary"], 96), "    "))
        print(f"    needs base_model: {'yes' if d['needs_base'] else 'no'}")
        for title, plist in (("parameters", d["params"]), ("per-model parameters", d["model_params"])):
            if not plist:
                continue
            print(f"    {title}:")
            for p in plist:
                rng = ""
                if p["choices"]:
                    rng = " one of " + ", ".join(map(str, p["choices"]))
                elif p["low"] is not None or p["high"] is not None:
                    rng = f" in [{p['low'] if p['low'] is not None else '-inf'}, " \
                          f"{p['high'] if p['high'] is not None else 'inf'}]"
                print(f"      {p['name']} ({p['type']}{rng}, default {p['default']!r}): {p['help']}")
        print()
    return 0
