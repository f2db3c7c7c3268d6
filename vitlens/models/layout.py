"""Token layout: which tokens a ViT's sequence holds, in its own order, and where the patches sit on the image.

Every analysis that maps tokens back to the image takes the layout from :func:`token_layout`, so none assumes one
class token: DeiT's distillation token, DINOv2's registers and SigLIP's missing class token each change it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import torch
from torch import nn

from .vit import VisionTransformer

Pool = Literal["token", "avg", "map", "none"]
SUPPORTED = ("vitlens VisionTransformer; timm VisionTransformer (vit_*, deit_*, deit3_*, .dino, .mae, _clip_, "
             "_siglip_, _dinov2, _reg4_dinov2), VisionTransformerDistilled (deit_*_distilled_*), Eva (eva02_*, "
             "vit_*_rope_*) and Beit (beit_*)")


def _timm_vit_classes() -> tuple[type, ...]:
    from timm.models.beit import Beit
    from timm.models.eva import Eva
    from timm.models.vision_transformer import VisionTransformer as TimmViT

    return TimmViT, Eva, Beit  # VisionTransformerDistilled is a VisionTransformer


def is_vit(model: nn.Module) -> bool:
    """Whether ``model`` is a ViT with global attention over its tokens (:data:`SUPPORTED`)."""
    return isinstance(model, (VisionTransformer, *_timm_vit_classes()))


def blocks_of(model: nn.Module) -> nn.ModuleList:
    """The transformer blocks of a ViT with global attention (:data:`SUPPORTED`); a clear TypeError for any other
    model (hierarchical or windowed attention such as Swin, and CNNs, have no N x N maps over the image)."""
    if is_vit(model):
        return model.blocks
    raise TypeError(f"needs a ViT with global attention, got {type(model).__name__}; supported: {SUPPORTED}. "
                    f"Hierarchical or windowed attention (Swin, MaxViT...) and CNNs have no such maps")


@dataclass(frozen=True)
class TokenLayout:
    """The sequence of a ViT: prefix tokens first (their names in order), then the patch grid row by row.

    Attributes:
        prefix: names of the leading tokens with no place on the grid: ``("cls",)``, ``("cls", "dist")``,
            ``("cls", "reg0", ..., "reg3")``, or ``()`` (SigLIP).
        grid: (gh, gw) patches for the input size the layout was made for.
        patch_size: (ph, pw) pixels per patch (the hybrid's: per token, ResNet stride included).
        pool: what the head reads: ``"token"`` (the class token), ``"avg"`` (the mean of the patch tokens),
            ``"map"`` (an attention-pooling head, SigLIP) or ``"none"``.
    """

    prefix: tuple[str, ...]
    grid: tuple[int, int]
    patch_size: tuple[int, int]
    pool: Pool

    @property
    def num_prefix_tokens(self) -> int:
        return len(self.prefix)

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def num_tokens(self) -> int:
        return self.num_prefix_tokens + self.num_patches

    @property
    def square_patch(self) -> int:
        """P for square P x P patches (every family here); a ValueError names the shape otherwise."""
        if self.patch_size[0] != self.patch_size[1]:
            raise ValueError(f"patches of {self.patch_size[0]} x {self.patch_size[1]} pixels are not square")
        return self.patch_size[0]

    @property
    def has_class_token(self) -> bool:
        return "cls" in self.prefix

    def patches(self, x: torch.Tensor, dim: int = -1) -> torch.Tensor:
        """The patch part of a token axis of ``x`` (e.g. the keys of an attention map)."""
        if x.shape[dim] != self.num_tokens:
            raise ValueError(f"{x.shape[dim]} tokens do not match the layout: {self.num_prefix_tokens} prefix "
                             f"({', '.join(self.prefix) or 'none'}) + {self.grid[0]} x {self.grid[1]} patches")
        return x.narrow(dim, self.num_prefix_tokens, self.num_patches)

    def query(self, x: torch.Tensor) -> torch.Tensor:
        """The row of a ... x N x N token-to-token matrix whose keys map onto the image: the class token's row, or,
        with no class token (SigLIP, global-average-pooled models), the mean of the patch tokens' rows (each patch
        asking in turn; registers never count as queries). ... x N."""
        if self.has_class_token:
            return x[..., self.prefix.index("cls"), :]
        return self.patches(x, dim=-2).mean(dim=-2)

    def to_grid(self, x: torch.Tensor) -> torch.Tensor:
        """... x (gh * gw) values over the patches, last axis, as ... x gh x gw (row-major, as the tokens)."""
        return x.reshape(*x.shape[:-1], *self.grid)


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _timm_prefix(model: nn.Module) -> tuple[str, ...]:
    """timm concatenates the class token, then the distillation token or the registers, before the patches."""
    prefix = ("cls",) if getattr(model, "cls_token", None) is not None else ()
    if getattr(model, "dist_token", None) is not None:
        prefix += ("dist",)
    reg = getattr(model, "reg_token", None)
    return prefix + tuple(f"reg{i}" for i in range(reg.shape[1] if reg is not None else 0))


_TIMM_POOLS = {"token": "token", "avg": "avg", "avgmax": "avg", "max": "avg", "map": "map", "": "none"}


def token_layout(model: nn.Module, img_size: int | Sequence[int] | None = None) -> TokenLayout:
    """The token layout of a vitlens ViT or a timm ViT (the families :func:`vitlens.capture` supports).

    Args:
        model: the ViT.
        img_size: the input size (H, W) the grid is for; the model's own when None (for models with dynamic
            sizes, pass the size of the images you feed).

    Example:
        >>> token_layout(timm.create_model("vit_small_patch14_reg4_dinov2")).prefix
        ('cls', 'reg0', 'reg1', 'reg2', 'reg3')
    """
    if isinstance(model, VisionTransformer):
        patch = (model.patch_size, model.patch_size)
        prefix, pool = (("cls",), "token") if model.pool == "token" else ((), "avg")
    else:
        blocks_of(model)  # the families capture supports; a clear TypeError for any other
        pe = model.patch_embed
        patch = (_pair(pe.img_size)[0] // pe.grid_size[0], _pair(pe.img_size)[1] // pe.grid_size[1])
        prefix, pool = _timm_prefix(model), _TIMM_POOLS.get(getattr(model, "global_pool", "token"), "none")
        if len(prefix) != model.num_prefix_tokens:
            raise ValueError(f"{type(model).__name__}: {model.num_prefix_tokens} prefix tokens, but found {prefix}")
    size = _pair(img_size) if img_size is not None else _model_size(model)
    if size[0] % patch[0] or size[1] % patch[1]:
        raise ValueError(f"input size {size} is not a multiple of the patch size {patch}")
    return TokenLayout(prefix, (size[0] // patch[0], size[1] // patch[1]), patch, pool)


def _model_size(model: nn.Module) -> tuple[int, int]:
    if isinstance(model, VisionTransformer):
        return model.img_size
    return _pair(model.patch_embed.img_size)
