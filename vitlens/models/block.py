"""One Transformer encoder layer, pre-norm (paper eq. 2 and 3)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp
from torch import nn

from .attention import Attention


def low_precision_dtype(device_type: str) -> torch.dtype | None:
    """bfloat16 when bf16 autocast is on, else None: what ``low_precision_residual`` carries the stream in.

    float16 autocast keeps the float32 stream: float16's range (max 65504) is too small for a residual stream."""
    if torch.is_autocast_enabled(device_type) and torch.get_autocast_dtype(device_type) == torch.bfloat16:
        return torch.bfloat16
    return None


class LayerNorm(nn.LayerNorm):
    """nn.LayerNorm (eps 1e-6) that, with ``low_precision``, runs in bf16 under bf16 autocast instead of float32.

    The same operations as timm's "fast norm" (``timm.layers.set_fast_norm``; the kernel still accumulates in
    float32), written here because timm's version has changed across releases (older ones act on CUDA autocast
    only). It lets the residual stream stay in bf16, see ``VisionTransformer(low_precision_residual=...)``.
    """

    def __init__(self, dim: int, low_precision: bool = False, **kwargs) -> None:
        super().__init__(dim, eps=1e-6, **kwargs)
        self.low_precision = low_precision

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = low_precision_dtype(x.device.type) if self.low_precision else None
        if dtype is None:
            return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        with torch.autocast(x.device.type, enabled=False):  # autocast would cast all three back to float32
            return F.layer_norm(x.to(dtype), self.normalized_shape, self.weight.to(dtype), self.bias.to(dtype),
                                self.eps)


class Block(nn.Module):
    """z' = MSA(LN(z)) + z;  z_out = MLP(LN(z')) + z'.

    Args:
        dim: token width D.
        num_heads: attention heads.
        mlp_dim: hidden width of the GELU MLP.
        dropout: dropout after the attention projection and after each MLP layer (official code).
        attn_dropout: dropout on the attention probabilities.
        drop_path: stochastic depth rate (not in the paper; common for training small data).
        low_precision_norm: LayerNorms in bf16 under bf16 autocast (see :class:`LayerNorm`); the model's
            ``low_precision_residual`` sets it.
    """

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, dropout: float = 0.0,
                 attn_dropout: float = 0.0, drop_path: float = 0.0, low_precision_norm: bool = False) -> None:
        super().__init__()
        self.norm1 = LayerNorm(dim, low_precision_norm)
        self.attn = Attention(dim, num_heads, attn_drop=attn_dropout, proj_drop=dropout)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = LayerNorm(dim, low_precision_norm)
        self.mlp = Mlp(dim, mlp_dim, act_layer=nn.GELU, drop=dropout)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.attn(self.norm1(x)))
        x = x + self.drop_path2(self.mlp(self.norm2(x)))
        return x
