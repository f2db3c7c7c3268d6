"""``vitlens pretrain``, ``vitlens finetune`` and ``vitlens eval``."""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from ..train.config import DataConfig, RunConfig, apply_overrides, compiles, list_configs, load_config

# Shortcut flags and the config keys they set.
_FLAGS = {"dataset": "data.dataset", "data_dir": "data.data_dir", "epochs": "train.epochs", "steps": "train.steps",
          "batch_size": "train.batch_size", "lr": "optim.lr", "img_size": "model.img_size",
          "source": "model.source", "compile": "train.compile", "amp": "train.amp"}


def _add_train_args(p: argparse.ArgumentParser, default_config: str) -> None:
    p.add_argument("--config", default=None,
                   help=f"packaged config ({', '.join(list_configs())}) or a YAML file (default {default_config})")
    p.set_defaults(default_config=default_config)
    p.add_argument("--out", type=Path, default=None, help="run directory (default runs/<name>-<time>)")
    p.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR",
                   help="continue RUN_DIR from its newest checkpoint, with its saved config (overrides still apply)")
    p.add_argument("--dataset", default=None, help="fashion_mnist, cifar10, cifar100, folder, synthetic, timm:<name>")
    p.add_argument("--data-dir", default=None, help="dataset folder (Fashion-MNIST: also $VITLENS_DATA)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--steps", type=int, default=None, help="total optimizer steps (instead of epochs)")
    p.add_argument("--batch-size", type=int, default=None, help="global batch (all processes, all accumulation)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate")
    p.add_argument("--compile", action="store_true", default=None,
                   help="torch.compile the model (train.compile=tuned: also tune the generated kernels)")
    p.add_argument("--amp", action="store_true", default=None, help="bf16 autocast (default on CUDA only)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides, e.g. optim.weight_decay=0.1 augment.mixup=0.8 train.ema_decay=0.9999")


def _config(source: str | Path, flags: list[str], args: argparse.Namespace) -> RunConfig:
    """The config with the flags, then the KEY=VALUE overrides, applied. ``--compile`` keeps a compile setting the
    config already has (``paper_vit_b16``'s ``tuned``) rather than downgrading it to ``true``."""
    cfg = load_config(source)
    if args.compile and compiles(cfg.train.compile):
        flags = [f for f in flags if not f.startswith("train.compile=")]
    return apply_overrides(cfg, flags + args.overrides)


def _saved_config(run_dir: Path, command: str) -> Path:
    """The config.yaml a run folder keeps; a folder without one holds no run to continue."""
    if not run_dir.is_dir():
        raise FileNotFoundError(f"--resume {run_dir}: " + ("a file, not a run folder" if run_dir.exists() else
                                                           "no such run folder"))
    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"--resume {run_dir}: it holds no run to continue (no config.yaml); start one there "
                                f"with `vitlens {command} --out {run_dir}`")
    return run_dir / "config.yaml"


def _run(args: argparse.Namespace) -> int:
    import torch.distributed as dist

    from ..train import TrainingDiverged, train

    flags = [f"{key}={json.dumps(getattr(args, name))}" for name, key in _FLAGS.items()
             if getattr(args, name, None) is not None]
    if args.resume is not None and (args.config or args.out not in (None, args.resume)):
        raise ValueError(f"--resume {args.resume} continues that run with its own config.yaml, in its own folder: "
                         f"drop --config/--out (change settings with KEY=VALUE overrides)")
    try:
        if args.resume is not None:
            train(_config(_saved_config(args.resume, args.command), flags, args), args.resume, resume=True)
        else:
            train(_config(args.config or args.default_config, flags, args), args.out)
    except TrainingDiverged as e:
        print(f"vitlens: training stopped: {e}", file=sys.stderr)
        return 3
    finally:
        if dist.is_initialized():  # leave the torchrun job cleanly (an open gloo group can hang at exit)
            dist.destroy_process_group()
    return 0


def _eval(args: argparse.Namespace) -> int:
    from ..models.loading import load_model
    from ..train import build_eval_loader, evaluate, setup_distributed

    d = setup_distributed()
    model = load_model(args.model).to(d.device)
    run_config = Path(args.model).expanduser() / "config.yaml"
    trained_on = load_config(run_config).data if run_config.is_file() else None  # a run: its own dataset
    dataset = args.dataset or (trained_on.dataset if trained_on else "fashion_mnist")
    data_dir = args.data_dir or (trained_on.data_dir if trained_on and dataset == trained_on.dataset else None)
    data = DataConfig(dataset=dataset, data_dir=data_dir, eval_subset=args.subset)
    result = evaluate(model, build_eval_loader(model, data, d, args.batch_size, args.split), d)
    if not math.isfinite(result["loss"]):  # an accuracy beside a NaN loss means nothing: its argmax is arbitrary
        if d.main:
            print(f"vitlens: evaluation failed: the loss of {args.model} on {dataset} {args.split} is "
                  f"{result['loss']} ({result['count']} images): its outputs are not finite (overflowing or broken "
                  f"weights)", file=sys.stderr)
        return 3
    if d.main:
        print(f"{args.model} on {dataset} {args.split}: accuracy {100 * result['acc']:.2f}% "
              f"(loss {result['loss']:.4f}, {result['count']} images)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the training commands to the ``vitlens`` parser."""
    p = sub.add_parser("pretrain", help="train a ViT or CNN from scratch (paper recipe: AdamW, warm-up, decay)")
    _add_train_args(p, "fashion_vit")
    p.set_defaults(func=_run)

    p = sub.add_parser("finetune", help="fine-tune any load_model source (zero head, SGD, optional higher res)")
    _add_train_args(p, "fashion_vit_ft")
    p.add_argument("--from", dest="source", default=None,
                   help="the model to start from: demo:<name>, timm:<name>, a checkpoint or a run directory")
    p.add_argument("--img-size", type=int, default=None, help="fine-tuning resolution (position embeddings interpolated)")
    p.set_defaults(func=_run)

    p = sub.add_parser("eval", help="top-1 accuracy of a model on a dataset split")
    p.add_argument("model", help="demo:<name>, timm:<name>, a checkpoint or a run directory")
    p.add_argument("--dataset", default=None, help="fashion_mnist, cifar10, cifar100, folder, timm:<name> (default: "
                   "a run directory's own dataset, else fashion_mnist)")
    p.add_argument("--split", default="test")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--subset", type=int, default=None, help="only the first N images")
    p.add_argument("--batch-size", type=int, default=256)
    p.set_defaults(func=_eval)
