"""Spatial feature maps per layer (ViT blocks as token grids, CNN stages), shared by the translation and ERF probes."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..analysis.features import layer_outputs
from ..models.layout import TokenLayout, is_vit, token_layout


def tokens_to_map(tokens: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
    """B x N x D block output to a B x D x gh x gw map (prefix tokens: class, distillation, registers, dropped).

    Args:
        tokens: block output, patch tokens in row-major grid order after the prefix tokens.
        layout: ``vitlens.token_layout(model, img_size)``.
    """
    return layout.to_grid(layout.patches(tokens, dim=1).transpose(1, 2))


def layer_maps(model: nn.Module, images: torch.Tensor,
               layers: Sequence[str] | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """One forward pass: the spatial map of each layer and the model's output (logits).

    The maps stay in the autograd graph (the ERF differentiates them); wrap the call in ``torch.no_grad()``
    when no gradient is needed.

    Args:
        model: a ViT, a timm CNN, or any module when ``layers`` names its submodules
            (see :func:`vitlens.analysis.features.layer_outputs`).
        images: B x C x H x W in the model's input space.
        layers: layer names (``block3``, ``layer2``, ``stages.1``...); all ViT blocks / CNN stages when None.

    Returns:
        name -> B x C x h x w maps in the order of ``layers``, and the logits.
    """
    outputs, logits = layer_outputs(model, images, layers)
    if is_vit(model):
        layout = token_layout(model, images.shape[-2:])
        return {n: tokens_to_map(t, layout) for n, t in outputs.items()}, logits
    if bad := [n for n, m in outputs.items() if m.ndim != 4]:
        raise ValueError(f"layer(s) {bad} do not output B x C x h x w maps")
    return outputs, logits
