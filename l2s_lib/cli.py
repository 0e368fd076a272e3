"""The ``l2s`` command line.

Each area of the library contributes its sub-commands through a ``register(subparsers)`` function
(``l2s_lib.merge.cli``, ``l2s_lib.eval.cli``, ``l2s_lib.organisms.cli``, ``l2s_lib.studies.cli``), so this
module only assembles them. Sub-command handlers return an exit code; errors that are the user's
(bad config, unknown method, missing file) are raised as ``L2SError`` and printed without a traceback.
"""

from __future__ import annotations

import argparse
import sys

from l2s_lib.errors import L2SError
from l2s_lib.eval import cli as eval_cli
from l2s_lib.merge import cli as merge_cli
from l2s_lib.organisms import cli as organisms_cli
from l2s_lib.studies import cli as studies_cli

#: The areas that provide ``register(subparsers)``: every one ships with the package.
AREAS = (merge_cli, eval_cli, organisms_cli, studies_cli)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="l2s",
        description="Long-to-short reasoning by model merging (Wu et al. 2025): merge, evaluate, study.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for area in AREAS:
        area.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the command as given (recorded by some handlers)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except L2SError as exc:
        print(f"l2s {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"l2s {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
