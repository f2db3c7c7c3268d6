"""Occlusion and patch shuffling (Naseer et al. 2021, "Intriguing Properties of Vision Transformers").

Random PatchDrop sets a random fraction of the image's patches to a constant; patch shuffling cuts the image into
a g x g grid and permutes the pieces, destroying their spatial order but not their content. Naseer et al. found
ViTs far more robust than CNNs to both, and that a ViT's accuracy survives shuffling at its own patch grid.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..models.layout import is_vit, token_layout

DROP_FRACTIONS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
SHUFFLE_GRIDS = (1, 2, 4, 7, 14)  # divide both 28 (Fashion-MNIST) and 224 (ImageNet)


def _check_divides(images: torch.Tensor, n: int, what: str) -> None:
    H, W = images.shape[-2:]
    if n < 1 or H % n or W % n:
        raise ValueError(f"{what} {n} does not divide the {H} x {W} image; choose a divisor of both sides")


def _to_pieces(images: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """B x C x H x W to B x (rows * cols) x C x h x w, pieces in row-major order."""
    B, C, H, W = images.shape
    x = images.reshape(B, C, rows, H // rows, cols, W // cols)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(B, rows * cols, C, H // rows, W // cols)


def _from_pieces(pieces: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """Inverse of :func:`_to_pieces`."""
    B, _, C, h, w = pieces.shape
    return pieces.reshape(B, rows, cols, C, h, w).permute(0, 3, 1, 4, 2, 5).reshape(B, C, rows * h, cols * w)


def shuffle_patches(images: torch.Tensor, grid: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Cut each image into a ``grid`` x ``grid`` set of pieces and permute them, a new permutation per image.

    Args:
        images: B x C x H x W; ``grid`` must divide H and W.
        grid: pieces per side (1 leaves the image unchanged).
        generator: for repeatable permutations.
    """
    _check_divides(images, grid, "shuffle grid")
    pieces = _to_pieces(images, grid, grid)
    perm = torch.rand(pieces.shape[:2], generator=generator).argsort(dim=1).to(images.device)
    index = perm.view(*perm.shape, 1, 1, 1).expand_as(pieces)
    return _from_pieces(pieces.gather(1, index), grid, grid)


def drop_patches(images: torch.Tensor, patch_size: int, fraction: float, generator: torch.Generator | None = None,
                 fill: float = 0.0) -> torch.Tensor:
    """Random PatchDrop: set round(fraction x N) of the N patches of each image, chosen at random, to ``fill``.

    Args:
        images: B x C x H x W in the model's input space; ``patch_size`` must divide H and W.
        patch_size: side of the dropped squares (the ViT's P, so that a drop removes whole tokens).
        fraction: share of patches dropped, 0 .. 1.
        generator: for repeatable masks.
        fill: value written into dropped patches; 0 in a normalised input space is the dataset mean.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    _check_divides(images, patch_size, "patch size")
    gh, gw = images.shape[-2] // patch_size, images.shape[-1] // patch_size
    n, k = gh * gw, round(fraction * gh * gw)
    ranks = torch.rand(images.shape[0], n, generator=generator).argsort(dim=1).argsort(dim=1)
    mask = (ranks < k).view(-1, 1, gh, gw).to(images.device)  # exactly k patches per image
    mask = mask.repeat_interleave(patch_size, dim=2).repeat_interleave(patch_size, dim=3)
    return images.masked_fill(mask, fill)


@torch.no_grad()
def _accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> int:
    device = next(model.parameters()).device
    return int((model(images.to(device)).argmax(-1).cpu() == labels).sum())


@torch.no_grad()
def occlusion_probe(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
                    patch_size: int | None = None, drop_fractions: Sequence[float] = DROP_FRACTIONS,
                    shuffle_grids: Sequence[int] = SHUFFLE_GRIDS, fill: float = 0.0, seed: int = 0,
                    batch_size: int = 128) -> dict[str, object]:
    """Top-1 accuracy under random PatchDrop (per fraction) and under patch shuffling (per grid size).

    Every model sees the same masks and permutations for the same ``seed``, ``images`` and ``patch_size``.

    Args:
        model: a ViT or a timm CNN, in eval mode.
        images: N x C x H x W in the model's input space.
        labels: N class indices.
        patch_size: PatchDrop square side; the ViT's patch size when None (required for other models).
        drop_fractions: shares of patches dropped.
        shuffle_grids: pieces per side for shuffling; each must divide H and W.
        fill: value of dropped patches in the input space.
        seed: seeds the masks and permutations.
        batch_size: images per forward pass.

    Returns:
        ``drop`` (``fraction``, ``accuracy``), ``shuffle`` (``grid``, ``accuracy``), ``patch_size``, ``count``.
    """
    if patch_size is None:
        if not is_vit(model):
            raise ValueError("patch_size is needed for a CNN: pass the ViT's patch size so both see the same drops")
        patch_size = token_layout(model).square_patch
    model.eval()
    labels = torch.as_tensor(labels).cpu()
    drop_correct = [0] * len(drop_fractions)
    shuffle_correct = [0] * len(shuffle_grids)
    generator = torch.Generator().manual_seed(seed)
    for x, y in zip(images.split(batch_size), labels.split(batch_size)):
        for k, fraction in enumerate(drop_fractions):
            drop_correct[k] += _accuracy(model, drop_patches(x, patch_size, fraction, generator, fill), y)
        for k, grid in enumerate(shuffle_grids):
            shuffle_correct[k] += _accuracy(model, shuffle_patches(x, grid, generator), y)
    n = len(labels)
    if not n:
        raise ValueError("occlusion_probe got no images")
    return dict(drop=dict(fraction=list(drop_fractions), accuracy=[c / n for c in drop_correct]),
                shuffle=dict(grid=list(shuffle_grids), accuracy=[c / n for c in shuffle_correct]),
                patch_size=patch_size, count=n)
