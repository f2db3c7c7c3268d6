"""Position-embedding similarity (paper Fig. 7 centre)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..models.vit import VisionTransformer


@torch.no_grad()
def position_embedding_similarity(model: VisionTransformer) -> torch.Tensor:
    """Cosine similarity of each patch's position embedding with every other: gh x gw x gh x gw.

    Entry [r, c] is the similarity map of patch (r, c), the tile the paper draws at row r, column c. The class
    slot is excluded. A model moved with ``set_img_size`` is read at its new grid (interpolated table).

    Args:
        model: a vitlens ViT.
    """
    table = model.pos_embed[0, model.num_prefix_tokens:].float()  # gh*gw x D
    unit = F.normalize(table, dim=-1)
    gh, gw = model.grid_size
    return (unit @ unit.T).reshape(gh, gw, gh, gw)
