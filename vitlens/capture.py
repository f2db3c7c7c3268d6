"""``capture``: record attention probabilities and block outputs of chosen layers, only while asked.

Outside the context every layer runs fused (``F.scaled_dot_product_attention``); inside, only the captured
layers materialise softmax(q k^T / sqrt(d)). The active recorders live in a ContextVar, so captures in two
threads (two app sessions sharing one model) never see each other's tensors.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Iterator

import torch
from torch import nn

from .models.attention import ACTIVE_RECORDERS
from .models.vit import VisionTransformer


class Recorder:
    """What a :func:`capture` saw in the latest forward pass.

    Attributes:
        layers: indices of the captured blocks, ascending.
        attentions: per captured layer, post-softmax and pre-dropout, B x H x N x N (N includes the class token).
        tokens: per captured layer, the block output B x N x D.
    """

    def __init__(self, model: VisionTransformer, attentions: bool, tokens: bool, layers: Iterable[int] | None,
                 grad: bool) -> None:
        depth = len(model.blocks)
        idx = range(depth) if layers is None else sorted({l % depth for l in layers})
        bad = [l for l in (layers or []) if not -depth <= l < depth]
        if bad:
            raise ValueError(f"layers {bad} out of range for a model with {depth} blocks")
        self.model, self.layers, self.grad = model, list(idx), grad
        self._slot = {l: s for s, l in enumerate(self.layers)}
        self._attn = {id(model.blocks[l].attn): l for l in self.layers} if attentions else {}
        self._tokens = tokens
        self.attentions: list[torch.Tensor | None] = [None] * len(self.layers) if attentions else []
        self.tokens: list[torch.Tensor | None] = [None] * len(self.layers) if tokens else []

    def wants(self, module: nn.Module) -> bool:
        return id(module) in self._attn

    def record_attention(self, module: nn.Module, attn: torch.Tensor) -> torch.Tensor:
        if self.grad and attn.requires_grad:
            attn.retain_grad()
            self.attentions[self._slot[self._attn[id(module)]]] = attn
        else:
            self.attentions[self._slot[self._attn[id(module)]]] = attn.detach()
        return attn

    def record_tokens(self, model: nn.Module, layer: int, x: torch.Tensor) -> None:
        if self._tokens and model is self.model and layer in self._slot:
            self.tokens[self._slot[layer]] = x if self.grad else x.detach()

    @property
    def attention_grads(self) -> list[torch.Tensor | None]:
        """d(output)/d(attention) per captured layer after ``backward()`` (needs ``grad=True``)."""
        if not self.grad:
            raise RuntimeError("attention gradients need capture(..., grad=True)")
        return [a.grad if a is not None else None for a in self.attentions]


@contextmanager
def capture(model: nn.Module, *, attentions: bool = True, tokens: bool = False, layers: Iterable[int] | None = None,
            grad: bool = False) -> Iterator[Recorder]:
    """Record attention maps and/or block outputs of ``model`` during forward passes inside the block.

    Args:
        model: a vitlens ViT (plain or hybrid), e.g. from ``load_model`` or ``from_timm``.
        attentions: record post-softmax attention, B x H x N x N per captured layer.
        tokens: record block outputs, B x N x D per captured layer.
        layers: block indices (negative counts from the end); all blocks when None.
        grad: keep the attention in the autograd graph and retain its gradient (for gradient rollout).

    Example:
        >>> with vitlens.capture(model, layers=[-1]) as rec:
        ...     logits = model(images)
        >>> rec.attentions[0].shape  # B x heads x N x N
    """
    if not isinstance(model, VisionTransformer):
        raise TypeError(f"capture needs a vitlens VisionTransformer, got {type(model).__name__}; convert a timm "
                        f"ViT with vitlens.from_timm(model)")
    recorder = Recorder(model, attentions, tokens, layers, grad)
    token = ACTIVE_RECORDERS.set(ACTIVE_RECORDERS.get() + (recorder,))
    try:
        yield recorder
    finally:
        ACTIVE_RECORDERS.reset(token)
