"""Mean attention distance (paper Fig. 7 right, Fig. 11): how far, in pixels, each head looks."""
from __future__ import annotations

from typing import Iterable, Sequence

import torch
from tqdm.auto import tqdm

from ..capture import capture
from ..images import batches, prepare
from ..models.vit import VisionTransformer


def patch_distances(grid: Sequence[int], patch_size: int, *, device: torch.device | None = None) -> torch.Tensor:
    """P * ||g_i - g_j|| between all patches of a gh x gw grid (row-major, as the tokens): gh*gw x gh*gw."""
    gh, gw = grid
    rows, cols = torch.meshgrid(torch.arange(gh, device=device), torch.arange(gw, device=device), indexing="ij")
    coords = torch.stack([rows.flatten(), cols.flatten()], dim=1).double()
    return torch.cdist(coords, coords) * patch_size


def mean_attention_distance(attentions: Sequence[torch.Tensor], grid: Sequence[int], patch_size: int, *,
                            num_prefix_tokens: int = 1, include_cls: bool = False,
                            renormalize: bool = True) -> torch.Tensor:
    """Per image, layer and head: mean over queries i of sum_j A_ij * P * ||g_i - g_j||, in pixels.

    Args:
        attentions: per layer, B x H x N x N post-softmax attention (``recorder.attentions``).
        grid: (gh, gw) patch grid.
        patch_size: P, pixels per token side (16 for ViT-B/16 and for the R50 hybrid).
        num_prefix_tokens: leading non-patch tokens (the class token).
        include_cls: keep the class token as a query and a key. It has no place on the grid, so it is put at
            distance 0 from every token (the zero-padded distance matrix): its row adds 0 and the mass a patch
            sends to it counts as distance 0. Rows then sum to 1 and ``renormalize`` has nothing to do.
        renormalize: with the class token removed, rescale each patch row to sum to 1, i.e. the distance
            of where the head looks among the patches. False leaves the class token's share out of the sum.

    Returns:
        B x L x H float64 distances in pixels.
    """
    dist = patch_distances(grid, patch_size, device=attentions[0].device)
    if include_cls and num_prefix_tokens:
        dist = torch.nn.functional.pad(dist, (num_prefix_tokens, 0, num_prefix_tokens, 0))
    per_layer = []
    for attention in attentions:
        a = attention.double()
        if not include_cls:
            a = a[..., num_prefix_tokens:, num_prefix_tokens:]
            if renormalize:
                a = a / a.sum(dim=-1, keepdim=True)
        if a.shape[-1] != dist.shape[-1]:
            raise ValueError(f"attention over {a.shape[-1]} keys does not match grid {tuple(grid)}")
        per_layer.append(torch.einsum("bhij,ij->bhi", a, dist).mean(dim=-1))
    return torch.stack(per_layer, dim=1)


@torch.no_grad()
def attention_distance(model: VisionTransformer, data: torch.Tensor | Iterable, *, batch_size: int = 32,
                       include_cls: bool = False, renormalize: bool = True,
                       progress: bool = True) -> dict[str, torch.Tensor | int]:
    """Mean attention distance of every layer and head over a dataset, streaming one batch at a time.

    Only running sums are kept, so memory is that of one batch whatever the number of images.

    Args:
        model: a vitlens ViT.
        data: N x C x H x W images in [0, 1], or an iterable of such batches (or of (images, labels));
            each batch is prepared with ``model.data_config`` (channels, size, mean, std).
        batch_size: batch size when ``data`` is a tensor.
        include_cls: see :func:`mean_attention_distance`.
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
    device = next(model.parameters()).device
    for x in bar:
        with capture(model) as rec:
            model(prepare(x, model.data_config).to(device))
        d = mean_attention_distance(rec.attentions, model.grid_size, model.patch_size,
                                    num_prefix_tokens=model.num_prefix_tokens, include_cls=include_cls,
                                    renormalize=renormalize)
        total = d.sum(0) if total is None else total + d.sum(0)
        sum_sq = (d ** 2).sum(0) if sum_sq is None else sum_sq + (d ** 2).sum(0)
        count += d.shape[0]
    if not count:
        raise ValueError("attention_distance got no images")
    mean = total / count
    std = (sum_sq / count - mean ** 2).clamp(min=0).sqrt()
    return dict(mean=mean, std=std, count=count)
