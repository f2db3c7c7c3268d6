"""Spatial feature maps per layer (ViT blocks as token grids, CNN stages), shared by the translation and ERF probes."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..analysis.features import layer_outputs
from ..models.vit import VisionTransformer


def tokens_to_map(tokens: torch.Tensor, grid: Sequence[int], num_prefix_tokens: int) -> torch.Tensor:
    """B x N x D block output to a B x D x gh x gw map (prefix tokens such as the class token dropped).

    Args:
        tokens: block output, patch tokens in row-major grid order after ``num_prefix_tokens`` others.
        grid: (gh, gw) patch grid.
        num_prefix_tokens: leading tokens with no place on the grid.
    """
    patches = tokens[:, num_prefix_tokens:]
    return patches.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[-1], *grid)


def layer_maps(model: nn.Module, images: torch.Tensor,
               layers: Sequence[str] | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """One forward pass: the spatial map of each layer and the model's output (logits).

    The maps stay in the autograd graph (the ERF differentiates them); wrap the call in ``torch.no_grad()``
    when no gradient is needed.

    Args:
        model: a vitlens ViT, a timm CNN, or any module when ``layers`` names its submodules
            (see :func:`vitlens.analysis.features.layer_outputs`).
        images: B x C x H x W in the model's input space.
        layers: layer names (``block3``, ``layer2``, ``stages.1``...); all ViT blocks / CNN stages when None.

    Returns:
        name -> B x C x h x w maps in the order of ``layers``, and the logits.
    """
    outputs, logits = layer_outputs(model, images, layers)
    if isinstance(model, VisionTransformer):
        grid = (images.shape[-2] // model.patch_size, images.shape[-1] // model.patch_size)
        return {n: tokens_to_map(t, grid, model.num_prefix_tokens) for n, t in outputs.items()}, logits
    if bad := [n for n, m in outputs.items() if m.ndim != 4]:
        raise ValueError(f"layer(s) {bad} do not output B x C x h x w maps")
    return outputs, logits
