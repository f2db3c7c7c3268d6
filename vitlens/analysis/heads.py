"""Attention maps over the patch grid: each head's class-token map (DINO, Caron et al. 2021), and what one patch
attends to in every layer."""
from __future__ import annotations

from typing import Sequence

import torch

from ..models.layout import TokenLayout
from .rollout import HeadFusion, fuse_heads


def head_maps(attentions: Sequence[torch.Tensor], layout: TokenLayout, layer: int = -1,
              threshold: float | None = None) -> torch.Tensor:
    """Per-head attention of the class token over the patches (DINO, Caron et al. 2021): B x H x gh x gw.

    Args:
        attentions: per layer B x H x N x N (``recorder.attentions``).
        layout: ``vitlens.token_layout(model)``; a model without a class token gets the mean over the patch
            queries (:meth:`TokenLayout.query`).
        layer: which entry of ``attentions``; the last by default.
        threshold: keep, per head, the smallest set of patches holding this fraction of the head's
            class-to-patch mass (DINO's masks); the other patches are set to 0. None keeps all.
    """
    maps = layout.patches(layout.query(attentions[layer]))  # B x H x gh*gw
    if threshold is not None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        values, order = maps.sort(dim=-1, descending=True)
        mass = values.cumsum(dim=-1) / values.sum(dim=-1, keepdim=True)
        # a patch is kept while the mass before it is still short of the threshold
        keep_sorted = (mass - values / values.sum(dim=-1, keepdim=True)) < threshold
        keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
        maps = maps * keep
    return layout.to_grid(maps)


def patch_maps(attentions: Sequence[torch.Tensor], patch: int | tuple[int, int], layout: TokenLayout, *,
               head_fusion: HeadFusion = "mean") -> torch.Tensor:
    """What one patch attends to in every layer: its query row over the patches, heads fused, B x L x gh x gw.

    Args:
        attentions: per layer B x H x N x N (``recorder.attentions``).
        patch: the query patch, as its row-major index or (row, column) on the grid.
        layout: ``vitlens.token_layout(model)``.
        head_fusion: how heads are combined (see :func:`vitlens.analysis.fuse_heads`).
    """
    gh, gw = layout.grid
    index = patch[0] * gw + patch[1] if isinstance(patch, tuple) else int(patch)
    if not 0 <= index < gh * gw:
        raise ValueError(f"patch {patch} is outside the {gh} x {gw} grid")
    query = layout.num_prefix_tokens + index
    rows = [layout.patches(fuse_heads(a, head_fusion)[:, query]) for a in attentions]
    return layout.to_grid(torch.stack(rows, dim=1))
