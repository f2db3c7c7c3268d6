"""One Transformer encoder layer, pre-norm (paper eq. 2 and 3)."""
from __future__ import annotations

import torch
from timm.layers import DropPath, Mlp
from torch import nn

from .attention import Attention


class Block(nn.Module):
    """z' = MSA(LN(z)) + z;  z_out = MLP(LN(z')) + z'.

    Args:
        dim: token width D.
        num_heads: attention heads.
        mlp_dim: hidden width of the GELU MLP.
        dropout: dropout after the attention projection and after each MLP layer (official code).
        attn_dropout: dropout on the attention probabilities.
        drop_path: stochastic depth rate (not in the paper; common for training small data).
    """

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, dropout: float = 0.0,
                 attn_dropout: float = 0.0, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, attn_drop=attn_dropout, proj_drop=dropout)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, mlp_dim, act_layer=nn.GELU, drop=dropout)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.attn(self.norm1(x)))
        x = x + self.drop_path2(self.mlp(self.norm2(x)))
        return x
