"""Attention rollout (Abnar & Zuidema 2020; paper Fig. 6, App. D.8) and its gradient-weighted variant
(Chefer, Gur & Wolf 2021, generic rule), batched over images."""
from __future__ import annotations

from typing import Literal, Sequence

import torch
from torch import nn

from ..capture import capture
from ..models.layout import TokenLayout

HeadFusion = Literal["mean", "max", "min"]


def fuse_heads(attention: torch.Tensor, head_fusion: HeadFusion = "mean") -> torch.Tensor:
    """B x H x N x N to B x N x N by the mean, max or min over heads.

    Args:
        attention: post-softmax attention of one layer.
        head_fusion: ``"mean"`` (the paper's and Abnar & Zuidema's choice), ``"max"`` or ``"min"``.
    """
    if head_fusion == "mean":
        return attention.mean(dim=1)
    if head_fusion == "max":
        return attention.amax(dim=1)
    if head_fusion == "min":
        return attention.amin(dim=1)
    raise ValueError(f"head_fusion must be 'mean', 'max' or 'min', got {head_fusion!r}")


def _discard_lowest(a: torch.Tensor, ratio: float, num_prefix_tokens: int) -> torch.Tensor:
    """Zero the lowest ``ratio`` of each B x N x N matrix, never the entries of prefix (class) tokens."""
    n = a.shape[-1]
    protected = torch.zeros(n, n, dtype=torch.bool, device=a.device)
    protected[:num_prefix_tokens, :] = protected[:, :num_prefix_tokens] = True
    flat = a.masked_fill(protected, float("inf")).flatten(1)
    k = int(ratio * (~protected).sum())
    drop = flat.topk(k, dim=1, largest=False).indices
    return a.flatten(1).scatter(1, drop, 0.0).view_as(a)


def attention_rollout(attentions: Sequence[torch.Tensor], *, head_fusion: HeadFusion = "mean",
                      discard_ratio: float = 0.0, start_layer: int = 0, num_prefix_tokens: int = 1) -> torch.Tensor:
    """Joint attention J_L = A_hat_L ... A_hat_1 with A_hat_l = (A_l + I) / rowsum(A_l + I).

    The identity stands for the residual connection; each row is re-normalised so that J_l stays a
    row-stochastic matrix (how much token i draws from input token j through all layers so far).

    Args:
        attentions: per layer, B x H x N x N post-softmax attention, in depth order (``recorder.attentions``).
        head_fusion: how heads become one matrix per layer (see :func:`fuse_heads`).
        discard_ratio: zero this fraction of the lowest fused entries per layer before adding the identity
            (Gildenblat's vit-explain option; 0 is the paper's rollout). Class-token entries are kept.
        start_layer: begin the product at this layer (earlier layers are treated as identity).
        num_prefix_tokens: leading non-patch tokens (``layout.num_prefix_tokens``: class, distillation, register).

    Returns:
        B x N x N joint attention; rows sum to 1.
    """
    layers = list(attentions)[start_layer:]
    if not layers:
        raise ValueError(f"no attention layers from start_layer={start_layer} on ({len(attentions)} given)")
    joint = None
    for attention in layers:
        joint = rollout_step(joint, attention, head_fusion=head_fusion, discard_ratio=discard_ratio,
                             num_prefix_tokens=num_prefix_tokens)
    return joint


def rollout_step(joint: torch.Tensor | None, attention: torch.Tensor, *, head_fusion: HeadFusion = "mean",
                 discard_ratio: float = 0.0, num_prefix_tokens: int = 1) -> torch.Tensor:
    """One layer of :func:`attention_rollout`: J_l = A_hat_l J_(l-1), with J_0 = I when ``joint`` is None.

    Args:
        joint: the running product B x N x N, or None before the first layer.
        attention: this layer's B x H x N x N attention.
        head_fusion, discard_ratio, num_prefix_tokens: as in :func:`attention_rollout`.
    """
    if not 0.0 <= discard_ratio < 1.0:
        raise ValueError(f"discard_ratio must be in [0, 1), got {discard_ratio}")
    n = attention.shape[-1]
    eye = torch.eye(n, dtype=attention.dtype, device=attention.device)
    a = fuse_heads(attention, head_fusion)
    if discard_ratio > 0:
        a = _discard_lowest(a, discard_ratio, num_prefix_tokens)
    a = a + eye
    a = a / a.sum(dim=-1, keepdim=True)  # rows, not columns: keepdim keeps the row sums aligned
    return a if joint is None else a @ joint


def cls_map(x: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
    """The image map of a B x N x N token-to-token matrix (rollout, relevance, one layer's attention): B x gh x gw.

    The class token's row over the patch columns; a model without a class token (SigLIP, ``pool="gap"``) has the
    mean over the patch tokens' rows instead (:meth:`TokenLayout.query`). Prefix columns (class, distillation and
    register tokens) are never folded into the grid: :func:`prefix_shares` gives them by name.

    Args:
        x: B x N x N, N = ``layout.num_tokens``.
        layout: ``vitlens.token_layout(model)``.
    """
    return layout.to_grid(layout.patches(layout.query(x)))


def prefix_shares(x: torch.Tensor, layout: TokenLayout) -> dict[str, torch.Tensor]:
    """The same row as :func:`cls_map`, at the prefix tokens' columns: name -> B values (e.g. how much of the class
    token's rollout goes to each register)."""
    row = layout.query(x)
    if row.shape[-1] != layout.num_tokens:
        raise ValueError(f"{row.shape[-1]} tokens do not match the layout's {layout.num_tokens}")
    return {name: row[..., i] for i, name in enumerate(layout.prefix)}


def gradient_rollout(model: nn.Module, images: torch.Tensor,
                     target: int | Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
    """Chefer et al. (2021) generic relevance: R = I; per block R <- R + mean_h((dy_t/dA * A)^+) R.

    Each layer's gradient is paired with that same layer's attention (``recorder.attentions[l]`` and the
    gradient with respect to it), the bug this function exists to avoid.

    Args:
        model: a ViT :func:`vitlens.capture` supports (eval mode for deterministic maps).
        images: B x C x H x W in the model's input space.
        target: class index per image (or one for all); the predicted class when None.

    Returns:
        B x N x N relevance; the map is ``cls_map(R, vitlens.token_layout(model))``.
    """
    with torch.enable_grad(), capture(model, grad=True) as rec:
        logits = model(images.detach().requires_grad_(True))
        if target is None:
            target = logits.argmax(dim=-1)
        target = torch.as_tensor(target, device=logits.device).expand(logits.shape[0])
        score = logits.gather(1, target[:, None]).sum()  # images are independent: one backward for the batch
        grads = torch.autograd.grad(score, rec.attentions)
    B, _, N, _ = rec.attentions[0].shape
    relevance = torch.eye(N, device=images.device).expand(B, N, N)
    for attention, grad in zip(rec.attentions, grads):
        a_bar = (grad * attention.detach()).clamp(min=0).mean(dim=1)
        relevance = relevance + a_bar @ relevance
    return relevance
