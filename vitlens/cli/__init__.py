"""The ``vitlens`` command: ``info``, ``app``, ``pretrain``, ``finetune``, ``eval`` and ``analyze ...``.

Every subcommand lives in a module of this package and registers itself; the science it calls lives in
``vitlens.analysis``, ``vitlens.bias`` and ``vitlens.train``, which never import the command line.
"""
from __future__ import annotations

import argparse
import logging
import sys

from . import analyze, app, bias, info, train


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vitlens", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    info.register(sub)
    app.register(sub)
    train.register(sub)  # pretrain, finetune, eval
    bias.register(analyze.register(sub))  # analyze ..., analyze bias ...
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, ConnectionError, TypeError) as e:
        print(f"vitlens: error: {e}", file=sys.stderr)
        return 2
