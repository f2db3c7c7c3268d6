"""The Vision Transformer of Dosovitskiy et al. (2020), equations 1-4, with timm's state-dict names."""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Literal, Sequence

import torch
from timm.layers import trunc_normal_
from torch import nn

from .block import Block, LayerNorm, low_precision_dtype
from .patch_embed import HybridEmbed, PatchEmbed
from .pos_embed import ResizeMode, resize_pos_embed

Pool = Literal["token", "gap"]


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


class VisionTransformer(nn.Module):
    """ViT: z0 = [x_class; x_p E] + E_pos; L pre-norm encoder layers; y = LN(z_L^0); head(y).

    Args:
        img_size: input resolution (int or (H, W)).
        patch_size: P; for the hybrid, the patch size on the CNN feature map (the paper uses 1).
        in_chans: image channels.
        num_classes: classifier outputs; 0 gives the pooled representation.
        embed_dim: token width D (Table 1 "hidden size").
        depth: encoder layers L.
        num_heads: attention heads.
        mlp_dim: hidden width of the MLP.
        representation_size: width of the pre-training head's tanh hidden layer; None for none.
        pool: ``"token"`` (class token) or ``"gap"`` (mean of all tokens after the final LayerNorm,
            no class token).
        dropout: dropout after the position add and inside each block.
        attn_dropout: dropout on attention probabilities.
        drop_path: stochastic depth, linearly increasing to this rate over depth.
        dynamic_img_size: accept any input size that is a multiple of P, interpolating E_pos per call.
        backbone_layers: ResNetV2 stages for the hybrid (e.g. (3, 4, 9)); None for plain patches.
        low_precision_residual: under bf16 autocast, carry the residual stream (the tokens between blocks) in bf16
            and run the LayerNorms in bf16, instead of float32 (autocast's default for LayerNorm makes the whole
            stream float32). The step's memory-bound part moves fewer bytes: ViT-B/16 trains 5 % faster on an H200,
            compiled. Off by default: the paper's models carry a float32 stream. No effect without bf16 autocast
            (float16's range is too small for the stream); the weights and state dict are the same either way.
    """

    def __init__(self, img_size: int | Sequence[int] = 224, patch_size: int = 16, in_chans: int = 3,
                 num_classes: int = 1000, embed_dim: int = 768, depth: int = 12, num_heads: int = 12,
                 mlp_dim: int = 3072, representation_size: int | None = None, pool: Pool = "token",
                 dropout: float = 0.0, attn_dropout: float = 0.0, drop_path: float = 0.0,
                 dynamic_img_size: bool = False, backbone_layers: Sequence[int] | None = None,
                 low_precision_residual: bool = False) -> None:
        super().__init__()
        if pool not in ("token", "gap"):
            raise ValueError(f"pool must be 'token' or 'gap', got {pool!r}")
        self.config: dict[str, Any] = dict(
            img_size=_pair(img_size), patch_size=patch_size, in_chans=in_chans, num_classes=num_classes,
            embed_dim=embed_dim, depth=depth, num_heads=num_heads, mlp_dim=mlp_dim,
            representation_size=representation_size, pool=pool, dropout=dropout, attn_dropout=attn_dropout,
            drop_path=drop_path, dynamic_img_size=dynamic_img_size,
            backbone_layers=tuple(backbone_layers) if backbone_layers else None,
            low_precision_residual=low_precision_residual)
        self.in_chans = in_chans
        self.embed_dim = embed_dim
        self.pool = pool
        self.dynamic_img_size = dynamic_img_size
        self.low_precision_residual = low_precision_residual
        self.num_prefix_tokens = 1 if pool == "token" else 0

        if backbone_layers:
            self.patch_embed: nn.Module = HybridEmbed(tuple(backbone_layers), patch_size, in_chans, embed_dim)
        else:
            self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.patch_size: int = self.patch_embed.patch_size  # pixels per token side, hybrid included
        self.img_size = self._checked_img_size(img_size)
        self.grid_size = (self.img_size[0] // self.patch_size, self.img_size[1] // self.patch_size)

        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if pool == "token" else None
        num_pos = self.num_prefix_tokens + self.grid_size[0] * self.grid_size[1]
        self.pos_embed = nn.Parameter(torch.zeros(1, num_pos, embed_dim))
        self.pos_drop = nn.Dropout(dropout)
        # stochastic depth rising linearly 0 .. drop_path, as timm; in Python, not torch.linspace(...).tolist(),
        # which cannot run under torch.device("meta") (shape checks of the large configs without their memory)
        rates = [drop_path * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_dim, dropout, attn_dropout, rate, low_precision_residual)
            for rate in rates)
        self.norm = LayerNorm(embed_dim, low_precision_residual)
        self.pre_logits: nn.Module = nn.Identity()
        if representation_size:
            self.pre_logits = nn.Sequential(OrderedDict(
                fc=nn.Linear(embed_dim, representation_size), act=nn.Tanh()))
        self.num_features = representation_size or embed_dim
        self.head: nn.Module = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
        self.data_config: dict[str, Any] = dict(
            input_size=(in_chans, *self.img_size), mean=(0.5,) * in_chans, std=(0.5,) * in_chans,
            interpolation="bicubic", crop_pct=1.0)
        self._init_weights()

    def _init_weights(self) -> None:
        trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)
        for name, m in self.named_modules():
            if isinstance(m, nn.Linear) and not name.startswith("patch_embed"):
                trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        if isinstance(self.head, nn.Linear):  # official code: the head kernel starts at zero
            nn.init.zeros_(self.head.weight)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Parameters timm's ``create_optimizer_v2`` keeps out of weight decay (with all biases and norms)."""
        return {"pos_embed", "cls_token"}

    # ---- resolution -------------------------------------------------------------------------------
    def _checked_img_size(self, img_size: int | Sequence[int]) -> tuple[int, int]:
        size = _pair(img_size)
        if size[0] % self.patch_size or size[1] % self.patch_size:
            raise ValueError(f"image size {size} is not a multiple of the patch size {self.patch_size}; "
                             f"use e.g. {tuple(max(1, s // self.patch_size) * self.patch_size for s in size)}")
        return size

    def set_img_size(self, img_size: int | Sequence[int], mode: ResizeMode = "bicubic") -> None:
        """Move the model to a new input resolution, keeping P (longer sequence, paper section 3.2).

        The position embeddings are 2-D interpolated on the patch grid; the class slot is unchanged.
        """
        size = self._checked_img_size(img_size)
        grid = (size[0] // self.patch_size, size[1] // self.patch_size)
        new = resize_pos_embed(self.pos_embed.data, grid, old_grid=self.grid_size,
                               num_prefix_tokens=self.num_prefix_tokens, mode=mode)
        self.pos_embed = nn.Parameter(new, requires_grad=self.pos_embed.requires_grad)
        self.img_size, self.grid_size = size, grid
        self.config["img_size"] = size
        self.data_config["input_size"] = (self.in_chans, *size)

    def reset_head(self, num_classes: int) -> None:
        """Fine-tuning head (paper section 3.2): drop the pre-training head, representation layer
        included, and attach one zero-initialised linear layer."""
        device = self.pos_embed.device
        self.pre_logits = nn.Identity()
        self.num_features = self.embed_dim
        self.head = nn.Linear(self.embed_dim, num_classes, device=device) if num_classes else nn.Identity()
        if num_classes:
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)
        self.config.update(num_classes=num_classes, representation_size=None)

    # ---- forward, in the order of the equations ----------------------------------------------------
    def _check_input(self, x: torch.Tensor) -> tuple[int, int]:
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"expected images of shape B x {self.in_chans} x H x W, got {tuple(x.shape)}; "
                             f"convert the channels (e.g. grayscale to RGB) or build the model with "
                             f"in_chans={x.shape[1] if x.ndim == 4 else '?'}")
        H, W = x.shape[-2:]
        if (H, W) != self.img_size:
            if not self.dynamic_img_size:
                raise ValueError(f"input size {(H, W)} differs from the model's {self.img_size}; resize the "
                                 f"image, call model.set_img_size({(H, W)}) or build with dynamic_img_size=True")
            if H % self.patch_size or W % self.patch_size:
                raise ValueError(f"input size {(H, W)} is not a multiple of the patch size {self.patch_size}")
        return H // self.patch_size, W // self.patch_size

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images B x C x H x W to the final normalised tokens B x N x D."""
        grid = self._check_input(x)
        x = self.patch_embed(x)  # x_p^i E
        pos_embed = self.pos_embed
        if grid != self.grid_size:
            pos_embed = resize_pos_embed(pos_embed, grid, old_grid=self.grid_size,
                                         num_prefix_tokens=self.num_prefix_tokens)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # [x_class; ...]
        x = self.pos_drop(x + pos_embed)  # + E_pos (eq. 1), then dropout
        if self.low_precision_residual and (dtype := low_precision_dtype(x.device.type)) is not None:
            x = x.to(dtype)
        for blk in self.blocks:  # eq. 2-3
            x = blk(x)
        return self.norm(x)  # LN(z_L)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool (class token z_L^0, or the mean of all tokens for 'gap'), then the head (eq. 4)."""
        x = x[:, 0] if self.pool == "token" else x.mean(dim=1)
        x = self.pre_logits(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    @property
    def num_classes(self) -> int:
        return self.head.out_features if isinstance(self.head, nn.Linear) else 0

    @property
    def is_hybrid(self) -> bool:
        return isinstance(self.patch_embed, HybridEmbed)
