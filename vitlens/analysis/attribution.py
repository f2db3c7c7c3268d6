"""Gradient attributions to set beside attention: Grad-CAM (Selvaraju et al. 2017) for CNNs and Integrated
Gradients (Sundararajan et al. 2017) for any differentiable model, both computed by captum."""
from __future__ import annotations

from typing import Sequence

import torch
from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam
from torch import nn

Target = int | Sequence[int] | torch.Tensor | None


def _target_indices(model: nn.Module, images: torch.Tensor, target: Target) -> torch.Tensor:
    """One class index per image: ``target`` broadcast to the batch, or the predicted class when None."""
    if target is None:
        with torch.no_grad():
            return model(images).argmax(dim=-1)
    return torch.as_tensor(target, device=images.device).long().expand(images.shape[0])


def _last_stage(model: nn.Module) -> nn.Module:
    """The deepest module timm's ``feature_info`` names: the last stage, whose maps Grad-CAM reads."""
    info = getattr(model, "feature_info", None)
    if not info:
        raise TypeError(f"{type(model).__name__} has no timm feature_info; pass the convolutional layer to use")
    return model.get_submodule(info[-1]["module"])


def grad_cam(model: nn.Module, images: torch.Tensor, target: Target = None, *, layer: nn.Module | None = None,
             upsample: bool = True) -> torch.Tensor:
    """Grad-CAM: ReLU(sum_k alpha_k A_k) with alpha_k the spatial mean of d y_c / d A_k.

    Args:
        model: a CNN returning logits (e.g. ``demo:cnn-fashion`` or a timm ResNet), in eval mode.
        images: B x C x H x W in the model's input space.
        target: class index per image (or one for all); the predicted class when None.
        layer: the convolutional module whose output A is explained; timm's last stage when None.
        upsample: resize the h x w map to H x W (bilinear, as in the paper); else keep the layer's resolution.

    Returns:
        B x H x W (or B x h x w) non-negative maps.
    """
    layer = layer if layer is not None else _last_stage(model)
    with torch.enable_grad():
        cam = LayerGradCam(model, layer).attribute(images, target=_target_indices(model, images, target),
                                                    relu_attributions=True)
    if upsample:
        cam = LayerAttribution.interpolate(cam, tuple(images.shape[-2:]), interpolate_mode="bilinear")
    return cam[:, 0].detach()


def integrated_gradients(model: nn.Module, images: torch.Tensor, target: Target = None, *,
                         baseline: torch.Tensor | float = 0.0, steps: int = 32,
                         internal_batch_size: int | None = None) -> torch.Tensor:
    """Integrated Gradients (x - x') * integral_0^1 dy_c/dx(x' + t (x - x')) dt, by Gauss-Legendre quadrature.

    Completeness holds: the attributions sum to y_c(x) - y_c(x') up to the quadrature error.

    Args:
        model: any model returning logits (a vitlens ViT runs its fused attention path here).
        images: B x C x H x W in the model's input space.
        target: class index per image (or one for all); the predicted class when None.
        baseline: x', a tensor broadcastable to ``images`` or a scalar (in input space: 0 is the mean image
            of the normalisation; pass ``prepare(black, data_config)`` for a black image).
        steps: quadrature points along the straight path.
        internal_batch_size: images per forward pass (memory bound); all steps at once when None.

    Returns:
        B x C x H x W attributions of the logit of ``target``.
    """
    if isinstance(baseline, torch.Tensor):
        baseline = baseline.to(images).expand_as(images)
    with torch.enable_grad():
        attributions = IntegratedGradients(model).attribute(
            images, baselines=baseline, target=_target_indices(model, images, target), n_steps=steps,
            internal_batch_size=internal_batch_size)
    return attributions.detach()
