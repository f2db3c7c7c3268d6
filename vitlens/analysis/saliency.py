"""A ViT and a CNN explained side by side on one image: attention rollout, gradient rollout and Integrated Gradients
for the ViT, Grad-CAM and Integrated Gradients for the CNN, and every map's deletion and insertion curves (RISE)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from ..capture import capture
from ..images import prepare
from ..models.layout import token_layout
from ..models.timm_convert import data_config_of
from .attribution import grad_cam, integrated_gradients
from .faithfulness import perturbation_curve
from .rollout import attention_rollout, cls_map, gradient_rollout

MODES = ("deletion", "insertion")


@dataclass(frozen=True)
class Saliency:
    """One method's map of one image: which model (``"vit"`` or ``"cnn"``) it explains, for which class."""

    model: str
    target: int
    map: torch.Tensor  # h x w, higher = more important


def _black(x: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """A black image in the model's input space: Integrated Gradients' baseline."""
    return prepare(torch.zeros(1, 1, *x.shape[-2:]), data_config_of(model))


def saliency_maps(vit: nn.Module, vit_input: torch.Tensor, cnn: nn.Module, cnn_input: torch.Tensor, *,
                  vit_target: int, cnn_target: int, ig_steps: int = 32,
                  attentions: Sequence[torch.Tensor] | None = None) -> dict[str, Saliency]:
    """The comparison's maps of one image, each for its model's ``target`` class.

    Args:
        vit: a ViT :func:`vitlens.capture` supports; ``vit_input`` its 1 x C x H x W input.
        cnn: a timm CNN (Grad-CAM reads its last stage); ``cnn_input`` its 1 x C x H x W input.
        vit_target: the class the ViT's maps explain; ``cnn_target`` the CNN's.
        ig_steps: Integrated Gradients' quadrature points (from a black image).
        attentions: the ViT's captured attention of this input, when already at hand.

    Returns:
        ``"ViT rollout"``, ``"ViT gradient rollout"``, ``"ViT IG"``, ``"CNN Grad-CAM"``, ``"CNN IG"`` -> map.
    """
    if attentions is None:
        with torch.no_grad(), capture(vit) as rec:
            vit(vit_input)
        attentions = rec.attentions
    layout = token_layout(vit, vit_input.shape[-2:])
    rollout = attention_rollout(attentions, num_prefix_tokens=layout.num_prefix_tokens)
    ig = dict(steps=ig_steps)
    return {
        "ViT rollout": Saliency("vit", vit_target, cls_map(rollout, layout)[0]),
        "ViT gradient rollout": Saliency("vit", vit_target, cls_map(gradient_rollout(vit, vit_input, vit_target),
                                                                    layout)[0]),
        "ViT IG": Saliency("vit", vit_target, integrated_gradients(
            vit, vit_input, vit_target, baseline=_black(vit_input, vit), **ig)[0].sum(0)),
        "CNN Grad-CAM": Saliency("cnn", cnn_target, grad_cam(cnn, cnn_input, cnn_target)[0]),
        "CNN IG": Saliency("cnn", cnn_target, integrated_gradients(
            cnn, cnn_input, cnn_target, baseline=_black(cnn_input, cnn), **ig)[0].sum(0)),
    }


def deletion_insertion(maps: dict[str, Saliency], models: dict[str, tuple[nn.Module, torch.Tensor]], *,
                       steps: int = 16) -> dict[str, dict[str, dict[str, Any]]]:
    """Every map's deletion and insertion curve on its own model (see :func:`perturbation_curve`).

    Args:
        maps: :func:`saliency_maps` output.
        models: ``"vit"`` / ``"cnn"`` -> (model, its 1 x C x H x W input).
        steps: perturbation steps per curve.

    Returns:
        map name -> ``"deletion"`` / ``"insertion"`` -> ``fractions``, ``scores``, ``auc``.
    """
    return {name: {mode: perturbation_curve(*models[s.model], s.map, s.target, mode=mode, steps=steps)
                   for mode in MODES} for name, s in maps.items()}


def auc_table(maps: dict[str, Saliency], curves: dict[str, dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per map: ``map``, ``model``, ``class``, ``deletion AUC`` (lower is better), ``insertion AUC``."""
    return [{"map": name, "model": s.model, "class": s.target, "deletion AUC": curves[name]["deletion"]["auc"],
             "insertion AUC": curves[name]["insertion"]["auc"]} for name, s in maps.items()]
