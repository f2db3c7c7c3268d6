"""Deletion and insertion curves and their AUC (Petsiuk, Das & Saenko 2018, RISE): how fast the class score
falls when the pixels a saliency map ranks highest are removed, and how fast it rises when they are added."""
from __future__ import annotations

from typing import Callable, Literal

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import auc
from torchvision.transforms.functional import gaussian_blur

Mode = Literal["deletion", "insertion"]


def blurred(image: torch.Tensor, kernel_size: int = 11, sigma: float = 5.0) -> torch.Tensor:
    """RISE's insertion start: the image under a Gaussian blur (kernel 11, sigma 5 as in Petsiuk et al.)."""
    k = min(kernel_size, 2 * (min(image.shape[-2:]) // 2) - 1)  # an odd kernel no larger than the image
    return gaussian_blur(image, [k, k], [sigma, sigma])


@torch.no_grad()
def perturbation_curve(model: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, saliency: torch.Tensor,
                       target: int, *, mode: Mode = "deletion", steps: int = 20,
                       baseline: torch.Tensor | None = None, output: Literal["probability", "logit"] = "probability",
                       batch_size: int = 32) -> dict[str, np.ndarray | float]:
    """Class score while the most salient pixels are deleted from, or inserted into, the image.

    Pixels are ranked by ``saliency`` (upsampled bilinearly to the image size when coarser, e.g. a 14 x 14
    rollout map; ties keep raster order). At step k of ``steps`` the top round(k / steps * H * W) pixels, all
    channels, are switched: deletion replaces them in the image by the baseline, insertion copies them from the
    image into the baseline.

    Args:
        model: returns B x K logits.
        image: 1 x C x H x W (or C x H x W) in the model's input space.
        saliency: h x w map (higher = more important), any resolution.
        target: the class whose score is followed.
        mode: ``"deletion"`` or ``"insertion"``.
        steps: number of perturbation steps; the curve has steps + 1 points, fractions 0 .. 1.
        baseline: what pixels are switched with, image-shaped; zeros (the normalisation's mean) for deletion
            and :func:`blurred` for insertion when None, as in RISE.
        output: follow the softmax probability (RISE) or the raw logit.
        batch_size: perturbed images per forward pass.

    Returns:
        ``fractions`` (steps + 1), ``scores`` (steps + 1) and ``auc`` (trapezoid over the fractions: lower is
        better for deletion, higher for insertion).
    """
    if mode not in ("deletion", "insertion"):
        raise ValueError(f"mode must be 'deletion' or 'insertion', got {mode!r}")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    x = image[None] if image.ndim == 3 else image
    if x.shape[0] != 1:
        raise ValueError(f"perturbation_curve takes one image, got a batch of {x.shape[0]}")
    h, w = x.shape[-2:]
    if baseline is None:
        baseline = torch.zeros_like(x) if mode == "deletion" else blurred(x)
    baseline = baseline.to(x).expand_as(x)
    sal = saliency.to(torch.float64)
    if tuple(sal.shape[-2:]) != (h, w):
        sal = F.interpolate(sal.reshape(1, 1, *sal.shape[-2:]), size=(h, w), mode="bilinear", align_corners=False)
    order = torch.sort(sal.flatten(), descending=True, stable=True).indices.to(x.device)
    counts = torch.round(torch.linspace(0, h * w, steps + 1, dtype=torch.float64)).long()
    # rank of each pixel in the ordering: pixel p is switched at step k iff rank[p] < counts[k]
    rank = torch.empty(h * w, dtype=torch.long, device=x.device)
    rank[order] = torch.arange(h * w, device=x.device)
    start, end = (x, baseline) if mode == "deletion" else (baseline, x)
    scores = []
    for chunk in counts.to(x.device).split(batch_size):
        switched = (rank[None] < chunk[:, None]).view(-1, 1, h, w).to(x.dtype)
        logits = model(start * (1 - switched) + end * switched)
        values = logits.softmax(dim=-1) if output == "probability" else logits
        scores.append(values[:, target].double().cpu())
    fractions = (counts.double() / (h * w)).numpy()
    curve = torch.cat(scores).numpy()
    return dict(fractions=fractions, scores=curve, auc=float(auc(fractions, curve)))
