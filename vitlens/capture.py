"""``capture``: record attention probabilities and block outputs of chosen layers, only while asked, on vitlens's
ViT and on timm's ViT families (``VisionTransformer``: the paper's weights, DeiT, DeiT-III, DINO, DINOv2 with and
without registers, CLIP, SigLIP, MAE; ``VisionTransformerDistilled``; ``Eva``: EVA-02 and the RoPE ViTs; ``Beit``).

Why it is hard elsewhere: these models compute attention with ``F.scaled_dot_product_attention``, which never
materialises the probabilities, so hooks see nothing; the usual workaround switches ``fused_attn`` off on the
(shared) modules, which every other thread then sees too. Here each attention module of a captured layer runs, for
the capturing thread only, on a shallow proxy of itself with ``fused_attn`` off and ``attn_drop`` replaced by a
recorder: timm's (and vitlens's) explicit path passes the post-softmax probabilities through ``attn_drop``. The
proxy shares the module's parameters, so gradients reach them; the module itself is never changed beyond a
``forward`` wrapper that exists while some capture on it is open, and is removed when the last one closes (also
after an exception). The active recorders live in a ContextVar, so two threads (two app sessions sharing one
model) each get their own maps.
"""
from __future__ import annotations

import copy
import functools
import threading
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
from torch import nn

from .models.layout import blocks_of

_ACTIVE: ContextVar[tuple[Recorder, ...]] = ContextVar("vitlens_active_recorders", default=())
_LOCK = threading.Lock()
_OPEN: dict[nn.Module, int] = {}  # attention module -> captures (in any thread) that have wrapped it
OnAttention = Callable[[int, torch.Tensor], Any]


class Recorder:
    """What a :func:`capture` saw in the latest forward pass.

    Attributes:
        layers: indices of the captured blocks, ascending.
        attentions: per captured layer, post-softmax and pre-dropout, B x heads x N x N, N counting every prefix
            token (class, distillation, registers) in the model's own order (see :func:`vitlens.token_layout`).
        tokens: per captured layer, the block output B x N x D.
    """

    def __init__(self, model: nn.Module, attentions: bool, tokens: bool, layers: Iterable[int] | None,
                 grad: bool, heads: Sequence[int] | None = None, dtype: torch.dtype | None = None,
                 on_attention: OnAttention | None = None) -> None:
        blocks = blocks_of(model)
        depth = len(blocks)
        bad = [l for l in (layers or []) if not -depth <= l < depth]
        if bad:
            raise ValueError(f"layers {bad} out of range for a model with {depth} blocks")
        if grad and (heads is not None or dtype is not None or on_attention is not None):
            raise ValueError("capture(grad=True) keeps whole float maps in the graph: drop heads, dtype and "
                             "on_attention")
        self.layers = list(range(depth)) if layers is None else sorted({l % depth for l in layers})
        self.grad, self.heads, self.dtype, self.on_attention = grad, heads, dtype, on_attention
        self._slot = {id(blocks[l].attn): s for s, l in enumerate(self.layers)} if attentions else {}
        self.attentions: list[torch.Tensor | None] = [None] * len(self.layers) if attentions else []
        self.tokens: list[torch.Tensor | None] = [None] * len(self.layers) if tokens else []

    def wants(self, module: nn.Module) -> bool:
        return id(module) in self._slot

    def record_attention(self, module: nn.Module, attn: torch.Tensor) -> torch.Tensor:
        slot = self._slot[id(module)]
        if self.grad and attn.requires_grad:
            attn.retain_grad()
            self.attentions[slot] = attn
            return attn
        kept = attn.detach() if self.heads is None else attn.detach()[:, list(self.heads)]
        if self.on_attention is not None:  # reduced as the forward pass goes: nothing is kept here
            self.on_attention(self.layers[slot], kept)
        else:
            self.attentions[slot] = kept if self.dtype is None else kept.to(self.dtype)
        return attn

    def record_tokens(self, slot: int, x: torch.Tensor) -> None:
        self.tokens[slot] = x if self.grad else x.detach()

    @property
    def attention_grads(self) -> list[torch.Tensor | None]:
        """d(output)/d(attention) per captured layer after ``backward()`` (needs ``grad=True``)."""
        if not self.grad:
            raise RuntimeError("attention gradients need capture(..., grad=True)")
        return [a.grad if a is not None else None for a in self.attentions]


class _Recording(nn.Module):
    """Stands in for an attention module's ``attn_drop`` in its proxy: records the probabilities, then drops out."""

    def __init__(self, dropout: nn.Module, recorder: Recorder, module: nn.Module) -> None:
        super().__init__()
        self.dropout, self.recorder, self.module = dropout, recorder, module

    def forward(self, attn: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.recorder.record_attention(self.module, attn))


def _forward(module: nn.Module, *args: Any, **kwargs: Any) -> Any:
    """An attention module's forward while a capture is open: the class's own forward, on a proxy with the
    explicit path and a recording ``attn_drop`` when this thread's capture wants the layer."""
    recorder = next((r for r in _ACTIVE.get() if r.wants(module)), None)
    if recorder is None:
        return type(module).forward(module, *args, **kwargs)
    proxy = copy.copy(module)  # shares parameters and buffers; its own attribute and submodule dicts
    proxy._modules = dict(module._modules)
    proxy._modules["attn_drop"] = _Recording(module.attn_drop, recorder, module)
    proxy.fused_attn = False
    return type(module).forward(proxy, *args, **kwargs)


def _open(modules: list[nn.Module]) -> None:
    with _LOCK:
        if foreign := [type(m).__name__ for m in modules if not _OPEN.get(m) and "forward" in vars(m)]:
            raise TypeError(f"{foreign[0]} has a forward set on the instance; capture cannot wrap it")
        for m in modules:
            if not _OPEN.get(m):
                m.forward = functools.partial(_forward, m)
            _OPEN[m] = _OPEN.get(m, 0) + 1


def _close(modules: list[nn.Module]) -> None:
    with _LOCK:
        for m in modules:
            _OPEN[m] -= 1
            if not _OPEN[m]:
                del _OPEN[m]
                del m.forward


def _token_hooks(blocks: nn.ModuleList, recorder: Recorder) -> list:
    """Forward hooks on the captured blocks that record their outputs for ``recorder``'s thread only."""
    def hook(slot: int):
        return lambda _m, _i, out: recorder.record_tokens(slot, out) if recorder in _ACTIVE.get() else None

    return [blocks[l].register_forward_hook(hook(s)) for s, l in enumerate(recorder.layers)]


@contextmanager
def capture(model: nn.Module, *, attentions: bool = True, tokens: bool = False, layers: Iterable[int] | None = None,
            grad: bool = False, heads: Sequence[int] | None = None, dtype: torch.dtype | None = None,
            on_attention: OnAttention | None = None) -> Iterator[Recorder]:
    """Record attention maps and/or block outputs of ``model`` during forward passes inside the block.

    Layers not captured stay fused; outside the block the model runs exactly as before.

    Args:
        model: a vitlens ViT (plain or hybrid) or a timm ViT of the families in
            :data:`vitlens.models.layout.SUPPORTED`.
        attentions: record post-softmax attention, B x heads x N x N per captured layer.
        tokens: record block outputs, B x N x D per captured layer.
        layers: block indices (negative counts from the end); all blocks when None.
        grad: keep the attention in the autograd graph and retain its gradient (for gradient rollout).
        heads: keep only these heads of each map (B x len(heads) x N x N).
        dtype: keep the maps in this dtype (``torch.float16`` halves their memory).
        on_attention: called as ``on_attention(layer, attention)`` when each captured layer has run, instead of
            keeping its map: analyses that reduce layer by layer (see :mod:`vitlens.analysis.stream`) then hold
            no N x N map beyond the one being computed.

    Example:
        >>> with vitlens.capture(model, layers=[-1]) as rec:
        ...     logits = model(images)
        >>> rec.attentions[0].shape  # B x heads x N x N
    """
    recorder = Recorder(model, attentions, tokens, layers, grad, heads, dtype, on_attention)
    blocks = blocks_of(model)
    wrapped = [blocks[l].attn for l in recorder.layers] if attentions else []
    hooks = _token_hooks(blocks, recorder) if tokens else []
    _open(wrapped)
    token = _ACTIVE.set(_ACTIVE.get() + (recorder,))
    try:
        yield recorder
    finally:
        _ACTIVE.reset(token)
        _close(wrapped)
        for h in hooks:
            h.remove()
