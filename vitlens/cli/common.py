"""What the commands share: the device, models by source, dataset SPECs, and the output flags and writing (Plotly
HTML, PNG via kaleido, JSON)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

SPEC_HELP = """data SPEC: NAME[:SPLIT][:N], e.g. fashion_mnist:test:1000, folder:val (with --data-dir), cifar10:test.
NAME is any dataset of `vitlens pretrain` (fashion_mnist, cifar10, cifar100, folder, synthetic, timm:<name>)."""
SPLITS = ("train", "test", "val", "validation")
SOURCE_HELP = "timm:<name>, demo:<name>, a checkpoint file or a run directory"


def device(name: str | None) -> torch.device:
    """``--device``: as given, else CUDA when available."""
    return torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))


def load(source: str, where: torch.device | str = "cpu", need_vit: bool = False) -> nn.Module:
    """``vitlens.load_model(source)`` on ``where``, in eval mode; ``need_vit`` refuses a CNN by name."""
    from ..models.layout import SUPPORTED, is_vit
    from ..models.loading import load_model

    model = load_model(source).to(where).eval()
    if need_vit and not is_vit(model):
        raise TypeError(f"{source} is a {type(model).__name__}, not a ViT: this analysis reads attention "
                        f"(supported: {SUPPORTED})")
    return model


def block_indices(numbers: list[int] | None, depth: int) -> list[int] | None:
    """Layers as the command line numbers them (1 .. L, or negative from the last: -1), as block indices from 0."""
    if numbers is None:
        return None
    if bad := [n for n in numbers if not (1 <= n <= depth or -depth <= n <= -1)]:
        raise ValueError(f"layer {bad[0]} does not exist: this model's layers are 1 .. {depth} (or -1 for the last)")
    return [n - 1 if n > 0 else depth + n for n in numbers]


def label(source: str) -> str:
    """A short name for legends and panel titles: no ``timm:``/``demo:`` prefix, folders or checkpoint suffix."""
    path = Path(source.split(":", 1)[-1])
    return path.stem if path.suffix in (".safetensors", ".pth", ".pt", ".bin", ".npz") else path.name


def parse_spec(spec: str, default_split: str) -> tuple[str, str, int | None]:
    """``NAME[:SPLIT][:N]`` as (name, split, N); NAME may itself contain colons, as ``timm:...``."""
    parts = spec.split(":")
    limit = int(parts.pop()) if len(parts) > 1 and parts[-1].isdigit() else None
    split = parts.pop() if len(parts) > 1 and parts[-1] in SPLITS else default_split
    return ":".join(parts).replace("fashion-mnist", "fashion_mnist"), split, limit


def dataset(spec: str, data_dir: str | None, size: int | tuple[int, int], *, split: str | None = None,
            limit: int | None = None) -> tuple[torch.utils.data.Dataset, str]:
    """The (images in [0, 1], label) items of a dataset SPEC and a description (name, split, count) for titles.

    Small-image datasets (Fashion-MNIST, CIFAR) keep their native images: each model's ``data_config`` resizes
    them. Natural images are resized (shorter side, or to (H, W) when ``size`` is a pair) and centre-cropped to
    ``size``.

    Args:
        spec: ``NAME[:SPLIT][:N]``; ``split`` and ``limit`` apply where the SPEC names none.
        data_dir: where the dataset's files are.
        size: the side (or (H, W)) natural images are brought to.
    """
    from torchvision import transforms as T

    from ..data import SMALL_DATASETS, build_dataset

    name, spec_split, spec_limit = parse_spec(spec, split or "test")
    steps = [] if name in SMALL_DATASETS else [T.Resize(size), T.CenterCrop(size)]
    ds = build_dataset(name, spec_split, T.Compose(steps + [T.ToTensor()]), data_dir=data_dir,
                       subset=spec_limit or limit)
    return ds, f"{name} {spec_split}, {len(ds)} images"


def add_output_args(p: argparse.ArgumentParser, default_out: Path) -> None:
    """``--out``, ``--no-png`` and ``--plotlyjs``, as every figure-writing command has them."""
    p.add_argument("--out", type=Path, default=default_out, help=f"output directory (default {default_out})")
    p.add_argument("--no-png", action="store_true", help="write HTML and JSON only")
    p.add_argument("--plotlyjs", choices=("directory", "cdn", "inline"), default="directory",
                   help="plotly.js beside the HTML (offline), linked from its CDN, or inside each file")


def write(args: argparse.Namespace, figs: Mapping[str, Any], numbers: Mapping[str, Any]) -> int:
    """Each figure as HTML (and PNG), the numbers as JSON, into ``args.out``; prints the paths written."""
    from ..analysis.figures import write_outputs

    plotlyjs = True if args.plotlyjs == "inline" else args.plotlyjs
    for path in write_outputs(args.out, figs, numbers, png=not args.no_png, plotlyjs=plotlyjs):
        print(path)
    return 0
