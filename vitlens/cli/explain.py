"""``vitlens analyze explain``: every attribution method that applies to a model, scored for faithfulness over a
dataset (deletion and insertion in MoRF and LeRF order, AUCs, SRG, per baseline), as a table with intervals, mean
curves and per-image maps (HTML, PNG, JSON)."""
from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..analysis import figures
from ..analysis.explain import METHODS, Explanation, explain, methods_for, resolve_targets
from ..analysis.faithfulness import (BASELINES, METRICS, Faithfulness, baselines_for, faithfulness, faithfulness_table,
                                     per_image_metrics, token_baseline_problem)
from ..data import class_names
from ..images import display_view, prepare
from . import common
from .analyze import add_command, dataset_loader, figure_title, finish

INTERVAL = "Student t, 95 %, over the images; 'vs random': paired differences from the random map on the same images"


def _target(value: str) -> str | int:
    """``--target``: top, label or a class index."""
    if value in ("top", "label"):
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be top, label or a class index, got {value!r}") from None


def _choose(asked: list[str], known: tuple[str, ...], fit: tuple[str, ...], what: str, why: str) -> list[str]:
    """``all`` (every one of ``known`` that fits the model), or the names asked for, each checked."""
    if asked == ["all"]:
        return list(fit)
    if unknown := [a for a in asked if a not in known]:
        raise ValueError(f"unknown {what} {', '.join(unknown)}; choose all or from {', '.join(known)}")
    if unfit := [a for a in asked if a not in fit]:
        raise ValueError(f"{', '.join(unfit)} cannot run here: {why}")
    return list(dict.fromkeys(asked))


def _labelled(args: argparse.Namespace, model: nn.Module, device: torch.device) -> tuple[torch.Tensor, ...]:
    """The dataset's images in [0, 1], the model's input made of them, and their labels."""
    loader, data = dataset_loader(args.data, model, args)
    batches = list(loader)
    if not batches:
        raise ValueError(f"{args.data} holds no images")
    images, labels = torch.cat([b for b, _ in batches]), torch.cat([torch.as_tensor(y) for _, y in batches])
    return images, prepare(images, model.data_config).to(device), labels.to(device), data


def _benchmark(args: argparse.Namespace, model: nn.Module, x: torch.Tensor, targets: torch.Tensor,
               methods: list[str], baselines: list[str]) -> tuple[dict, dict]:
    """Each method's explanation and, under each baseline, its faithfulness (a progress bar on a terminal)."""
    explanations, results = {}, {}
    with tqdm(total=len(methods) * (1 + len(baselines)), desc="explain", disable=None) as bar:
        for method in methods:
            bar.set_postfix_str(f"{method}: maps")
            options = dict(steps=args.ig_steps) if method == "integrated_gradients" else {}
            options = dict(seed=args.seed) if method == "random" else options
            explanations[method] = explain(model, x, method, targets, batch_size=args.batch_size, **options)
            bar.update()
            results[method] = {}
            for b in baselines:
                bar.set_postfix_str(f"{method}: {b} baseline")
                results[method][b] = faithfulness(model, x, explanations[method], baseline=b, steps=args.steps,
                                                  output=args.output, batch_size=args.perturb_batch)
                bar.update()
    return explanations, results


def _significant(x: torch.Tensor, digits: int = 4) -> np.ndarray:
    """``x`` rounded to ``digits`` significant digits of its largest value: the JSON holds what the numbers mean,
    not float noise (a third of the size)."""
    top = float(x.abs().max()) if x.numel() else 0.0
    decimals = digits - 1 - int(np.floor(np.log10(top))) if top > 0 else 0
    return np.round(x.double().cpu().numpy(), decimals)


def _mean_curves(results: dict[str, dict[str, Faithfulness]]) -> dict[str, dict[str, dict]]:
    """method -> baseline -> mode -> order -> the curve's mean over the images."""
    return {m: {b: {mode: {o: c.mean(0) for o, c in by.items()} for mode, by in r.curves.items()}
                for b, r in by_b.items()} for m, by_b in results.items()}


def _explain_figures(args: argparse.Namespace, model: nn.Module, data: str, images: torch.Tensor,
                     labels: torch.Tensor, probs: torch.Tensor, explanations: dict[str, Explanation],
                     results: dict[str, dict[str, Faithfulness]], rows: list[dict]) -> dict:
    """The table, the mean curves under each baseline, and the maps of the first ``--num-maps`` images."""
    what = f"target: {args.target}, {args.steps} steps, {args.output}"
    figs = {"explain": figures.faithfulness_table_figure(rows, METRICS, figure_title(
        f"Explanation faithfulness: mean over images [95 % t interval] ({what})", args, model, data))}
    mean, first = _mean_curves(results), next(iter(results.values()))
    for b, result in first.items():
        figs[f"curves_{b}"] = figures.faithfulness_curves_figure(
            result.fractions, {m: by_b[b] for m, by_b in mean.items()},
            figure_title(f"Mean deletion / insertion curves, {b} baseline ({what})", args, model, data),
            unit="patches (tokens dropped)" if b == "token" else "pixels", score=f"{args.output} of the target")
    shown = list(range(min(args.num_maps, len(images))))
    names, targets = class_names(model), next(iter(explanations.values())).targets
    side = max(model.data_config["input_size"][1:])
    figs["maps"] = figures.explanation_maps_figure(
        [display_view(images[i], model.data_config, side) for i in shown],
        {m: e.maps[shown].cpu() for m, e in explanations.items()},
        figure_title("Maps of the first images, each scaled by its largest absolute value (rows: the label, then the class "
               "explained and its probability)", args, model, data),
        [f"{names[int(labels[i])]}<br>{names[int(targets[i])]} {probs[i, targets[i]]:.2f}" for i in shown])
    return figs


def _explain_numbers(args: argparse.Namespace, data: str, labels: torch.Tensor, probs: torch.Tensor,
                     explanations: dict[str, Explanation], results: dict[str, dict[str, Faithfulness]],
                     rows: list[dict]) -> dict:
    """The JSON: settings, the table, mean curves, per-image deletion AUCs (the other metrics follow from them: under
    one baseline insertion MoRF = deletion LeRF, insertion LeRF = deletion MoRF, SRG = LeRF - MoRF), the maps shown."""
    targets = next(iter(explanations.values())).targets.cpu()
    shown = list(range(min(args.num_maps, len(labels))))
    return dict(
        data=data, images=len(labels), methods=list(explanations), baselines=list(next(iter(results.values()))),
        target=args.target, steps=args.steps, output=args.output, ig_steps=args.ig_steps, seed=args.seed,
        accuracy=float((probs.argmax(-1) == labels).double().mean()), interval=INTERVAL, table=rows,
        fractions={b: r.fractions for b, r in next(iter(results.values())).items()}, mean_curves=_mean_curves(results),
        per_image={m: {b: {k: np.round(v, 5) for k, v in per_image_metrics(r).items() if k.startswith("deletion")}
                       for b, r in by_b.items()} for m, by_b in results.items()},
        labels=labels.cpu(), targets=targets, target_probability=probs.gather(1, targets[:, None].to(probs.device)),
        maps={m: dict(resize=e.resize, raw=_significant(e.raw[shown])) for m, e in explanations.items()})


def _explain(args: argparse.Namespace) -> int:
    device = common.device(args.device)
    model = common.load(args.model, device)
    methods = _choose(args.methods, METHODS, methods_for(model), "methods",
                      f"attention, rollout and gradient rollout read attention: {args.model} is not a ViT")
    baselines = _choose(args.baselines, BASELINES, baselines_for(model), "baselines",
                        token_baseline_problem(model) or "")
    images, x, labels, data = _labelled(args, model, device)
    with torch.no_grad():
        probs = torch.cat([model(c).softmax(-1) for c in x.split(args.batch_size)])
    targets = resolve_targets(model, x, args.target, labels, batch_size=args.batch_size)
    explanations, results = _benchmark(args, model, x, targets, methods, baselines)
    if not all(np.isfinite(r.srg).all() for by in results.values() for r in by.values()):
        print(f"vitlens: error: {args.model} gave non-finite scores on {data}: no faithfulness to report",
              file=sys.stderr)
        return 3
    rows = faithfulness_table(results)
    figs = _explain_figures(args, model, data, images, labels, probs, explanations, results, rows)
    return finish(args, figs, _explain_numbers(args, data, labels, probs, explanations, results, rows))




def register(sub: argparse._SubParsersAction) -> None:
    """Add ``explain`` to ``vitlens analyze``."""
    p = add_command(sub, "explain", _explain, "attribution methods side by side: deletion / insertion (MoRF, LeRF), "
                 "SRG, against a random map", "fashion_mnist:test:256")
    p.add_argument("--methods", nargs="+", default=["all"], help=f"all (every method that applies to the model: the "
                   f"attention ones only for ViTs) or some of {', '.join(METHODS)}")
    p.add_argument("--target", type=_target, default="top", help="the class explained: top (the prediction), label, "
                   "or a class index")
    p.add_argument("--baselines", nargs="+", default=["all"], help="all (mean, blur, and token for ViTs that read a "
                   "class token) or some of mean blur token")
    p.add_argument("--steps", type=int, default=16, help="points per curve (plus the unperturbed one)")
    p.add_argument("--ig-steps", type=int, default=32, help="Integrated Gradients' steps")
    p.add_argument("--perturb-batch", type=int, default=256, help="perturbed images per forward pass")
    p.add_argument("--output", choices=("probability", "logit"), default="probability", help="what the curves follow")
    p.add_argument("--num-maps", type=int, default=6, help="images whose maps are drawn")
    p.add_argument("--seed", type=int, default=0, help="the random map's seed")
