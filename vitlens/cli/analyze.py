"""``vitlens analyze {rollout,heads,norms,distance,posembed,filters,cka,probe}``: each analysis as figures
(Plotly HTML and PNG) plus its numbers (JSON), for any model ``vitlens.load_model`` reads; ``vitlens analyze
explore`` writes the attention explorer as one HTML page."""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..analysis import figures
from ..analysis.cka import layer_similarity
from ..analysis.distance import attention_distance, patch_distances
from ..analysis.features import layer_names
from ..analysis.filters import patch_embedding_components
from ..analysis.heads import head_maps
from ..analysis.norms import high_norm_tokens, token_norms
from ..analysis.posembed import position_embedding_similarity
from ..analysis.probe import PAPER_SHOTS, linear_probe
from ..analysis.rollout import attention_rollout, cls_map, gradient_rollout, prefix_shares
from ..capture import capture
from ..images import SAMPLE_PHOTOS, display_view, photo, prepare
from ..models.layout import token_layout
from ..models.vit import VisionTransformer
from . import common

EPILOG = common.SPEC_HELP + "\nImages: files, or the sample photos astronaut, chelsea, coffee, rocket (the default)."


# ---- inputs -------------------------------------------------------------------------------------------
def dataset_loader(spec: str, model: nn.Module, args: argparse.Namespace, *, split: str | None = None,
            limit: int | None = None) -> tuple[torch.utils.data.DataLoader, str]:
    """Batches of (images in [0, 1], labels) and a description for titles."""
    ds, desc = common.dataset(spec, args.data_dir, tuple(model.data_config["input_size"][1:]), split=split,
                              limit=limit)
    return torch.utils.data.DataLoader(ds, batch_size=args.batch_size, shuffle=False), desc


def _images(args: argparse.Namespace, model: nn.Module) -> tuple[list[torch.Tensor], list[str], str]:
    """The images to explain (C x H x W in [0, 1]), their labels and a description of the data."""
    if args.data:
        loader, desc = dataset_loader(args.data, model, args, limit=args.num_images)
        images = [x for batch, _ in loader for x in batch][:args.num_images]
        return images, [f"{desc.split(',')[0].replace(' ', '_')}_{i}" for i in range(len(images))], desc
    names = args.image or list(SAMPLE_PHOTOS)
    images = [photo(n, model.data_config) for n in names]
    return images, [Path(n).stem for n in names], "photos " + ", ".join(Path(n).stem for n in names)


def figure_title(what: str, args: argparse.Namespace, model: nn.Module, data: str) -> str:
    """Which analysis, which model and which data; flags photos shown to a model that knows only small grayscale
    images (the bundled Fashion-MNIST models)."""
    chans, h, w = model.data_config["input_size"]
    title = f"{what}<br><sup>model {args.model} ({chans}x{h}x{w} input)<br>data: {data}"
    if data.startswith("photos") and chans == 1:
        title += "<br>photos converted to grayscale: outside the model's training data (Fashion-MNIST)"
    return title + "</sup>"


def finish(args: argparse.Namespace, figs: dict, numbers: dict[str, Any]) -> int:
    return common.write(args, figs, dict(model=args.model, command=args.analysis, **numbers))


# ---- the commands ---------------------------------------------------------------------------------------
def _rollout(args: argparse.Namespace) -> int:
    device = common.device(args.device)
    model = common.load(args.model, device, need_vit=True)
    images, labels, data = _images(args, model)
    x = torch.cat([prepare(im, model.data_config) for im in images]).to(device)
    with torch.no_grad(), capture(model) as rec:
        probs = model(x).softmax(-1)
    layout = token_layout(model, x.shape[-2:])
    (start,) = common.block_indices([args.start_layer], len(model.blocks))
    joint = attention_rollout(rec.attentions, head_fusion=args.head_fusion, discard_ratio=args.discard_ratio,
                              start_layer=start, num_prefix_tokens=layout.num_prefix_tokens)
    maps = {"rollout": cls_map(joint, layout).cpu()}
    if args.gradient and model.num_classes:
        maps["gradient rollout"] = cls_map(gradient_rollout(model, x), layout).cpu()
    top = probs.topk(min(5, probs.shape[-1]))
    title = figure_title(f"Attention rollout (head fusion {args.head_fusion}, discard {args.discard_ratio}, "
                   f"start layer {args.start_layer})", args, model, data)
    fig = figures.rollout_figure([display_view(im, model.data_config) for im in images], maps, title, labels)
    return finish(args, {"rollout": fig}, dict(
        data=data, images=labels, grid=layout.grid, prefix=layout.prefix, head_fusion=args.head_fusion,
        discard_ratio=args.discard_ratio, start_layer=args.start_layer, maps=maps,
        prefix_shares={k: v.cpu() for k, v in prefix_shares(joint, layout).items()},
        top5_classes=top.indices, top5_probs=top.values))


def _heads(args: argparse.Namespace) -> int:
    device = common.device(args.device)
    model = common.load(args.model, device, need_vit=True)
    images, labels, data = _images(args, model)
    x = torch.cat([prepare(im, model.data_config) for im in images]).to(device)
    with torch.no_grad(), capture(model, layers=common.block_indices([args.layer], len(model.blocks))) as rec:
        model(x)
    maps = head_maps(rec.attentions, token_layout(model, x.shape[-2:]), threshold=args.threshold).cpu()
    layer = rec.layers[0] + 1  # numbered from 1, as the figures and the app number layers
    what = (f"Class-token attention per head, layer {layer} of {len(model.blocks)}"
            + (f", top {args.threshold:.0%} mass" if args.threshold else ""))
    figs = {f"heads_{label}": figures.heads_figure(display_view(im, model.data_config), maps[i],
                                                   figure_title(what, args, model, f"{data}: {label}"))
            for i, (im, label) in enumerate(zip(images, labels))}
    return finish(args, figs, dict(data=data, images=labels, layer=layer, threshold=args.threshold, maps=maps))


def _distance(args: argparse.Namespace) -> int:
    device = common.device(args.device)
    model = common.load(args.model, device, need_vit=True)
    loader, data = dataset_loader(args.data, model, args, limit=args.limit)
    res = attention_distance(model, loader, include_prefix=args.include_prefix, renormalize=not args.no_renormalize)
    layout = token_layout(model, model.data_config["input_size"][1:])
    title = figure_title(f"Mean attention distance per head (P = {layout.patch_size[0]} px, grid {layout.grid})",
                   args, model, data)
    uniform = patch_distances(layout.grid, layout.patch_size).mean().item()  # every query looks everywhere
    fig = figures.distance_figure(res["mean"], title, res["std"], uniform)
    return finish(args, {"attention_distance": fig}, dict(
        data=data, patch_size=layout.patch_size, grid=layout.grid, prefix=layout.prefix,
        include_prefix=args.include_prefix, renormalize=not args.no_renormalize, uniform_attention_distance=uniform,
        **res))


def _resized(model: nn.Module, size: int) -> nn.Module:
    """A copy of the model at another input size, its position table interpolated (vitlens's or timm's way)."""
    m = copy.deepcopy(model)
    if isinstance(m, VisionTransformer):
        m.set_img_size(size)
    else:
        m.set_input_size(img_size=size)
        m.data_config = {**m.data_config, "input_size": (m.data_config["input_size"][0], size, size)}
    return m


def _posembed(args: argparse.Namespace) -> int:
    model = common.load(args.model, need_vit=True)
    own = tuple(model.data_config["input_size"][1:])
    figs, numbers = {}, {}
    for size in [None] + [s for s in args.img_size or [] if (s, s) != own]:
        m = model if size is None else _resized(model, size)
        sim = position_embedding_similarity(m)
        name = "posembed" if size is None else f"posembed_{size}"
        what = "Position embedding similarity" + ("" if size is None else
                                                  f" after moving to {size} px (bicubic interpolation)")
        grid = tuple(sim.shape[:2])
        figs[name] = figures.posembed_figure(sim, figure_title(what, args, m, f"learned weights, grid {grid}"))
        numbers[name] = sim
    return finish(args, figs, numbers)


def _filters(args: argparse.Namespace) -> int:
    model = common.load(args.model, need_vit=True)
    comps, ratio = patch_embedding_components(model, k=min(args.k, *model.patch_embed.proj.weight.flatten(1).shape))
    kind = "RGB e" if model.in_chans == 3 else "E"
    title = figure_title(f"{kind}mbedding filters: first {len(comps)} principal components of E "
                   f"({100 * ratio.sum():.0f}% of the variance)", args, model, "learned weights")
    return finish(args, {"filters": figures.filters_figure(comps, ratio, title)},
                   dict(components=comps, explained_variance_ratio=ratio))


def _cka(args: argparse.Namespace) -> int:
    device = common.device(args.device)
    model_a = common.load(args.model, device)
    model_b = common.load(args.against, device) if args.against else model_a
    loader, data = dataset_loader(args.data, model_a, args, limit=args.limit)
    res = layer_similarity(model_a, model_b, loader)
    other = args.against or args.model
    title = figure_title(f"Minibatch linear CKA: {args.model} against {other}", args, model_a, f"{data} "
                   f"({res['count']} used)")
    fig = figures.cka_figure(res["cka"], res["layers_a"], res["layers_b"], title, args.model, other)
    return finish(args, {"cka": fig}, dict(data=data, against=other, **res))


def _probe(args: argparse.Namespace) -> int:
    model = common.load(args.model, common.device(args.device))
    name = common.parse_spec(args.data, "train")[0]
    train, train_desc = dataset_loader(name, model, args, split="train", limit=args.train_limit)
    test, test_desc = dataset_loader(name, model, args, split="test", limit=args.test_limit)
    layers = common.block_indices(args.layers, len(layer_names(model)))
    res = linear_probe(model, train, test, layers=layers, logistic=not args.no_logistic, shots=args.shots,
                       seeds=range(args.seeds), C=args.C, l2_reg=args.l2_reg)
    if out := res["shots_left_out"]:
        print(f"vitlens: {', '.join(map(str, out['shots']))}-shot left out: the training images hold only "
              f"{out['count']} of class {out['scarcest_class']} (--train-limit more)", file=sys.stderr)
    data = f"train {train_desc}; test {test_desc}"
    title = figure_title("Linear evaluation of frozen features per layer", args, model, data)
    fig = figures.probe_figure(res["layers"], res["logistic"], res["fewshot"], title)
    return finish(args, {"probe": fig}, dict(data=data, layers=res["layers"], logistic=res["logistic"],
                                              fewshot=res["fewshot"], shots_left_out=res["shots_left_out"],
                                              l2_reg=args.l2_reg, C=args.C))


def _norms(args: argparse.Namespace) -> int:
    model = common.load(args.model, common.device(args.device), need_vit=True)
    loader, data = dataset_loader(args.data, model, args, limit=args.limit)
    result = token_norms(model, loader, layers=common.block_indices(args.layers, len(model.blocks)))
    found = high_norm_tokens(result, threshold=args.threshold, min_ratio=args.min_ratio)
    layout, layers = result["layout"], result["layers"]
    how = (f"threshold {args.threshold:g}" if args.threshold else
           f"split per layer (mixture, ratio >= {args.min_ratio:g})")
    figs = {"norms": figures.norms_figure(layout.patches(result["norms"]), layers, found, figure_title(
                f"High-norm tokens (Darcet et al. 2024): {how}", args, model, data)),
            "norm_positions": figures.positions_figure(found["positions"], layers, figure_title(
                f"Where the high-norm tokens sit ({layout.grid[0]} x {layout.grid[1]} patches)", args, model, data))}
    return finish(args, figs, dict(
        data=data, layers=[l + 1 for l in layers], prefix=layout.prefix, grid=layout.grid, threshold=args.threshold,
        min_ratio=args.min_ratio, **{k: v for k, v in found.items() if k != "outliers"},
        prefix_norms={name: result["norms"][:, :, i].mean(0) for i, name in enumerate(layout.prefix)},
        patch_norm_median=layout.patches(result["norms"]).median(dim=-1).values.median(dim=0).values))


def _explore(args: argparse.Namespace) -> int:
    """One self-contained HTML page (no server, no internet): the attention explorer of one image."""
    from ..analysis.explore import explore
    from ..data import knows_only_fashion_mnist

    if args.out.is_dir():
        raise ValueError(f"--out {args.out} is a folder; name the HTML file to write, e.g. "
                         f"{args.out / 'explorer.html'}")
    model = common.load(args.model, common.device(args.device), need_vit=True)
    title = f"Attention explorer: {args.model} on {Path(args.image).name}"
    if knows_only_fashion_mnist(model):
        title += "\nThis model knows only Fashion-MNIST: on a photo its maps show how a clothing classifier reacts"
    page = explore(model, args.image, head_fusion=args.head_fusion, per_head=not args.no_per_head, title=title)
    path = page.save(args.out)
    print(f"{path} ({path.stat().st_size / 2**20:.1f} MB)")
    return 0
# ---- the parser -----------------------------------------------------------------------------------------
def add_command(sub: argparse._SubParsersAction, name: str, func, help_: str,
             data: str | None = None) -> argparse.ArgumentParser:
    """One ``analyze`` subcommand with the flags they all share; ``data`` is ``"images"`` (images to explain), a
    default dataset SPEC, or None (the model's weights alone)."""
    p = sub.add_parser(name, help=help_, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help=common.SOURCE_HELP)
    common.add_output_args(p, Path("vitlens-analysis") / name)
    if data == "images":
        p.add_argument("--image", nargs="+", help="image files or sample photo names (default: the 4 samples)")
        p.add_argument("--data", help="take the images from a dataset SPEC instead")
        p.add_argument("--num-images", type=int, default=4, help="images taken from --data")
    elif data:
        p.add_argument("--data", default=data, help=f"dataset SPEC (default {data})")
    if data:
        p.add_argument("--data-dir", help="where the dataset's files are")
        p.add_argument("--batch-size", type=int, default=32)
        p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.set_defaults(func=func)
    return p


def _attention_commands(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "rollout", _rollout, "attention rollout and gradient rollout (paper Fig. 6)", "images")
    p.add_argument("--head-fusion", choices=("mean", "max", "min"), default="mean")
    p.add_argument("--discard-ratio", type=float, default=0.0)
    p.add_argument("--start-layer", type=int, default=1, help="begin the product at this layer (1 .. L)")
    p.add_argument("--no-gradient", dest="gradient", action="store_false", help="skip gradient rollout")

    p = add_command(sub, "heads", _heads, "each head's class-token attention (DINO style)", "images")
    p.add_argument("--layer", type=int, default=-1, help="layer 1 .. L, or -1 for the last (the default)")
    p.add_argument("--threshold", type=float, help="keep the patches holding this fraction of the mass")

    p = add_command(sub, "norms", _norms, "high-norm tokens per layer (Darcet et al. 2024, registers)",
                 "fashion_mnist:test")
    p.add_argument("--limit", type=int, default=128, help="images")
    p.add_argument("--layers", type=int, nargs="*", help="layers 1 .. L (default: all)")
    p.add_argument("--threshold", type=float, help="a fixed outlier norm for every layer (default: split each "
                   "layer's norms where they are bimodal)")
    p.add_argument("--min-ratio", type=float, default=4.0, help="how far apart the two modes must be")

    p = add_command(sub, "distance", _distance, "mean attention distance per head and layer (paper Fig. 7 right)",
                 "fashion_mnist:test")
    p.add_argument("--limit", type=int, default=128, help="images (the paper used 128)")
    p.add_argument("--include-prefix", "--include-cls", action="store_true",
                   help="keep the prefix tokens (class, distillation, registers) as queries and keys")
    p.add_argument("--no-renormalize", action="store_true", help="do not rescale patch rows to sum to 1")


def _explore_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explore", help="the attention explorer as one self-contained HTML file: hover or click a patch "
                       "for what it attends to in every layer and head", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help=common.SOURCE_HELP)
    p.add_argument("--image", default="astronaut", help="an image file or a sample photo name (default astronaut)")
    p.add_argument("--out", type=Path, default=Path("explorer.html"), help="the HTML file (default explorer.html)")
    p.add_argument("--head-fusion", choices=("mean", "max", "min"), default="mean",
                   help="how each layer's heads become one map (default mean, as the paper)")
    p.add_argument("--no-per-head", action="store_true",
                   help="keep only the heads-fused rows of the patches (for models too large for one page)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.set_defaults(func=_explore)


def _representation_commands(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "posembed", _posembed, "position-embedding cosine similarity (paper Fig. 7 centre)")
    p.add_argument("--img-size", type=int, nargs="*", help="also show the table interpolated to these sizes")

    p = add_command(sub, "filters", _filters, "principal components of the patch-embedding filters (paper Fig. 7 left)")
    p.add_argument("--k", type=int, default=28)

    p = add_command(sub, "cka", _cka, "layer-by-layer minibatch CKA between two models", "fashion_mnist:test")
    p.add_argument("--against", help="second model (ViT or CNN); the model itself when omitted")
    p.add_argument("--limit", type=int, default=1024)

    p = add_command(sub, "probe", _probe, "linear probes and few-shot evaluation per layer (paper section 4.1)",
                 "fashion_mnist")
    p.add_argument("--train-limit", type=int, default=5000)
    p.add_argument("--test-limit", type=int, default=2000)
    p.add_argument("--layers", type=int, nargs="*", help="ViT layers or CNN stages, numbered from 1 (default: all)")
    p.add_argument("--shots", type=int, nargs="*", default=list(PAPER_SHOTS), help="few-shot sizes ('' for none)")
    p.add_argument("--seeds", type=int, default=5, help="random draws per few-shot size")
    p.add_argument("--l2-reg", type=float, default=1.0, help="few-shot ridge strength")
    p.add_argument("--C", type=float, default=1.0, help="logistic regression inverse regularisation")
    p.add_argument("--no-logistic", action="store_true", help="few-shot only")


def register(subparsers: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """Add ``vitlens analyze ...`` to the ``vitlens`` command; returns its subparsers (``bias`` joins them)."""
    analyze = subparsers.add_parser("analyze", help="the paper's analyses as figures (HTML, PNG) and numbers (JSON)",
                                    epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = analyze.add_subparsers(dest="analysis", required=True, metavar="ANALYSIS")
    _attention_commands(sub)
    _explore_command(sub)
    _representation_commands(sub)
    return sub
