"""``vitlens info SOURCE``: a model's architecture and preprocessing."""
from __future__ import annotations

import argparse

from . import common


def _info(args: argparse.Namespace) -> int:
    model = common.load(args.model)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{args.model}: {type(model).__name__}, {n_params / 1e6:.2f} M parameters")
    for k, v in getattr(model, "config", getattr(model, "vitlens_spec", {})).items():
        print(f"  {k}: {v}")
    print(f"  data_config: {model.data_config}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="load a model and print its architecture and preprocessing")
    p.add_argument("model", help=common.SOURCE_HELP)
    p.set_defaults(func=_info)
