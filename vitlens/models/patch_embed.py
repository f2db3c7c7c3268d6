"""Patch embedding x_p E (paper eq. 1): plain patches, or patches of a ResNet feature map (hybrid)."""
from __future__ import annotations

from functools import partial

import torch
from timm.layers import StdConv2dSame
from timm.models.resnetv2 import ResNetV2
from torch import nn


class PatchEmbed(nn.Module):
    """Split into P x P patches and project each linearly: a conv with kernel = stride = P.

    Args:
        patch_size: P in pixels.
        in_chans: image channels C.
        embed_dim: token width D.
    """

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size  # pixels per token side
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # B x N x D


class HybridEmbed(nn.Module):
    """Hybrid input (paper section 3.1): BiT ResNetV2 stages, then P x P patches of its feature map.

    The backbone is timm's ResNetV2 built exactly as timm's ``vit_base_r50_s16_*`` (GroupNorm,
    weight-standardised 'same' convs, no pre-activation), so its state dict is timm's
    ``patch_embed.backbone.*``.

    Args:
        layers: blocks per ResNet stage; (3, 4, 9) is the paper's R50 with stage 4 removed (stride 16).
        patch_size: patch size on the feature map (the paper uses 1).
        in_chans: image channels.
        embed_dim: token width D.
    """

    def __init__(self, layers: tuple[int, ...], patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.backbone = ResNetV2(
            layers=list(layers), num_classes=0, global_pool="", in_chans=in_chans, preact=False,
            stem_type="same", conv_layer=partial(StdConv2dSame, eps=1e-8))
        self.feature_stride = self.backbone.feature_info[-1]["reduction"]
        self.patch_size = patch_size * self.feature_stride  # pixels per token side
        self.proj = nn.Conv2d(self.backbone.num_features, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.backbone(x)).flatten(2).transpose(1, 2)
