"""A ViT and a CNN explained side by side on one image (the app's ViT vs CNN page), through :func:`explain` and the
batched :func:`faithfulness`: attention rollout, gradient rollout and Integrated Gradients for the ViT, Grad-CAM and
Integrated Gradients for the CNN, and every map's deletion and insertion curves (RISE) beside a random map's."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .explain import Explanation, explain
from .faithfulness import MODES, faithfulness

# name -> (which model, method): the comparison's maps, in the order the page shows them
SET = {"ViT rollout": ("vit", "rollout"), "ViT gradient rollout": ("vit", "gradient_rollout"),
       "ViT IG": ("vit", "integrated_gradients"), "CNN Grad-CAM": ("cnn", "gradcam"),
       "CNN IG": ("cnn", "integrated_gradients")}
RANDOM = {"ViT random": ("vit", "random"), "CNN random": ("cnn", "random")}  # what every map should beat
# RISE's pairing: deletion to the normalisation's mean image, insertion from a blurred copy
RISE_BASELINES = {"deletion": "mean", "insertion": "blur"}


@dataclass(frozen=True)
class Saliency:
    """One method's map of one image: which model (``"vit"`` or ``"cnn"``) it explains, for which class.

    ``map`` is the ViT token methods' map on the patch grid, every other map at the input resolution.
    """

    model: str
    target: int
    map: torch.Tensor  # h x w, higher = more important
    explanation: Explanation | None = None


def saliency_maps(vit: nn.Module, vit_input: torch.Tensor, cnn: nn.Module, cnn_input: torch.Tensor, *,
                  vit_target: int, cnn_target: int, ig_steps: int = 32,
                  methods: dict[str, tuple[str, str]] = SET) -> dict[str, Saliency]:
    """The comparison's maps of one image, each for its model's ``target`` class (:func:`explain` each).

    Args:
        vit: a ViT :func:`vitlens.capture` supports; ``vit_input`` its 1 x C x H x W input.
        cnn: a timm CNN (Grad-CAM reads its last stage); ``cnn_input`` its 1 x C x H x W input.
        vit_target: the class the ViT's maps explain; ``cnn_target`` the CNN's.
        ig_steps: Integrated Gradients' quadrature points (from a black image).
        methods: name -> (``"vit"`` / ``"cnn"``, method): :data:`SET`, or :data:`RANDOM` for the random maps.

    Returns:
        name -> map, in the order of ``methods``.
    """
    models = {"vit": (vit, vit_input, vit_target), "cnn": (cnn, cnn_input, cnn_target)}
    out = {}
    for name, (which, method) in methods.items():
        model, x, target = models[which]
        options = dict(steps=ig_steps) if method == "integrated_gradients" else {}
        e = explain(model, x, method, target, **options)
        out[name] = Saliency(which, target, (e.raw if which == "vit" and e.resize != "none" else e.maps)[0], e)
    return out


def deletion_insertion(maps: dict[str, Saliency], models: dict[str, tuple[nn.Module, torch.Tensor]], *,
                       steps: int = 16) -> dict[str, dict[str, dict[str, Any]]]:
    """Every map's deletion curve (to the mean image) and insertion curve (from a blurred copy), most relevant first,
    with the least-relevant-first curve and the symmetric relevance gain under the same baseline
    (:func:`vitlens.analysis.faithfulness.faithfulness`).

    Args:
        maps: :func:`saliency_maps` output (or any name -> :class:`Saliency`).
        models: ``"vit"`` / ``"cnn"`` -> (model, its 1 x C x H x W input).
        steps: perturbation steps per curve.

    Returns:
        map name -> ``"deletion"`` / ``"insertion"`` -> ``fractions``, ``scores``, ``auc`` (MoRF), ``lerf_scores``,
        ``lerf_auc``, ``srg``.
    """
    curves = {}
    for name, s in maps.items():
        model, x = models[s.model]
        relevance = s.explanation if s.explanation is not None else s.map
        curves[name] = {}
        for mode in MODES:
            r = faithfulness(model, x, relevance, s.target, baseline=RISE_BASELINES[mode], steps=steps)
            curves[name][mode] = dict(fractions=r.fractions[mode], scores=r.curves[mode]["morf"][0],
                                      auc=float(r.auc[mode]["morf"][0]), lerf_scores=r.curves[mode]["lerf"][0],
                                      lerf_auc=float(r.auc[mode]["lerf"][0]), srg=float(r.srg[0]))
    return curves


def auc_table(maps: dict[str, Saliency], curves: dict[str, dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per map: ``map``, ``model``, ``class``, ``deletion AUC`` (MoRF, lower is better), ``insertion AUC``
    (MoRF, higher is better), and the symmetric relevance gain under each baseline (``SRG (mean)``, ``SRG (blur)``:
    higher is better, 0 is no better than the map's own reverse)."""
    return [{"map": name, "model": s.model, "class": s.target, "deletion AUC": curves[name]["deletion"]["auc"],
             "insertion AUC": curves[name]["insertion"]["auc"],
             **{f"SRG ({RISE_BASELINES[mode]})": curves[name][mode]["srg"] for mode in MODES}}
            for name, s in maps.items()]
