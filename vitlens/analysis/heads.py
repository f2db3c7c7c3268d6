"""Per-head class-token attention maps (DINO, Caron et al. 2021)."""
from __future__ import annotations

from typing import Sequence

import torch


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
