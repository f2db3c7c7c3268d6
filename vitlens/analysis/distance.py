"""Mean attention distance (paper Fig. 7 right, Fig. 11): how far, in pixels, each head looks."""
from __future__ import annotations

from typing import Iterable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from ..capture import capture
from ..images import batches, prepare
from ..models.layout import TokenLayout, token_layout
from ..models.timm_convert import data_config_of


def patch_distances(grid: Sequence[int], patch_size: int | Sequence[int], *,
                    device: torch.device | None = None) -> torch.Tensor:
    """Pixel distances between all patch centres of a gh x gw grid (row-major, as the tokens): gh*gw x gh*gw.

    Args:
        grid: (gh, gw).
        patch_size: P, or (ph, pw) for patches that are not square.
    """
    gh, gw = grid
    ph, pw = (patch_size, patch_size) if isinstance(patch_size, int) else patch_size
    rows, cols = torch.meshgrid(torch.arange(gh, device=device), torch.arange(gw, device=device), indexing="ij")
    coords = torch.stack([rows.flatten() * ph, cols.flatten() * pw], dim=1).double()
    return torch.cdist(coords, coords)


def mean_attention_distance(attentions: Sequence[torch.Tensor], layout: TokenLayout, *, include_prefix: bool = False,
                            renormalize: bool = True) -> torch.Tensor:
    """Per image, layer and head: mean over queries i of sum_j A_ij * ||g_i - g_j|| (pixels between patch centres).

    Args:
        attentions: per layer, B x H x N x N post-softmax attention (``recorder.attentions``).
        layout: ``vitlens.token_layout(model, img_size)``: the grid and the patch size in pixels (16 for ViT-B/16
            and for the R50 hybrid).
        include_prefix: keep the prefix tokens (class, distillation, registers) as queries and keys. They have no
            place on the grid, so they are put at distance 0 from every token (the zero-padded distance matrix):
            their rows add 0 and the mass a patch sends to them counts as distance 0. Rows then sum to 1 and
            ``renormalize`` has nothing to do.
        renormalize: with the prefix tokens removed, rescale each patch row to sum to 1, i.e. the distance of where
            the head looks among the patches. False leaves the prefix tokens' share out of the sum.

    Returns:
        B x L x H float64 distances in pixels.
    """
    dist = patch_distances(layout.grid, layout.patch_size, device=attentions[0].device)
    prefix = layout.num_prefix_tokens
    if include_prefix and prefix:
        dist = torch.nn.functional.pad(dist, (prefix, 0, prefix, 0))
    per_layer = []
    for attention in attentions:
        a = attention.double()
        if not include_prefix:
            a = layout.patches(layout.patches(a, dim=-1), dim=-2)
            if renormalize:
                a = a / a.sum(dim=-1, keepdim=True)
        if a.shape[-1] != dist.shape[-1]:
            raise ValueError(f"attention over {a.shape[-1]} keys does not match grid {layout.grid}")
        per_layer.append(torch.einsum("bhij,ij->bhi", a, dist).mean(dim=-1))
    return torch.stack(per_layer, dim=1)


@torch.no_grad()
def attention_distance(model: nn.Module, data: torch.Tensor | Iterable, *, batch_size: int = 32,
                       include_prefix: bool = False, renormalize: bool = True,
                       progress: bool = True) -> dict[str, torch.Tensor | int]:
    """Mean attention distance of every layer and head over a dataset, streaming one batch at a time.

    Only running sums are kept, so memory is that of one batch whatever the number of images.

    Args:
        model: a ViT :func:`vitlens.capture` supports.
        data: N x C x H x W images in [0, 1], or an iterable of such batches (or of (images, labels));
            each batch is prepared with the model's ``data_config`` (channels, size, mean, std).
        batch_size: batch size when ``data`` is a tensor.
        include_prefix: see :func:`mean_attention_distance`.
        renormalize: see :func:`mean_attention_distance`.
        progress: show a tqdm bar.

    Returns:
        ``mean`` and ``std`` (L x H, pixels, the spread over images), ``count`` (images seen).
    """
    total = sum_sq = None
    count = 0
    if isinstance(data, torch.Tensor):
        n_batches: int | None = -(-len(data) // batch_size)
    else:
        n_batches = len(data) if hasattr(data, "__len__") else None
    bar = tqdm(batches(data, batch_size), total=n_batches, desc="attention distance", unit="batch", disable=not progress)
    device, config = next(model.parameters()).device, data_config_of(model)
    for x in bar:
        x = prepare(x, config).to(device)
        with capture(model) as rec:
            model(x)
        d = mean_attention_distance(rec.attentions, token_layout(model, x.shape[-2:]), include_prefix=include_prefix,
                                    renormalize=renormalize)
        total = d.sum(0) if total is None else total + d.sum(0)
        sum_sq = (d ** 2).sum(0) if sum_sq is None else sum_sq + (d ** 2).sum(0)
        count += d.shape[0]
    if not count:
        raise ValueError("attention_distance got no images")
    mean = total / count
    std = (sum_sq / count - mean ** 2).clamp(min=0).sqrt()
    return dict(mean=mean, std=std, count=count)
