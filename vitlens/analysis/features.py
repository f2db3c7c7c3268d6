"""Per-layer representations of a ViT (block outputs) or a timm CNN (stage outputs), for CKA and probes."""
from __future__ import annotations

from typing import Iterable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from ..capture import capture
from ..models.vit import VisionTransformer
from .inputs import prepare


def layer_names(model: nn.Module) -> list[str]:
    """``block{i}`` for each ViT block, or the timm ``feature_info`` module names of a CNN (its stages)."""
    if isinstance(model, VisionTransformer):
        return [f"block{i}" for i in range(len(model.blocks))]
    info = getattr(model, "feature_info", None)
    if not info:
        raise TypeError(f"{type(model).__name__} is neither a vitlens ViT nor a timm model with feature_info; "
                        f"convert a timm ViT with vitlens.from_timm")
    return [f["module"] for f in info]


@torch.no_grad()
def layer_features(model: nn.Module, images: torch.Tensor, *, layers: Sequence[int] | None = None,
                   pooled: bool = False, pre_logits: bool = False) -> dict[str, torch.Tensor]:
    """Representations of ``images`` at each layer, in network order.

    Args:
        model: a vitlens ViT (block outputs, via :func:`vitlens.capture`) or a timm CNN (the outputs of the
            modules its ``feature_info`` names, the same maps ``features_only=True`` returns, via forward hooks).
        images: B x C x H x W, already in the model's input space.
        layers: indices into :func:`layer_names`; all when None.
        pooled: one vector per image: the class token (``pool="token"``) or the token mean (``"gap"``) for a
            ViT, global average pooling for a CNN. Otherwise each map is flattened (what CKA compares).
        pre_logits: add the final representation the head reads (``"pre_logits"``; the paper's few-shot
            features): LN(z_L^0) for a ViT, the pooled features for a CNN.

    Returns:
        name -> B x F tensors (float32, on the images' device).
    """
    images = images.to(next(model.parameters()).device)
    names = layer_names(model)
    idx = list(range(len(names))) if layers is None else sorted({i % len(names) for i in layers})
    out: dict[str, torch.Tensor] = {}
    if isinstance(model, VisionTransformer):
        with capture(model, attentions=False, tokens=True, layers=idx) as rec:
            final = model.forward_head(model.forward_features(images), pre_logits=True)
        for i, tokens in zip(rec.layers, rec.tokens):
            if pooled:
                tokens = tokens[:, 0] if model.pool == "token" else tokens.mean(dim=1)
            out[names[i]] = tokens.flatten(1).float()
    else:
        maps: dict[int, torch.Tensor] = {}
        hooks = [model.get_submodule(names[i]).register_forward_hook(
            lambda _m, _inp, y, i=i: maps.__setitem__(i, y)) for i in idx]
        try:
            final = model.forward_head(model.forward_features(images), pre_logits=True)
        finally:
            for h in hooks:
                h.remove()
        for i in idx:
            out[names[i]] = (maps[i].mean(dim=(2, 3)) if pooled else maps[i].flatten(1)).float()
    if pre_logits:
        out["pre_logits"] = final.flatten(1).float()
    return out


def dataset_features(model: nn.Module, data: Iterable, *, layers: Sequence[int] | None = None,
                     progress: bool = True, desc: str = "features") -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Pooled per-layer features (and ``pre_logits``) of a labelled dataset, on the CPU.

    Args:
        model: a vitlens ViT or a timm CNN.
        data: an iterable of (images in [0, 1], labels) batches; each is prepared with ``model.data_config``.
        layers: indices into :func:`layer_names`; all when None.
        progress: show a tqdm bar.
        desc: the bar's label.

    Returns:
        name -> N x F features, and the N labels.
    """
    feats: dict[str, list[torch.Tensor]] = {}
    labels = []
    for images, y in tqdm(data, desc=desc, unit="batch", disable=not progress):
        out = layer_features(model, prepare(images, model.data_config), layers=layers, pooled=True,
                             pre_logits=True)
        for name, f in out.items():
            feats.setdefault(name, []).append(f.cpu())
        labels.append(torch.as_tensor(y))
    if not labels:
        raise ValueError(f"{desc}: the dataset is empty")
    return {k: torch.cat(v) for k, v in feats.items()}, torch.cat(labels)
