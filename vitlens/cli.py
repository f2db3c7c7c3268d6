"""The ``vitlens`` command: ``info``, ``app``, and the training and analysis commands."""
from __future__ import annotations

import argparse
import logging
import sys


def _info(args: argparse.Namespace) -> int:
    from .models.loading import load_model

    model = load_model(args.model)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{args.model}: {type(model).__name__}, {n_params / 1e6:.2f} M parameters")
    for k, v in getattr(model, "config", getattr(model, "vitlens_spec", {})).items():
        print(f"  {k}: {v}")
    print(f"  data_config: {model.data_config}")
    return 0


def _app(args: argparse.Namespace) -> int:
    print("The vitlens Streamlit app is not built yet (see the open issue 'The Streamlit app'). "
          "Meanwhile: `vitlens info demo:<name>` and the Python API in the README.")
    return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vitlens", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("info", help="load a model and print its architecture and preprocessing")
    p.add_argument("model", help="timm:<name>, demo:<name>, a checkpoint file or a run directory")
    p.set_defaults(func=_info)

    p = sub.add_parser("app", help="start the Streamlit app")
    p.add_argument("--port", type=int, default=8501)
    p.add_argument("--model", default=None, help="model to open first")
    p.set_defaults(func=_app)

    from .train.commands import register; register(sub)  # pretrain, finetune, eval
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, ConnectionError, TypeError) as e:
        print(f"vitlens: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
