"""Rollout, mean attention distance and head maps reduced layer by layer as the forward pass goes.

All layers' maps of ViT-L/14 at 518 px (1,370 tokens, 24 layers x 16 heads) take ~2.9 GB per image in float32,
which is where notebook code gives up. Each analysis here needs only a reduction of each layer's map: the rollout
its running product (N x N), the mean attention distance one number per head, a head map one row per head. So the
maps are reduced the moment each layer has computed them (``capture(..., on_attention=...)``) and never kept, and
the results equal the keep-everything path's.
"""
from __future__ import annotations

import torch
from torch import nn

from ..capture import capture
from ..models.layout import token_layout
from .distance import mean_attention_distance
from .rollout import HeadFusion, cls_map, prefix_shares, rollout_step


@torch.no_grad()
def streamed_maps(model: nn.Module, images: torch.Tensor, *, rollout: bool = True, distance: bool = True,
                  heads: bool = True, head_fusion: HeadFusion = "mean", discard_ratio: float = 0.0,
                  start_layer: int = 0, include_prefix: bool = False, renormalize: bool = True) -> dict[str, object]:
    """One batch's attention analyses, with no layer's N x N map kept after its layer has run.

    Args:
        model: a ViT :func:`vitlens.capture` supports.
        images: B x C x H x W in the model's input space.
        rollout: compute attention rollout (``head_fusion``, ``discard_ratio``, ``start_layer`` as in
            :func:`vitlens.analysis.attention_rollout`).
        distance: compute the mean attention distance per layer and head (``include_prefix``, ``renormalize`` as in
            :func:`vitlens.analysis.mean_attention_distance`).
        heads: keep each layer's per-head query row over the patches (B x L x H x gh x gw, as
            :func:`vitlens.analysis.head_maps` gives for one layer).

    Returns:
        ``logits``; ``layout``; with ``rollout``: ``rollout`` (B x gh x gw, the :func:`cls_map` of the joint
        attention) and ``prefix_shares``; with ``distance``: ``distance`` (B x L x H pixels); with ``heads``:
        ``head_maps``.
    """
    layout = token_layout(model, images.shape[-2:])
    state: dict[str, object] = {"joint": None, "distance": [], "heads": []}

    def reduce(layer: int, attention: torch.Tensor) -> None:
        if rollout and layer >= start_layer:
            state["joint"] = rollout_step(state["joint"], attention, head_fusion=head_fusion,
                                          discard_ratio=discard_ratio, num_prefix_tokens=layout.num_prefix_tokens)
        if distance:
            state["distance"].append(mean_attention_distance([attention], layout, include_prefix=include_prefix,
                                                             renormalize=renormalize)[:, 0])
        if heads:
            state["heads"].append(layout.to_grid(layout.patches(layout.query(attention))))

    with capture(model, on_attention=reduce):
        out: dict[str, object] = dict(logits=model(images), layout=layout)
    if rollout:
        out.update(rollout=cls_map(state["joint"], layout), prefix_shares=prefix_shares(state["joint"], layout))
    if distance:
        out["distance"] = torch.stack(state["distance"], dim=1)
    if heads:
        out["head_maps"] = torch.stack(state["heads"], dim=1)
    return out
