"""Multi-head self-attention (paper eq. 2), fused unless a capture asks for the probabilities."""
from __future__ import annotations

from contextvars import ContextVar

import torch
import torch.nn.functional as F
from torch import nn

# The recorders active in the current thread / asyncio task (see vitlens.capture). A ContextVar, not a
# module flag, so two captures in two threads (two Streamlit sessions sharing one model) never mix.
ACTIVE_RECORDERS: ContextVar[tuple] = ContextVar("vitlens_active_recorders", default=())


class Attention(nn.Module):
    """MSA with a fused qkv projection; state-dict names as timm (``qkv``, ``proj``).

    Args:
        dim: token width D.
        num_heads: number of heads; D must divide evenly.
        qkv_bias: bias on the qkv projection (the paper's Dense layers have one).
        attn_drop: dropout on the attention probabilities.
        proj_drop: dropout after the output projection.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        recorder = None if torch.compiler.is_compiling() else _recorder_for(self)
        if recorder is None:
            x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop.p if self.training else 0.0)
        else:
            # Materialise softmax(q k^T / sqrt(d)) only for the layers a capture asked for.
            attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
            attn = recorder.record_attention(self, attn)
            x = self.attn_drop(attn) @ v
        x = x.transpose(1, 2).reshape(B, N, C)
        return self.proj_drop(self.proj(x))


def _recorder_for(module: nn.Module):
    for recorder in ACTIVE_RECORDERS.get():
        if recorder.wants(module):
            return recorder
    return None
