"""The ``vitlens`` command: ``info``, ``app``, ``pretrain``, ``finetune``, ``eval`` and ``analyze ...``.

Every subcommand lives in a module of this package and registers itself; the science it calls lives in
``vitlens.analysis``, ``vitlens.bias`` and ``vitlens.train``, which never import the command line.

Exit codes: 0 done; 2 bad input (a usage error, an unreadable or unfit file, a bad config value: one line on stderr
saying what and what to do); 3 the numbers stopped being finite (training diverged, a NaN evaluation); 4 an I/O
error while writing (a full disk, a folder that stopped being writable: the line names the path); 130 interrupted.
"""
from __future__ import annotations

import argparse
import logging
import sys

from . import analyze, app, bias, explain, info, train


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vitlens", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    info.register(sub)
    app.register(sub)
    train.register(sub)  # pretrain, finetune, eval
    analyzers = analyze.register(sub)  # analyze ...
    explain.register(analyzers)  # analyze explain
    bias.register(analyzers)  # analyze bias ...
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, ConnectionError, TypeError) as e:
        print(f"vitlens: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"vitlens: I/O error: {e}", file=sys.stderr)
        return 4
    except KeyboardInterrupt:
        print("vitlens: interrupted", file=sys.stderr)
        return 130
