"""Attention maps over the patch grid: each head's class-token map (DINO, Caron et al. 2021), and what one patch
attends to in every layer."""
from __future__ import annotations

from typing import Sequence

import torch

from .rollout import HeadFusion, fuse_heads


def head_maps(attentions: Sequence[torch.Tensor], layer: int = -1, threshold: float | None = None, *,
              grid: Sequence[int] | None = None, num_prefix_tokens: int = 1) -> torch.Tensor:
    """Per-head class-token attention over the patches (DINO, Caron et al. 2021): B x H x gh x gw.

    Args:
        attentions: per layer B x H x N x N (``recorder.attentions``).
        layer: which entry of ``attentions``; the last by default.
        threshold: keep, per head, the smallest set of patches holding this fraction of the head's
            class-to-patch mass (DINO's masks); the other patches are set to 0. None keeps all.
        grid: (gh, gw); a square grid is assumed when None.
        num_prefix_tokens: 1 with a class token; 0 (``pool="gap"``) uses the mean over query rows.
    """
    attention = attentions[layer]
    rows = attention[:, :, 0] if num_prefix_tokens else attention.mean(dim=2)
    maps = rows[..., num_prefix_tokens:]  # B x H x gh*gw
    if threshold is not None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        values, order = maps.sort(dim=-1, descending=True)
        mass = values.cumsum(dim=-1) / values.sum(dim=-1, keepdim=True)
        # a patch is kept while the mass before it is still short of the threshold
        keep_sorted = (mass - values / values.sum(dim=-1, keepdim=True)) < threshold
        keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
        maps = maps * keep
    if grid is None:
        side = int(round(maps.shape[-1] ** 0.5))
        grid = (side, side)
    return maps.reshape(*maps.shape[:2], *grid)


def patch_maps(attentions: Sequence[torch.Tensor], patch: int | tuple[int, int], *, grid: Sequence[int],
               num_prefix_tokens: int = 1, head_fusion: HeadFusion = "mean") -> torch.Tensor:
    """What one patch attends to in every layer: its query row over the patches, heads fused, B x L x gh x gw.

    Args:
        attentions: per layer B x H x N x N (``recorder.attentions``).
        patch: the query patch, as its row-major index or (row, column) on the grid.
        grid: (gh, gw) patch grid.
        num_prefix_tokens: leading non-patch tokens (the class token).
        head_fusion: how heads are combined (see :func:`vitlens.analysis.fuse_heads`).
    """
    gh, gw = grid
    index = patch[0] * gw + patch[1] if isinstance(patch, tuple) else int(patch)
    if not 0 <= index < gh * gw:
        raise ValueError(f"patch {patch} is outside the {gh} x {gw} grid")
    rows = [fuse_heads(a, head_fusion)[:, num_prefix_tokens + index, num_prefix_tokens:] for a in attentions]
    return torch.stack(rows, dim=1).reshape(rows[0].shape[0], len(rows), gh, gw)
