"""Spatial feature maps per layer (ViT blocks as token grids, CNN stages), shared by the translation and ERF probes."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..analysis.features import layer_names
from ..capture import capture
from ..models.vit import VisionTransformer


def spatial_layers(model: nn.Module) -> list[str]:
    """``block{i}`` per ViT block, or the modules a timm CNN's ``feature_info`` names (its stages)."""
    return layer_names(model)


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
    """One forward pass: the spatial map of each layer and the model's output.

    The maps stay in the autograd graph (the ERF differentiates them); wrap the call in ``torch.no_grad()``
    when no gradient is needed.

    Args:
        model: a vitlens ViT (block outputs via :func:`vitlens.capture`), a timm CNN (its ``feature_info``
            modules via forward hooks), or any module when ``layers`` names its submodules.
        images: B x C x H x W in the model's input space.
        layers: layer names (``block3``, ``layer2``, ``stages.1``...); all of :func:`spatial_layers` when None.

    Returns:
        name -> B x C x h x w maps in the order of ``layers``, and the model output (logits).
    """
    if isinstance(model, VisionTransformer):
        names = layers or spatial_layers(model)
        known = spatial_layers(model)
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ValueError(f"unknown ViT layer(s) {unknown}; valid: block0 .. block{len(known) - 1}")
        grid = (images.shape[-2] // model.patch_size, images.shape[-1] // model.patch_size)
        with capture(model, attentions=False, tokens=True, layers=[known.index(n) for n in names], grad=True) as rec:
            logits = model(images)
        by_layer = {f"block{i}": t for i, t in zip(rec.layers, rec.tokens)}
        return {n: tokens_to_map(by_layer[n], grid, model.num_prefix_tokens) for n in names}, logits
    names = layers or spatial_layers(model)
    maps: dict[str, torch.Tensor] = {}
    hooks = [model.get_submodule(n).register_forward_hook(lambda _m, _i, y, n=n: maps.__setitem__(n, y))
             for n in names]
    try:
        logits = model(images)
    finally:
        for h in hooks:
            h.remove()
    bad = [n for n in names if maps[n].ndim != 4]
    if bad:
        raise ValueError(f"layer(s) {bad} do not output B x C x h x w maps")
    return {n: maps[n] for n in names}, logits
