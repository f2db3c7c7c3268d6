"""Per-layer representations of a ViT (block outputs) or a CNN (stage outputs): the one extractor behind the
probes, CKA, the inductive-bias probes and the app."""
from __future__ import annotations

from typing import Iterable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from ..capture import capture
from ..images import prepare
from ..models.layout import is_vit, token_layout
from ..models.timm_convert import data_config_of

Layers = Sequence[int] | Sequence[str] | None


def layer_names(model: nn.Module) -> list[str]:
    """``block 1`` .. ``block L`` for a ViT's blocks (numbered from 1, as every figure and control numbers layers),
    or the timm ``feature_info`` module names of a CNN (its stages)."""
    if is_vit(model):
        return [f"block {i + 1}" for i in range(len(model.blocks))]
    info = getattr(model, "feature_info", None)
    if not info:
        raise TypeError(f"{type(model).__name__} is neither a ViT vitlens.capture supports nor a timm model with "
                        f"feature_info (a CNN's stages)")
    return [f["module"] for f in info]


def _chosen(model: nn.Module, layers: Layers) -> list[str]:
    """Layer names from indices into :func:`layer_names` (network order), names, or None (all)."""
    if layers is None:
        return layer_names(model)
    if all(isinstance(l, str) for l in layers):
        return list(layers)
    names = layer_names(model)
    return [names[i] for i in sorted({int(i) % len(names) for i in layers})]


def layer_outputs(model: nn.Module, images: torch.Tensor, layers: Layers = None, *,
                  pre_logits: bool = False) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """One forward pass: each chosen layer's output and the model's output, in the autograd graph.

    Wrap the call in ``torch.no_grad()`` when no gradient is needed (the ERF differentiates the outputs).

    Args:
        model: a ViT (block outputs B x N x D, through :func:`vitlens.capture`); a timm CNN (stage maps
            B x C x h x w, through timm's ``forward_intermediates``, the maps ``features_only=True`` returns); or any
            module whose submodules ``layers`` names (forward hooks).
        images: B x C x H x W in the model's input space.
        layers: indices into :func:`layer_names` or names (``block3``, ``layer2``, ``stages.1``); all when None.
        pre_logits: return the representation the head reads (LN(z_L^0) for a ViT, the pooled features for a CNN)
            instead of the logits.

    Returns:
        name -> output, in network order; and the logits (or pre-logits).
    """
    names = _chosen(model, layers)
    if is_vit(model):
        known = layer_names(model)
        if unknown := [n for n in names if n not in known]:
            raise ValueError(f"unknown ViT layer(s) {unknown}; valid: 'block 1' .. 'block {len(known)}'")
        with capture(model, attentions=False, tokens=True, layers=[known.index(n) for n in names], grad=True) as rec:
            final = model.forward_head(model.forward_features(images), pre_logits=pre_logits)
        return dict(zip(names, rec.tokens)), final
    stages = layer_names(model) if getattr(model, "feature_info", None) else []
    if hasattr(model, "forward_intermediates") and all(n in stages for n in names):
        features, maps = model.forward_intermediates(images, indices=[stages.index(n) for n in names])
        return dict(zip(names, maps)), model.forward_head(features, pre_logits=pre_logits)
    return _hooked(model, images, names, pre_logits)


def _hooked(model: nn.Module, images: torch.Tensor, names: list[str],
            pre_logits: bool) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Outputs of named submodules through forward hooks, for modules without ``forward_intermediates``."""
    maps: dict[str, torch.Tensor] = {}
    hooks = [model.get_submodule(n).register_forward_hook(lambda _m, _i, y, n=n: maps.__setitem__(n, y))
             for n in names]
    try:
        final = model.forward_head(model.forward_features(images), pre_logits=True) if pre_logits else model(images)
    finally:
        for h in hooks:
            h.remove()
    return {n: maps[n] for n in names}, final


def pool(model: nn.Module, output: torch.Tensor) -> torch.Tensor:
    """One vector per image from a layer's output: for a ViT block the class token where the head reads it
    (``pool="token"``), else the mean of the patch tokens (global average pooling, and SigLIP's attention-pool
    models, whose pooling query exists only in the head); global average pooling of a CNN map."""
    if not is_vit(model):
        return output.mean(dim=(2, 3))
    layout = token_layout(model)  # its prefix and pooling do not depend on the input size
    if layout.pool == "token":
        return output[:, layout.prefix.index("cls")]
    return output[:, layout.num_prefix_tokens:].mean(dim=1)


@torch.no_grad()
def layer_features(model: nn.Module, images: torch.Tensor, *, layers: Layers = None,
                   pooled: bool = False, pre_logits: bool = False) -> dict[str, torch.Tensor]:
    """Representations of ``images`` at each layer, in network order, as vectors.

    Args:
        model: a vitlens ViT or a timm CNN (see :func:`layer_outputs`).
        images: B x C x H x W, already in the model's input space.
        layers: indices into :func:`layer_names` (or names); all when None.
        pooled: one vector per image (see :func:`pool`). Otherwise each output is flattened (what CKA compares).
        pre_logits: add the final representation the head reads (``"pre_logits"``; the paper's few-shot
            features): LN(z_L^0) for a ViT, the pooled features for a CNN.

    Returns:
        name -> B x F tensors (float32, on the images' device).
    """
    outputs, final = layer_outputs(model, images.to(next(model.parameters()).device), layers, pre_logits=True)
    out = {n: (pool(model, o) if pooled else o).flatten(1).float() for n, o in outputs.items()}
    if pre_logits:
        out["pre_logits"] = final.flatten(1).float()
    return out


def dataset_features(model: nn.Module, data: Iterable, *, layers: Layers = None,
                     progress: bool = True, desc: str = "features") -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Pooled per-layer features (and ``pre_logits``) of a labelled dataset, on the CPU.

    Args:
        model: a vitlens ViT or a timm CNN.
        data: an iterable of (images in [0, 1], labels) batches; each is prepared with the model's data config.
        layers: indices into :func:`layer_names`; all when None.
        progress: show a tqdm bar.
        desc: the bar's label.

    Returns:
        name -> N x F features, and the N labels.
    """
    feats: dict[str, list[torch.Tensor]] = {}
    labels = []
    for images, y in tqdm(data, desc=desc, unit="batch", disable=not progress):
        out = layer_features(model, prepare(images, data_config_of(model)), layers=layers, pooled=True,
                             pre_logits=True)
        for name, f in out.items():
            feats.setdefault(name, []).append(f.cpu())
        labels.append(torch.as_tensor(y))
    if not labels:
        raise ValueError(f"{desc}: the dataset is empty")
    return {k: torch.cat(v) for k, v in feats.items()}, torch.cat(labels)
