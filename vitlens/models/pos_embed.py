"""2-D interpolation of learned position embeddings for a new patch grid (paper section 3.2)."""
from __future__ import annotations

import math
from typing import Literal, Sequence

import torch
from timm.layers import resample_abs_pos_embed

ResizeMode = Literal["bicubic", "bilinear", "jax"]
RESIZE_MODES = ("bicubic", "bilinear", "jax")
# timm's resampling options for each mode: its defaults; what it applies when loading .npz; and the official
# code's scipy.ndimage.zoom(order=1), which maps corner to corner (bilinear with align_corners=True).
_TIMM_OPTIONS = {"bicubic": dict(interpolation="bicubic", antialias=True),
                 "bilinear": dict(interpolation="bilinear", antialias=False),
                 "jax": dict(interpolation="bilinear", antialias=False, align_corners=True)}


def resize_pos_embed(pos_embed: torch.Tensor, new_grid: Sequence[int], *, old_grid: Sequence[int] | None = None,
                     num_prefix_tokens: int = 1, mode: ResizeMode = "bicubic") -> torch.Tensor:
    """Resize a 1 x (prefix + gh*gw) x D table to a new grid; prefix (class) slots are kept as they are.

    Args:
        pos_embed: the table, 1 x N x D (or N x D).
        new_grid: (gh, gw) of the new patch grid.
        old_grid: (gh, gw) of the table; a square grid is assumed when omitted.
        num_prefix_tokens: leading slots that are not on the grid (1 for the class token, 0 for 'gap').
        mode: ``"bicubic"``: timm's ``resample_abs_pos_embed`` defaults (bicubic, antialias);
            ``"bilinear"``: bilinear without antialias (what timm applies when loading ``.npz``);
            ``"jax"``: the official code, ``scipy.ndimage.zoom(grid, ..., order=1)``, which maps corner
            to corner, i.e. bilinear with ``align_corners=True``.

    Returns:
        1 x (prefix + new_gh*new_gw) x D in the input's dtype.
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f"unknown position-embedding resize mode {mode!r}; use one of {RESIZE_MODES}")
    squeeze = pos_embed.ndim == 2
    if squeeze:
        pos_embed = pos_embed[None]
    n_grid = pos_embed.shape[1] - num_prefix_tokens
    if old_grid is None:
        side = math.isqrt(n_grid)
        if side * side != n_grid:
            raise ValueError(f"position embedding has {n_grid} grid slots, not a square; pass old_grid=(gh, gw)")
        old_grid = (side, side)
    old_grid, new_grid = tuple(int(g) for g in old_grid), tuple(int(g) for g in new_grid)
    if old_grid[0] * old_grid[1] != n_grid:
        raise ValueError(f"old_grid {old_grid} does not match the {n_grid} grid slots of the table")
    if old_grid == new_grid:
        return pos_embed[0] if squeeze else pos_embed

    out = resample_abs_pos_embed(pos_embed, list(new_grid), list(old_grid), num_prefix_tokens=num_prefix_tokens,
                                 **_TIMM_OPTIONS[mode])
    return out[0] if squeeze else out
