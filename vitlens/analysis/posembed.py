"""Position-embedding similarity (paper Fig. 7 centre)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..models.layout import token_layout


def position_table(model: nn.Module) -> tuple[torch.Tensor, tuple[int, int]]:
    """The learned absolute position embeddings of the patches (gh*gw x D, prefix slots left out) and their grid.

    Works for tables with a class slot (the paper, DeiT), with a class and distillation slot, with no prefix slot
    (``no_embed_class``: DINOv2 with registers; SigLIP) and for EVA-02's absolute table beside its RoPE.

    Raises:
        ValueError: the model has no absolute position embeddings (RoPE only, or BEiT's relative position bias).
    """
    table = getattr(model, "pos_embed", None)
    if table is None:
        why = ("it encodes positions with a relative position bias in each attention layer (BEiT)"
               if getattr(model.blocks[0].attn, "relative_position_bias_table", None) is not None
               or getattr(model, "rel_pos_bias", None) is not None
               else "it encodes positions only by rotating queries and keys (RoPE)")
        raise ValueError(f"{type(model).__name__} has no absolute position embeddings to compare: {why}")
    layout = token_layout(model)  # at the model's own size, the size its table was made (or moved) for
    grid = layout.grid
    slots = 0 if getattr(model, "no_embed_class", False) else layout.num_prefix_tokens
    if table.shape[1] != slots + grid[0] * grid[1]:
        raise ValueError(f"a position table of {table.shape[1]} slots does not fit {slots} prefix slots and the "
                         f"{grid[0]} x {grid[1]} grid")
    return table[0, slots:].float(), grid


@torch.no_grad()
def position_embedding_similarity(model: nn.Module) -> torch.Tensor:
    """Cosine similarity of each patch's position embedding with every other: gh x gw x gh x gw.

    Entry [r, c] is the similarity map of patch (r, c), the tile the paper draws at row r, column c (the query
    patch's row of the similarity matrix). Prefix slots (class, distillation, registers) are excluded. A vitlens
    model moved with ``set_img_size`` is read at its new grid (interpolated table).

    Args:
        model: a vitlens ViT or a timm ViT with absolute position embeddings (see :func:`position_table`).
    """
    table, (gh, gw) = position_table(model)
    unit = F.normalize(table, dim=-1)
    return (unit @ unit.T).reshape(gh, gw, gh, gw)
