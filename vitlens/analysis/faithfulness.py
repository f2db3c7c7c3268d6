"""How faithful an explanation is to its model, for a batch of images at once: deletion and insertion curves (Petsiuk,
Das & Saenko 2018, RISE) in most-relevant-first and least-relevant-first order (MoRF / LeRF), their AUCs, and the
symmetric relevance gain between the orders (Blücher et al. 2024), with a pixel baseline (the normalisation mean, or
a blurred copy) or, for ViTs, a token baseline (the patch's tokens dropped from the sequence).

Why one baseline gives four curves from two passes: inserting the k most relevant units into the baseline builds the
same input as deleting the other units, the least relevant ones, from the image. So under one baseline, insertion in
MoRF order is deletion in LeRF order read backwards, and insertion in LeRF order is deletion in MoRF order read
backwards; the step counts are made symmetric so that this holds exactly. RISE's own pairing (deletion to the mean
image, insertion from a blurred one) is the ``"mean"`` result's deletion beside the ``"blur"`` result's insertion.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Literal, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms.functional import gaussian_blur

from ..models.layout import TokenLayout, is_vit, token_layout
from ..models.vit import VisionTransformer
from .explain import Explanation, this_thread_hook

Mode = Literal["deletion", "insertion"]
Output = Literal["probability", "logit"]
MODES = ("deletion", "insertion")
ORDERS = ("morf", "lerf")
BASELINES = ("mean", "blur", "token")
# The table's metrics and which way is better: a faithful map's MoRF deletion falls fast (low AUC) and its MoRF
# insertion rises fast (high AUC); SRG = AUC(deletion, LeRF) - AUC(deletion, MoRF) is large.
METRICS = {"deletion MoRF": "lower", "deletion LeRF": "higher", "insertion MoRF": "higher",
           "insertion LeRF": "lower", "SRG": "higher"}


def blurred(image: torch.Tensor, kernel_size: int = 11, sigma: float = 5.0) -> torch.Tensor:
    """RISE's insertion start: the image under a Gaussian blur (kernel 11, sigma 5 as in Petsiuk et al.)."""
    k = min(kernel_size, 2 * (min(image.shape[-2:]) // 2) - 1)  # an odd kernel no larger than the image
    return gaussian_blur(image, [k, k], [sigma, sigma])


@dataclass(frozen=True)
class Faithfulness:
    """Deletion and insertion curves of a batch of explanations under one baseline.

    Attributes:
        baseline: ``"mean"``, ``"blur"``, ``"token"`` or ``"tensor"`` (one given).
        output: what the curves follow: the target's softmax ``"probability"`` or its ``"logit"``.
        fractions: ``"deletion"`` / ``"insertion"`` -> steps + 1 fractions of the units (pixels; patches for
            ``"token"``) switched, 0 .. 1. Insertion's are 1 - deletion's read backwards: the same but for the middle
            point of an even number of steps over an odd number of units (49 patches in 16 steps: deletion
            switches 24 of them there, insertion 25).
        curves: ``"deletion"`` / ``"insertion"`` -> ``"morf"`` / ``"lerf"`` -> B x (steps + 1) scores.
        auc: the same keys -> B areas under the curves (trapezoid over the mode's ``fractions``).
        srg: B symmetric relevance gains, AUC(deletion, LeRF) - AUC(deletion, MoRF) (equal to AUC(insertion,
            MoRF) - AUC(insertion, LeRF)): higher is more faithful, 0 is no better than its own reverse.
        images: the deletion inputs B x 2 (MoRF, LeRF) x (steps + 1) x C x H x W when asked for (the insertion
            inputs are the other order's, read backwards); for ``"token"``, the image with the dropped patches at
            the normalisation mean (what is left for the model to see).
    """

    baseline: str
    output: str
    fractions: dict[str, np.ndarray]
    curves: dict[str, dict[str, np.ndarray]]
    auc: dict[str, dict[str, np.ndarray]]
    srg: np.ndarray
    images: torch.Tensor | None = None


def curve_counts(units: int, steps: int) -> torch.Tensor:
    """Units deleted at each of the steps + 1 points: round(k / steps * units) for the first half, and
    counts[steps - k] = units - counts[k] for the second, so that each order's insertion (which puts in
    units - counts[steps - k] at step k) is the other order's deletion read backwards."""
    if not 1 <= steps <= units:
        raise ValueError(f"steps must be between 1 and the {units} pixels or patches switched, got {steps}")
    k = torch.arange(steps + 1, dtype=torch.float64)
    first = torch.round(k * units / steps).long()
    return torch.where(k <= steps / 2, first, units - first.flip(0))


def ranks(relevance: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """B x U relevance -> each unit's place in most-relevant-first order (0 = most relevant); LeRF is this order
    reversed. Ties are broken by one random permutation of the units (seeded, the same for every image, so an image
    ranks the same alone or in a batch): maps hold many (Integrated Gradients is exactly 0 wherever the image equals
    its black baseline, Grad-CAM wherever its ReLU cuts), and raster order would delete top rows first."""
    if not bool(torch.isfinite(relevance).all()):
        raise ValueError("the relevance maps hold NaN or infinite values: no order to delete pixels in")
    shuffle = torch.randperm(relevance.shape[1], generator=torch.Generator().manual_seed(seed))
    shuffle = shuffle.to(relevance.device).expand_as(relevance)
    by_value = torch.sort(relevance.gather(1, shuffle), dim=1, descending=True, stable=True).indices
    order = shuffle.gather(1, by_value)
    places = torch.arange(order.shape[1], device=order.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, places)


def _score(logits: torch.Tensor, targets: torch.Tensor, output: Output) -> torch.Tensor:
    values = logits.double().softmax(dim=-1) if output == "probability" else logits.double()
    return values.gather(1, targets[:, None])[:, 0].cpu()


def _pixel_curves(model: nn.Module, x: torch.Tensor, base: torch.Tensor, rank: torch.Tensor, counts: torch.Tensor,
                  targets: torch.Tensor, output: Output, batch_size: int,
                  keep_images: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scores B x 2 (MoRF, LeRF deletion) x S: every (image, order, step) input built and run in batches of
    ``batch_size``, whichever images they come from."""
    B, units = rank.shape
    S = len(counts)
    rows = torch.arange(B * 2 * S, device=x.device)
    image, order, step = rows // (2 * S), rows // S % 2, rows % S
    counts = counts.to(x.device)
    scores, images = [], []
    for chunk in rows.split(batch_size):
        i, m = image[chunk], counts[step[chunk]][:, None]
        r = rank[i]
        keep = torch.where(order[chunk][:, None] == 0, r >= m, r < units - m)  # MoRF deletes the m first, LeRF last
        keep = keep.view(-1, 1, *x.shape[-2:]).to(x.dtype)
        inputs = x[i] * keep + base[i] * (1 - keep)
        scores.append(_score(model(inputs), targets[i], output))
        if keep_images:
            images.append(inputs.cpu())
    kept = torch.cat(images).view(B, 2, S, *x.shape[1:]) if keep_images else None
    return torch.cat(scores).view(B, 2, S), kept


def token_baseline_problem(model: nn.Module) -> str | None:
    """Why the token baseline cannot run on ``model``, or None when it can."""
    if not is_vit(model):
        return f"the token baseline drops patch tokens: it needs a ViT, got {type(model).__name__}"
    from timm.models.vision_transformer import VisionTransformer as TimmViT  # VisionTransformerDistilled too

    if not isinstance(model, (VisionTransformer, TimmViT)):
        return (f"{type(model).__name__} adds positions inside its attention (rotary embeddings or a relative position "
                f"bias), which dropped tokens would shift: the token baseline needs positions added once, before the "
                f"blocks (vitlens's and timm's VisionTransformer); use a pixel baseline ('mean' or 'blur')")
    if token_layout(model).pool != "token":
        return (f"{type(model).__name__} pools its patch tokens ({token_layout(model).pool}), so with every patch "
                f"dropped it has no input: the token baseline needs a model that reads its class token")
    return None


def baselines_for(model: nn.Module) -> tuple[str, ...]:
    """The baselines of :data:`BASELINES` that apply to ``model``: the pixel ones always, ``"token"`` where it can."""
    return BASELINES if token_baseline_problem(model) is None else ("mean", "blur")


@contextmanager
def dropping_tokens(model: nn.Module, layout: TokenLayout) -> Iterator[Callable[[torch.Tensor, torch.Tensor],
                                                                                 torch.Tensor]]:
    """Run ``model`` on chosen tokens only: ``run(images, keep)`` returns the logits of the images with their token
    sequence cut to the B x K indices ``keep`` (prefix tokens included) right after the position embeddings.

    Both vitlens's and timm's VisionTransformer pass the embedded sequence (positions added) through ``pos_drop``;
    a forward hook there selects the kept tokens, so each patch keeps its own position and the blocks see a shorter
    sequence. The same K for every image of a call keeps the batch rectangular.
    """
    if problem := token_baseline_problem(model):
        raise ValueError(problem)
    state: dict[str, Any] = {}

    def select(_m: nn.Module, _args: Any, out: torch.Tensor) -> torch.Tensor:
        state["ran"] = True
        if out.shape[1] != layout.num_tokens:
            raise ValueError(f"pos_drop saw {out.shape[1]} tokens, the layout has {layout.num_tokens}")
        return out.gather(1, state["keep"][:, :, None].expand(-1, -1, out.shape[-1]))

    def run(images: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        state.update(keep=keep.to(images.device), ran=False)
        logits = model(images)
        if not state["ran"]:
            raise ValueError(f"{type(model).__name__} never ran pos_drop on its embedded tokens (no position "
                             f"embedding?): the token baseline has nowhere to drop them")
        return logits

    with this_thread_hook(model.pos_drop, select):
        yield run


def _token_curves(model: nn.Module, x: torch.Tensor, rank: torch.Tensor, counts: torch.Tensor,
                  targets: torch.Tensor, output: Output, batch_size: int,
                  keep_images: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scores B x 2 (MoRF, LeRF deletion) x S with the patch tokens dropped from the sequence: one batch per step
    (the kept count must be the same across a batch), all images of the step together."""
    layout = token_layout(model, x.shape[-2:])
    B, P = rank.shape
    order = rank.argsort(dim=1)  # patch indices, most relevant first
    prefix = torch.arange(layout.num_prefix_tokens, device=x.device).expand(B, -1)
    scores = torch.empty(B, 2, len(counts), dtype=torch.float64)
    images = torch.empty(B, 2, len(counts), *x.shape[1:]) if keep_images else None
    with dropping_tokens(model, layout) as run:
        for o in range(2):
            for k, m in enumerate(counts.tolist()):
                kept = (order[:, m:] if o == 0 else order[:, :P - m]).sort(dim=1).values
                keep = torch.cat([prefix, kept + layout.num_prefix_tokens], dim=1)
                for rows in torch.arange(B, device=x.device).split(batch_size):
                    scores[rows.cpu(), o, k] = _score(run(x[rows], keep[rows]), targets[rows], output)
                if keep_images:
                    seen = torch.zeros(B, P, device=x.device).scatter_(1, kept, 1.0)
                    seen = layout.to_grid(seen).repeat_interleave(layout.patch_size[0], dim=-2)
                    images[:, o, k] = (x * seen.repeat_interleave(layout.patch_size[1], dim=-1)[:, None]).cpu()
    return scores, images


def _pixel_baseline(x: torch.Tensor, baseline: str | torch.Tensor) -> torch.Tensor:
    if isinstance(baseline, torch.Tensor):
        return baseline.to(x).expand_as(x)
    if baseline == "mean":
        return torch.zeros_like(x)  # 0 in the model's input space is the normalisation's mean image
    if baseline == "blur":
        return blurred(x)
    raise ValueError(f"baseline must be one of {', '.join(BASELINES)} or a tensor, got {baseline!r}")


def _relevance(relevance: Explanation | torch.Tensor, x: torch.Tensor, token: bool, model: nn.Module) -> torch.Tensor:
    """B x units relevance: pixels at the input size (coarser maps upsampled bilinearly, as :func:`explain` does), or
    for the token baseline one value per patch (a map on the patch grid as it is, a finer one averaged per patch)."""
    maps, raw = (relevance.maps, relevance.raw) if isinstance(relevance, Explanation) else (relevance, relevance)
    maps = maps.reshape(-1, *maps.shape[-2:]).to(x.device, torch.float64)
    if maps.shape[0] != x.shape[0]:
        raise ValueError(f"{maps.shape[0]} relevance maps for {x.shape[0]} images")
    if tuple(maps.shape[-2:]) != tuple(x.shape[-2:]):
        maps = F.interpolate(maps[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    if not token:
        return maps.flatten(1)
    layout = token_layout(model, x.shape[-2:])
    if tuple(raw.shape[-2:]) == layout.grid:
        return raw.reshape(x.shape[0], -1).to(x.device, torch.float64)
    return F.avg_pool2d(maps[:, None], layout.patch_size).flatten(1)


@torch.no_grad()
def faithfulness(model: nn.Module, images: torch.Tensor, relevance: Explanation | torch.Tensor,
                 targets: int | Sequence[int] | torch.Tensor | None = None, *, baseline: str | torch.Tensor = "mean",
                 steps: int = 16, output: Output = "probability", batch_size: int = 256,
                 return_images: bool = False, seed: int = 0) -> Faithfulness:
    """Deletion and insertion curves, MoRF and LeRF, of a batch of explanations, every perturbed input of every image
    and step going through the model in batches of ``batch_size``.

    Units (pixels, all channels together; patches for ``"token"``) are ranked by relevance, ties broken at random
    (``seed``); LeRF is that order reversed. At step k of ``steps`` the first counts[k] ~ k / steps of the units in
    that order are switched (:func:`curve_counts`): deletion replaces them by the baseline, insertion puts them into it.

    Args:
        model: returns B x K logits, in eval mode.
        images: B x C x H x W in the model's input space.
        relevance: an :class:`Explanation` (its ``maps``; for ``"token"`` its ``raw`` map on the patch grid), or
            B x h x w maps (higher = more relevant), upsampled bilinearly when coarser than the images.
        targets: the class each image's score follows; the explanation's own targets when None.
        baseline: ``"mean"`` (the normalisation's mean image: 0 in input space), ``"blur"`` (:func:`blurred`),
            ``"token"`` (for a ViT with a class token and positions added before its blocks: the patches' tokens
            dropped from the sequence, so no out-of-distribution pixels), or an image-shaped tensor.
        steps: points per curve, plus the unperturbed one.
        output: follow the target's softmax ``"probability"`` (RISE) or its ``"logit"``.
        batch_size: perturbed images per forward pass.
        return_images: keep the perturbed inputs (B x 2 x (steps + 1) images: memory grows with all three).
        seed: the tie-breaking permutation's seed.

    Returns:
        :class:`Faithfulness`: curves, AUCs and SRG per image.
    """
    if output not in ("probability", "logit"):
        raise ValueError(f"output must be 'probability' or 'logit', got {output!r}")
    if targets is None:
        if not isinstance(relevance, Explanation):
            raise ValueError("targets are needed with a bare relevance map (an Explanation carries its own)")
        targets = relevance.targets
    targets = torch.as_tensor(targets, device=images.device).long().expand(images.shape[0])
    token = isinstance(baseline, str) and baseline == "token"
    rank = ranks(_relevance(relevance, images, token, model), seed)
    counts = curve_counts(rank.shape[1], steps)
    if token:
        scores, kept = _token_curves(model, images, rank, counts, targets, output, batch_size, return_images)
    else:
        scores, kept = _pixel_curves(model, images, _pixel_baseline(images, baseline), rank, counts, targets, output,
                                     batch_size, return_images)
    deleted = counts.double() / rank.shape[1]
    fractions = {"deletion": deleted, "insertion": 1 - deleted.flip(0)}
    curves = {"deletion": {"morf": scores[:, 0], "lerf": scores[:, 1]},
              "insertion": {"morf": scores[:, 1].flip(-1), "lerf": scores[:, 0].flip(-1)}}
    auc = {mode: {o: torch.trapezoid(c, fractions[mode]).numpy() for o, c in by.items()} for mode, by in curves.items()}
    curves = {mode: {o: c.numpy() for o, c in by.items()} for mode, by in curves.items()}
    fractions = {mode: f.numpy() for mode, f in fractions.items()}
    name = baseline if isinstance(baseline, str) else "tensor"
    return Faithfulness(name, output, fractions, curves, auc, auc["deletion"]["lerf"] - auc["deletion"]["morf"], kept)


def perturbation_curve(model: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, saliency: torch.Tensor,
                       target: int, *, mode: Mode = "deletion", steps: int = 20,
                       baseline: torch.Tensor | None = None, output: Output = "probability",
                       batch_size: int = 32) -> dict[str, np.ndarray | float]:
    """One image's curve in most-relevant-first order: :func:`faithfulness` on a batch of one.

    Args:
        model: returns B x K logits.
        image: 1 x C x H x W (or C x H x W) in the model's input space.
        saliency: h x w map (higher = more important), any resolution.
        target: the class whose score is followed.
        mode: ``"deletion"`` or ``"insertion"``.
        steps: perturbation steps; the curve has steps + 1 points, fractions 0 .. 1.
        baseline: image-shaped; the normalisation's mean for deletion and :func:`blurred` for insertion when None,
            as in RISE.
        output: ``"probability"`` or ``"logit"``.
        batch_size: perturbed images per forward pass.

    Returns:
        ``fractions``, ``scores`` (steps + 1 each) and ``auc``.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be 'deletion' or 'insertion', got {mode!r}")
    x = image[None] if image.ndim == 3 else image
    if x.shape[0] != 1:
        raise ValueError(f"perturbation_curve takes one image, got a batch of {x.shape[0]}")
    if baseline is None:
        baseline = "mean" if mode == "deletion" else "blur"
    res = faithfulness(model, x, saliency.reshape(1, *saliency.shape[-2:]), target, baseline=baseline, steps=steps,
                       output=output, batch_size=batch_size)
    return dict(fractions=res.fractions[mode], scores=res.curves[mode]["morf"][0], auc=float(res.auc[mode]["morf"][0]))


def per_image_metrics(result: Faithfulness) -> dict[str, np.ndarray]:
    """:data:`METRICS` name -> B values of one :class:`Faithfulness`."""
    return {f"{mode} {order.replace('morf', 'MoRF').replace('lerf', 'LeRF')}": result.auc[mode][order]
            for mode in MODES for order in ORDERS} | {"SRG": result.srg}


def mean_interval(values: np.ndarray, confidence: float = 0.95) -> dict[str, float]:
    """The mean over images and its Student-t interval (n - 1 degrees of freedom, standard error of the mean)."""
    from scipy import stats  # a second to import: only the table needs it, not the command line's start

    values = np.asarray(values, dtype=np.float64)
    mean = float(values.mean())
    if len(values) < 2:
        return dict(mean=mean, low=float("nan"), high=float("nan"))
    if values.std() == 0:  # scipy's interval of a constant is NaN; it is the point itself
        return dict(mean=mean, low=mean, high=mean)
    low, high = stats.t.interval(confidence, len(values) - 1, loc=mean, scale=stats.sem(values))
    return dict(mean=mean, low=float(low), high=float(high))


def faithfulness_table(results: Mapping[str, Mapping[str, Faithfulness]], *, reference: str | None = "random",
                       confidence: float = 0.95) -> list[dict[str, Any]]:
    """One row per (method, baseline): each metric's mean over the images with its ``confidence`` interval, and,
    beside the ``reference`` method (the random map) run on the same images, the paired difference with its own.

    Args:
        results: method -> baseline -> :class:`Faithfulness` (every method on the same images, in the same order).
        reference: the method differences are taken against; none when None or absent.
        confidence: the interval's coverage.

    Returns:
        rows of ``method``, ``baseline``, ``images``, then per metric ``{"mean", "low", "high"}`` and, under
        ``"vs <reference>"``, per metric the paired difference ``{"mean", "low", "high"}``.
    """
    rows = []
    for method, by_baseline in results.items():
        for baseline, result in by_baseline.items():
            values = per_image_metrics(result)
            row = dict(method=method, baseline=baseline, images=len(result.srg),
                       **{k: mean_interval(v, confidence) for k, v in values.items()})
            if reference in results and method != reference and baseline in results[reference]:
                ref = per_image_metrics(results[reference][baseline])
                row[f"vs {reference}"] = {k: mean_interval(v - ref[k], confidence) for k, v in values.items()}
            rows.append(row)
    return rows
