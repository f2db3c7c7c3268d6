"""Effective receptive field (Luo, Li, Urtasun, Zemel 2016): |d y_centre / d x| per layer.

The gradient signal is 1 at the centre unit of a layer's output map (all channels) and 0 elsewhere; its
back-propagated magnitude on the input, summed over input channels and averaged over images, is the ERF. Luo et
al. showed it is roughly Gaussian and much smaller than the theoretical receptive field. It is summarised here as
the radius (pixels, from the centre unit's position on the input) of the smallest disc holding 50 % / 90 % of its
mass. For a ViT every block's theoretical field is the whole image; the ERF shows how much of it is used, the
gradient-based counterpart of the mean attention distance (paper Fig. 7 right).
"""
from __future__ import annotations

import logging
import math
from typing import Sequence

import torch
from torch import nn

from .maps import layer_maps

log = logging.getLogger("vitlens")
QUANTILES = (0.5, 0.9)


def unit_centre(map_size: Sequence[int], input_size: Sequence[int]) -> tuple[float, float]:
    """Input-pixel coordinates (row, col) of the centre unit (h // 2, w // 2) of an h x w map over an H x W input.

    Unit i of a map with stride r = H / h covers pixels [i r, (i + 1) r), so its centre is (i + 0.5) r - 0.5.
    """
    (h, w), (H, W) = map_size[-2:], input_size[-2:]
    return (h // 2 + 0.5) * H / h - 0.5, (w // 2 + 0.5) * W / w - 0.5


def mass_radius(erf: torch.Tensor, centre: Sequence[float], quantiles: Sequence[float] = QUANTILES) -> list[float]:
    """Radii of the smallest discs about ``centre`` holding each quantile of the ERF's mass.

    Args:
        erf: H x W non-negative map.
        centre: (row, col) in pixels.
        quantiles: mass fractions in (0, 1].

    Returns:
        One radius in pixels per quantile: the distance of the pixel at which the cumulative mass, pixels
        sorted by distance, first reaches the fraction.
    """
    H, W = erf.shape
    rows, cols = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64),
                                indexing="ij")
    dist = torch.hypot(rows - centre[0], cols - centre[1]).flatten()
    order = dist.argsort()
    cumulative = erf.double().flatten()[order].cumsum(0)
    if cumulative[-1] <= 0:
        raise ValueError("the ERF is zero everywhere: the centre unit does not depend on the input")
    cumulative = cumulative / cumulative[-1]
    fractions = torch.tensor(list(quantiles), dtype=torch.float64)
    index = torch.searchsorted(cumulative, fractions - 1e-12).clamp(max=len(order) - 1)
    return dist[order][index].tolist()


def effective_receptive_field(model: nn.Module, images: torch.Tensor, *, layers: Sequence[str] | None = None,
                              batch_size: int = 16) -> tuple[dict[str, torch.Tensor], dict[str, tuple[float, float]]]:
    """Mean over images of |d(sum_c y_c at the centre unit) / d x|, summed over input channels, per layer.

    Images are independent in eval mode, so one backward pass of the batch sum gives every image's gradient.

    Args:
        model: a vitlens ViT (blocks), a timm CNN (stages) or any module whose ``layers`` are given.
        images: N x C x H x W in the model's input space (Luo et al. also use random noise).
        layers: layer names; all ViT blocks / CNN stages when None.
        batch_size: images per forward pass.

    Returns:
        layer -> H x W ERF (float64, on the CPU), in network order; layer -> the centre unit's (row, col) on
        the input (see :func:`unit_centre`).
    """
    model.eval()
    device = next(model.parameters()).device
    total: dict[str, torch.Tensor] = {}
    centres: dict[str, tuple[float, float]] = {}
    for x in images.split(batch_size):
        x = x.to(device).detach().requires_grad_(True)
        maps, _ = layer_maps(model, x, layers)
        for k, (name, m) in enumerate(maps.items()):
            centre_signal = m[:, :, m.shape[-2] // 2, m.shape[-1] // 2].sum()
            (grad,) = torch.autograd.grad(centre_signal, x, retain_graph=k < len(maps) - 1)
            erf = grad.abs().sum(dim=(0, 1)).double().cpu()
            total[name] = total[name] + erf if name in total else erf
            centres[name] = unit_centre(m.shape, x.shape)
    if not total:
        raise ValueError("effective_receptive_field got no images")
    return {name: erf / len(images) for name, erf in total.items()}, centres


def erf_probe(model: nn.Module, images: torch.Tensor, *, layers: Sequence[str] | None = None,
              quantiles: Sequence[float] = QUANTILES, batch_size: int = 16) -> dict[str, object]:
    """ERF per layer and its 50 % / 90 % mass radii.

    Args:
        model: as for :func:`effective_receptive_field`.
        images: N x C x H x W in the model's input space.
        layers: layer names; all when None.
        quantiles: mass fractions for the radii.
        batch_size: images per forward pass.

    Returns:
        ``layers``; ``radius`` (quantile as a string, e.g. ``"0.5"`` -> per-layer radii in pixels, NaN for a layer
        whose ERF is zero); ``zero`` (those layers: a centre unit dead on every image, e.g. after a ReLU, has no
        receptive field to measure, and the other layers still do); ``centre`` (per layer, the centre unit's input
        position); ``erf`` (layer -> H x W tensor); ``count``.
    """
    erfs, centres = effective_receptive_field(model, images, layers=layers, batch_size=batch_size)
    zero = [n for n in erfs if not erfs[n].any()]
    if zero:
        log.warning("the centre unit of %s does not depend on the input (zero gradient on all %d images): no ERF "
                    "radius there", ", ".join(zero), len(images))
    radii = {n: [math.nan] * len(quantiles) if n in zero else mass_radius(erfs[n], centres[n], quantiles)
             for n in erfs}
    return dict(layers=list(erfs), radius={str(q): [radii[n][i] for n in erfs] for i, q in enumerate(quantiles)},
                zero=zero, centre={n: list(c) for n, c in centres.items()}, erf=erfs, count=len(images))
