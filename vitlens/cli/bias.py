"""``vitlens analyze bias {probes,sweep}``: the inductive-bias probes for ViTs and CNNs, and the data-size sweep,
as figures (Plotly HTML and PNG) and numbers (JSON)."""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..bias.compare import PROBES
from . import common

EPILOG = """Examples:
  vitlens analyze bias probes --model demo:vit-fashion --model demo:cnn-fashion
  vitlens analyze bias probes --model timm:vit_base_patch16_224.orig_in21k_ft_in1k \\
      --model timm:resnetv2_50x1_bit.goog_in21k_ft_in1k --data folder:val:500 --data-dir ~/imagenet --device cuda
  vitlens analyze bias sweep --steps 600 --sizes 1000 2000 5000 10000 30000 60000 --seeds 0 1
data SPEC: NAME[:SPLIT][:N] (fashion_mnist:test:500, folder:val:500 with --data-dir holding val/<class>/...)."""


def _images(spec: str, data_dir: str | None, side: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """All images of a dataset SPEC as N x C x H x W in [0, 1] (square ``side`` for natural-image datasets), labels,
    and the dataset's name and split."""
    ds, desc = common.dataset(spec, data_dir, side)
    images, labels = zip(*(ds[i] for i in range(len(ds))))
    return torch.stack(images), torch.as_tensor(labels), desc.split(",")[0]


def _probes(args: argparse.Namespace) -> int:
    from ..bias.compare import compare_models, comparison_figures, comparison_numbers

    device = common.device(args.device)
    models = {common.label(src): common.load(src, device) for src in args.model}
    side = max(m.data_config["input_size"][-1] for m in models.values())
    images, labels, data = _images(args.data, args.data_dir, side)
    result = compare_models(models, images, labels, probes=args.probes, patch_size=args.patch_size,
                            shifts=args.shifts, translation_images=args.translation_images,
                            erf_images=args.erf_images, agreement=args.agreement, seed=args.seed,
                            batch_size=args.batch_size, on_step=lambda s: print(s, flush=True))
    numbers = dict(models=args.model, data=data, images=len(images), **comparison_numbers(result))
    return common.write(args, comparison_figures(result, f"{', '.join(args.model)}; {data}"), numbers)


def _sweep(args: argparse.Namespace) -> int:
    from ..bias.figures import sweep_figure
    from ..train.sweep import run_sweep

    result = run_sweep(args.out / "sweep.json", sizes=args.sizes, seeds=args.seeds, archs=args.archs,
                       steps=args.steps, batch_size=args.batch_size, threads=args.threads,
                       eval_subset=args.eval_subset, runs_dir=args.runs_dir)
    title = (f"Fashion-MNIST test accuracy against training-set size<br><sup>same budget for both: {args.steps} steps "
             f"x batch {args.batch_size}; first N training images</sup>")
    figs = {"sweep": sweep_figure(result["summary"], title, budget_images=args.steps * args.batch_size)}
    return common.write(args, figs, result)


def _subcommand(sub: argparse._SubParsersAction, name: str, help_: str) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=help_, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)


def register(analyze_subparsers: argparse._SubParsersAction) -> None:
    """Add ``bias`` (``probes``, ``sweep``) to ``vitlens analyze``."""
    from ..bias.sweep import ARCHS, SEEDS, SIZES

    bias = _subcommand(analyze_subparsers, "bias", "inductive-bias probes ViT vs CNN, and the data-size sweep")
    sub = bias.add_subparsers(dest="bias_command", required=True, metavar="{probes,sweep}")

    p = _subcommand(sub, "probes", "translation (Zhang 2019), occlusion/shuffling (Naseer 2021), ERF (Luo 2016)")
    p.add_argument("--model", action="append", required=True, help=common.SOURCE_HELP + "; repeat to compare")
    p.add_argument("--probes", nargs="+", choices=PROBES, default=list(PROBES))
    p.add_argument("--data", default="fashion_mnist:test:1000", help="dataset SPEC (default fashion_mnist:test:1000)")
    p.add_argument("--data-dir", help="where the dataset's files are")
    p.add_argument("--agreement", action="store_true",
                   help="score occlusion against each model's clean prediction instead of the labels")
    p.add_argument("--patch-size", type=int, help="PatchDrop square side (default: the first ViT's patch size)")
    p.add_argument("--shifts", type=int, nargs="+", help="shift sizes in pixels (default 0 .. 2 x stride)")
    p.add_argument("--translation-images", type=int, default=256)
    p.add_argument("--erf-images", type=int, default=64)
    p.add_argument("--seed", type=int, default=0, help="seeds the drop masks and shuffles")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    common.add_output_args(p, Path("vitlens-analysis") / "bias")
    p.set_defaults(func=_probes)

    p = _subcommand(sub, "sweep", "ViT vs CNN test accuracy against training-set size (same steps and batch)")
    p.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    p.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    p.add_argument("--archs", nargs="+", choices=ARCHS, default=list(ARCHS))
    p.add_argument("--steps", type=int, default=1000, help="optimizer steps per run, the same for every run")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, help="CPU threads per run")
    p.add_argument("--eval-subset", type=int, help="test images scored (default all 10,000)")
    p.add_argument("--runs-dir", type=Path, default=Path("runs/bias-sweep"))
    common.add_output_args(p, Path("vitlens-analysis") / "bias-sweep")
    p.set_defaults(func=_sweep)
