"""``vitlens analyze bias {probes,sweep}``: the inductive-bias probes for ViTs and CNNs, and the data-size sweep,
as figures (Plotly HTML and PNG) and numbers (JSON)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..models.vit import VisionTransformer

PROBES = ("translation", "occlusion", "erf")
EPILOG = """Examples:
  vitlens analyze bias probes --model demo:vit-fashion --model demo:cnn-fashion
  vitlens analyze bias probes --model timm:vit_base_patch16_224.orig_in21k_ft_in1k \\
      --model timm:resnetv2_50x1_bit.goog_in21k_ft_in1k --data folder:val:500 --data-dir ~/imagenet --device cuda
  vitlens analyze bias sweep --steps 600 --sizes 1000 2000 5000 10000 30000 60000 --seeds 0 1
data SPEC: NAME[:SPLIT][:N] (fashion_mnist:test:500, folder:val:500 with --data-dir holding val/<class>/...)."""


def _images(spec: str, data_dir: str | None, side: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """All images of a dataset SPEC as N x C x H x W in [0, 1] (square ``side`` for natural-image datasets), labels."""
    from torchvision import transforms as T

    from ..data import SMALL_DATASETS, build_dataset

    parts = spec.split(":")
    limit = int(parts.pop()) if len(parts) > 1 and parts[-1].isdigit() else None
    split = parts.pop() if len(parts) > 1 and parts[-1] in ("train", "test", "val") else "test"
    name = ":".join(parts)
    steps = [] if name in SMALL_DATASETS else [T.Resize(side), T.CenterCrop(side)]
    ds = build_dataset(name, split, T.Compose(steps + [T.ToTensor()]), data_dir=data_dir, subset=limit)
    images, labels = zip(*(ds[i] for i in range(len(ds))))
    return torch.stack(images), torch.as_tensor(labels), f"{name} {split}, {len(ds)} images"


def _label(source: str) -> str:
    """A short name for legends and panel titles: no ``timm:``/``demo:`` prefix, folders or checkpoint suffix."""
    path = Path(source.split(":", 1)[-1])
    return path.stem if path.suffix in (".safetensors", ".pth", ".pt", ".bin", ".npz") else path.name


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    device = next(model.parameters()).device
    return torch.cat([model(b.to(device)).argmax(-1).cpu() for b in x.split(batch_size)])


def _probes(args: argparse.Namespace) -> int:
    from ..analysis.distance import attention_distance
    from ..analysis.inputs import prepare
    from ..models.loading import load_model
    from . import figures
    from .erf import erf_probe
    from .occlusion import occlusion_probe
    from .translation import translation_probe

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    models = {_label(src): load_model(src).to(device).eval() for src in args.model}
    vits = [m for m in models.values() if isinstance(m, VisionTransformer)]
    patch_size = args.patch_size or (vits[0].patch_size if vits else None)
    if "occlusion" in args.probes and patch_size is None:
        raise ValueError("--patch-size is needed when no ViT is compared (it sets the PatchDrop squares)")
    side = max(m.data_config["input_size"][-1] for m in models.values())
    images, labels, data = _images(args.data, args.data_dir, side)
    what = "agreement with the clean prediction" if args.agreement else "accuracy"
    title = f"{{}}<br><sup>{', '.join(args.model)}; {data}</sup>"
    numbers: dict[str, Any] = dict(models=args.model, data=data, score=what)
    results: dict[str, dict[str, Any]] = {p: {} for p in args.probes}
    distances: dict[str, list[float]] = {}
    for label, model in models.items():
        x = prepare(images, model.data_config)
        if "translation" in args.probes:
            results["translation"][label] = translation_probe(model, x[:args.translation_images], args.shifts,
                                                              batch_size=args.batch_size)
        if "occlusion" in args.probes:
            y = _predict(model, x, args.batch_size) if args.agreement else labels
            results["occlusion"][label] = occlusion_probe(model, x, y, patch_size=patch_size, seed=args.seed,
                                                          batch_size=args.batch_size)
        if "erf" in args.probes:
            results["erf"][label] = erf_probe(model, x[:args.erf_images], batch_size=max(1, args.batch_size // 4))
            if isinstance(model, VisionTransformer):
                d = attention_distance(model, images[:args.erf_images], batch_size=args.batch_size, progress=False)
                distances[label] = d["mean"].mean(dim=-1).tolist()
    figs = {}
    if "translation" in args.probes:
        figs["translation"] = figures.translation_figure(
            results["translation"], title.format("Translation: consistency and equivariance (Zhang 2019)"))
    if "occlusion" in args.probes:
        figs["occlusion"] = figures.occlusion_figure(
            results["occlusion"], title.format(f"Occlusion and shuffling (Naseer et al. 2021): {what}"))
    if "erf" in args.probes:
        erf_title = title.format("Effective receptive field (Luo et al. 2016) and mean attention distance")
        figs["erf"] = figures.erf_figure(results["erf"], erf_title, distances)
        figs["erf_maps"] = figures.erf_maps_figure(results["erf"], erf_title)
        for r in results["erf"].values():
            r.pop("erf")  # H x W maps per layer: in the figure, too large for the JSON
        numbers["attention_distance"] = distances
    numbers.update(results)
    return _write(args, figs, numbers)


def _sweep(args: argparse.Namespace) -> int:
    from .figures import sweep_figure
    from .sweep import run_sweep

    result = run_sweep(args.out / "sweep.json", sizes=args.sizes, seeds=args.seeds, archs=args.archs,
                       steps=args.steps, batch_size=args.batch_size, threads=args.threads,
                       eval_subset=args.eval_subset, runs_dir=args.runs_dir)
    title = (f"Fashion-MNIST test accuracy against training-set size<br><sup>same budget for both: {args.steps} steps "
             f"x batch {args.batch_size}; first N training images</sup>")
    return _write(args, {"sweep": sweep_figure(result["summary"], title, budget_images=args.steps * args.batch_size)},
                  result)


def _write(args: argparse.Namespace, figs: dict[str, Any], numbers: dict[str, Any]) -> int:
    from ..analysis.figures import write_outputs

    plotlyjs = True if args.plotlyjs == "inline" else args.plotlyjs
    for path in write_outputs(args.out, figs, numbers, png=not args.no_png, plotlyjs=plotlyjs):
        print(path)
    return 0


def _add_output_args(p: argparse.ArgumentParser, out: Path) -> None:
    p.add_argument("--out", type=Path, default=out, help=f"output directory (default {out})")
    p.add_argument("--no-png", action="store_true", help="write HTML and JSON only")
    p.add_argument("--plotlyjs", choices=("directory", "cdn", "inline"), default="directory",
                   help="plotly.js beside the HTML (offline), linked from its CDN, or inside each file")


def register(analyze_subparsers: argparse._SubParsersAction) -> None:
    """Add ``bias`` (``probes``, ``sweep``) to ``vitlens analyze``."""
    from .sweep import ARCHS, SEEDS, SIZES

    bias = analyze_subparsers.add_parser("bias", help="inductive-bias probes ViT vs CNN, and the data-size sweep",
                                         epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = bias.add_subparsers(dest="bias_command", required=True, metavar="{probes,sweep}")

    p = sub.add_parser("probes", help="translation (Zhang 2019), occlusion/shuffling (Naseer 2021), ERF (Luo 2016)",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", required=True,
                   help="timm:<name>, demo:<name>, a checkpoint or a run directory; repeat to compare")
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
    _add_output_args(p, Path("vitlens-analysis") / "bias")
    p.set_defaults(func=_probes)

    p = sub.add_parser("sweep", help="ViT vs CNN test accuracy against training-set size (same steps and batch)",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    p.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    p.add_argument("--archs", nargs="+", choices=ARCHS, default=list(ARCHS))
    p.add_argument("--steps", type=int, default=1000, help="optimizer steps per run, the same for every run")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, help="CPU threads per run")
    p.add_argument("--eval-subset", type=int, help="test images scored (default all 10,000)")
    p.add_argument("--runs-dir", type=Path, default=Path("runs/bias-sweep"))
    _add_output_args(p, Path("vitlens-analysis") / "bias-sweep")
    p.set_defaults(func=_sweep)
