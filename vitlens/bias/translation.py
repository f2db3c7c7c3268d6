"""Translation: prediction consistency and feature equivariance error under shifts (Zhang 2019).

A representation F~ is shift-equivariant when Shift(F~(X)) = F~(Shift(X)) and a classifier is shift-invariant
when its prediction ignores the shift. Zhang (2019, "Making Convolutional Networks Shift-Invariant Again")
measures the first with the cosine distance between the two sides (the internal feature distance) and the
second with classification consistency, the fraction of images whose top-1 class a shift leaves unchanged.

Shifts are circular (``torch.roll``), as in Zhang's equivariance test, so that nothing enters or leaves the image
and an exactly equivariant architecture scores exactly zero. A layer of stride r can only follow a shift by a
multiple of r; to compare at every shift, both maps are brought to input resolution by nearest upsampling (each
unit covers its r x r pixels) before the shift, which at multiples of r equals shifting the map by shift / r units.
For a ViT, r is the patch size P: a whole-patch shift permutes the patches exactly, so only the position
embeddings can break equivariance; a sub-patch shift also changes what each patch contains.
"""
from __future__ import annotations

from typing import Literal, Sequence

import torch
from torch import nn

from ..models.layout import is_vit, token_layout
from .maps import layer_maps

Axis = Literal["x", "y", "xy"]


def shift_images(images: torch.Tensor, shift: int, axis: Axis = "xy") -> torch.Tensor:
    """Circular shift of ``shift`` pixels down (``y``), right (``x``) or both (``xy``, diagonal)."""
    dy = shift if "y" in axis else 0
    dx = shift if "x" in axis else 0
    return torch.roll(images, shifts=(dy, dx), dims=(-2, -1))


def _cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """1 - cos between the channel vectors at each position: B x C x ... -> B x ...; two zero vectors count as equal."""
    dot = (a * b).sum(dim=1)
    norms = a.norm(dim=1) * b.norm(dim=1)
    both_zero = (a.abs().amax(dim=1) == 0) & (b.abs().amax(dim=1) == 0)
    cos = torch.where(both_zero, torch.ones_like(dot), dot / norms.clamp_min(torch.finfo(norms.dtype).tiny))
    return (1 - cos).clamp_min(0)  # rounding can leave cos a hair above 1


def feature_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Zhang's internal feature distance: mean over positions of the cosine distance 1 - cos(a_p, b_p)
    between the channel vectors, per image.

    Two zero vectors (a ReLU unit off in both maps) count as equal, distance 0, rather than undefined.

    Args:
        a, b: B x C x H x W maps.

    Returns:
        B distances in [0, 2].
    """
    return _cosine_distance(a, b).flatten(1).mean(dim=1)


def _unit_pairs(size: int, units: int, shift: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Along one axis of ``size`` pixels covered by ``units`` map units (pixel p belongs to unit p * units // size):
    the distinct (unit of the shifted reference, unit of the shifted input's map) pairs over all pixels, and the
    share of pixels each pair covers."""
    p = torch.arange(size)
    ref, cur = (p - shift) % size * units // size, p * units // size
    counts = torch.bincount(ref * units + cur, minlength=units * units)
    pairs = counts.nonzero().squeeze(1)
    return pairs // units, pairs % units, counts[pairs].double() / size


def equivariance_error(reference: torch.Tensor, shifted: torch.Tensor, shift: int, input_size: Sequence[int],
                       axis: Axis = "xy") -> torch.Tensor:
    """d(Shift(F~(X)), F~(Shift(X))) per image, both maps compared at input resolution.

    Each unit of an h x w map covers its block of input pixels (pixel p belongs to unit p * h // H), so Shift(F~(X))
    is the map spread over the pixels and rolled by the input shift, and d is :func:`feature_distance`'s mean over
    the H x W pixels. Only a few unit pairs occur along each axis (at most 2 per unit), so the mean is computed over
    those pairs, weighted by how many pixels each covers, instead of over upsampled copies of the maps: the same
    number, 4-50x less work for patch- and stage-sized units.

    Args:
        reference: F~(X), B x C x h x w.
        shifted: F~(Shift(X)), same shape.
        shift: the input shift in pixels.
        input_size: (H, W) of the input.
        axis: the shift's direction, as in :func:`shift_images`.
    """
    (H, W), (h, w) = tuple(input_size), reference.shape[-2:]
    ref_y, cur_y, weight_y = _unit_pairs(H, h, shift if "y" in axis else 0)
    ref_x, cur_x, weight_x = _unit_pairs(W, w, shift if "x" in axis else 0)
    ref_y, cur_y, ref_x, cur_x = (i.to(reference.device) for i in (ref_y, cur_y, ref_x, cur_x))
    d = _cosine_distance(reference[:, :, ref_y][..., ref_x], shifted[:, :, cur_y][..., cur_x])
    weights = (weight_y[:, None] * weight_x[None, :]).to(d)
    return (d * weights).sum(dim=(1, 2))


def _stride(model: nn.Module, maps: dict[str, torch.Tensor], input_size: Sequence[int]) -> float:
    """Pixels per unit of the coarsest map: the patch size for a ViT, the output stride for a CNN."""
    if is_vit(model):
        return float(token_layout(model).square_patch)
    return max(input_size[-1] / m.shape[-1] for m in maps.values())


@torch.no_grad()
def translation_probe(model: nn.Module, images: torch.Tensor, shifts: Sequence[int] | None = None, *,
                      axis: Axis = "xy", layers: Sequence[str] | None = None,
                      batch_size: int = 64) -> dict[str, object]:
    """Consistency and per-layer equivariance error as curves over the shift size.

    Args:
        model: a ViT, a timm CNN, or any module whose ``layers`` are given (see :func:`layer_maps`).
        images: N x C x H x W in the model's input space.
        shifts: shift sizes in pixels; default 0 .. 2 x stride, so whole-unit (whole-patch) and sub-unit shifts
            alternate.
        axis: ``"xy"`` (diagonal), ``"x"`` or ``"y"``.
        layers: layer names; all ViT blocks / CNN stages when None.
        batch_size: images per forward pass.

    Returns:
        ``shifts``; ``stride`` (pixels per unit of the coarsest map: P for a ViT); ``whole_patch`` (per shift,
        a multiple of the stride); ``consistency`` (per shift, fraction of images whose argmax is unchanged);
        ``equivariance`` (layer -> per-shift mean feature distance); ``layer_strides``; ``count``.
    """
    model.eval()
    device = next(model.parameters()).device
    size = tuple(images.shape[-2:])
    agree: torch.Tensor | None = None
    dist: dict[str, torch.Tensor] = {}
    stride = 1.0
    layer_strides: dict[str, float] = {}
    for x in images.split(batch_size):
        x = x.to(device)
        ref_maps, ref_logits = layer_maps(model, x, layers)
        ref_maps = {n: m.double() for n, m in ref_maps.items()}  # distances in float64, like every shifted map
        stride = _stride(model, ref_maps, size)
        layer_strides = {n: size[-1] / m.shape[-1] for n, m in ref_maps.items()}
        if shifts is None:
            shifts = list(range(int(2 * stride) + 1))
        if agree is None:
            agree = torch.zeros(len(shifts), dtype=torch.float64)
            dist = {n: torch.zeros(len(shifts), dtype=torch.float64) for n in ref_maps}
        for k, s in enumerate(shifts):
            maps, logits = layer_maps(model, shift_images(x, s, axis), layers)
            agree[k] += (logits.argmax(-1) == ref_logits.argmax(-1)).sum().item()
            for n, m in maps.items():
                dist[n][k] += equivariance_error(ref_maps[n], m.double(), s, size, axis).sum().item()
    if agree is None or shifts is None:
        raise ValueError("translation_probe got no images")
    n = len(images)
    return dict(shifts=list(shifts), stride=stride, whole_patch=[float(s) % stride == 0 for s in shifts],
                consistency=(agree / n).tolist(), equivariance={k: (v / n).tolist() for k, v in dist.items()},
                layer_strides=layer_strides, count=n)
