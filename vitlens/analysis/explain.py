"""Every attribution method behind one call: ``explain(model, images, method)`` gives B x H x W maps at the input
resolution (and each method's own raw maps) for the class each image is explained for, on every model
:func:`vitlens.capture` supports and, for the gradient methods, on CNNs.

Methods (:data:`METHODS`; :func:`methods_for` lists those that apply to a model):

- ``"attention"``: the last layer's class-token attention, heads averaged (the raw map rollout starts from).
- ``"rollout"``: attention rollout (Abnar & Zuidema 2020; the ViT paper's Fig. 6).
- ``"gradient_rollout"``: gradient-weighted rollout (Chefer, Gur & Wolf 2021, generic rule).
- ``"gradcam"``: Grad-CAM (Selvaraju et al. 2017); for a ViT on the patch tokens of ``blocks[-1].norm1`` laid out
  on the patch grid from :func:`vitlens.token_layout` (no ``reshape_transform`` to write), for a CNN on its last
  stage (captum's ``LayerGradCam``).
- ``"integrated_gradients"``: Integrated Gradients (Sundararajan et al. 2017) by captum, batched over steps.
- ``"input_x_gradient"``: Input x Gradient (Shrikumar et al. 2016) by captum.
- ``"random"``: uniform noise, the baseline every faithfulness number should be read against.

The token methods (attention, rollout, gradient rollout) read attention, so they apply to ViTs only.
"""
from __future__ import annotations

import inspect
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..capture import capture
from ..images import prepare
from ..models.layout import blocks_of, is_vit, token_layout
from ..models.timm_convert import data_config_of
from .rollout import HeadFusion, attention_rollout, cls_map, fuse_heads, gradient_rollout

METHODS = ("attention", "rollout", "gradient_rollout", "gradcam", "integrated_gradients", "input_x_gradient",
           "random")
TOKEN_METHODS = ("attention", "rollout", "gradient_rollout")  # read attention maps: ViTs only
Target = int | Sequence[int] | torch.Tensor | Literal["top", "label"] | None


@dataclass(frozen=True)
class Explanation:
    """One method's maps of a batch of images.

    Attributes:
        method: the method's name (one of :data:`METHODS`).
        maps: B x H x W at the input resolution; higher = more relevant to the target class.
        raw: the method's own resolution: B x gh x gw over the patch grid (the token methods and a ViT's Grad-CAM),
            B x h x w over a CNN stage's feature map (a CNN's Grad-CAM), or B x H x W (the pixel methods: the same
            tensor as ``maps``).
        targets: B class indices the maps explain.
        resize: how ``raw`` became ``maps``: ``"none"`` or e.g. ``"bilinear from 7 x 7"``.
    """

    method: str
    maps: torch.Tensor
    raw: torch.Tensor
    targets: torch.Tensor
    resize: str


def methods_for(model: nn.Module) -> tuple[str, ...]:
    """The methods of :data:`METHODS` that apply to ``model``: all of them for a ViT, no token method for a CNN."""
    return METHODS if is_vit(model) else tuple(m for m in METHODS if m not in TOKEN_METHODS)


def num_classes(model: nn.Module) -> int:
    """The classifier's outputs (vitlens and timm models both say it as ``num_classes``); 0 when unknown."""
    return int(getattr(model, "num_classes", 0) or 0)


def resolve_targets(model: nn.Module, images: torch.Tensor, target: Target = "top",
                    labels: Sequence[int] | torch.Tensor | None = None, *, batch_size: int = 256) -> torch.Tensor:
    """One class index per image.

    Args:
        model: returns B x K logits.
        images: B x C x H x W in the model's input space.
        target: ``"top"`` (or None): the predicted class; ``"label"``: ``labels``; an int for every image, or a
            sequence / tensor of B ints.
        labels: the images' labels, needed by ``target="label"``.
        batch_size: images per forward pass for ``"top"``.
    """
    B = images.shape[0]
    if target is None or (isinstance(target, str) and target == "top"):
        with torch.no_grad():
            return torch.cat([model(chunk).argmax(dim=-1) for chunk in images.split(batch_size)])
    if isinstance(target, str):
        if target != "label":
            raise ValueError(f"target must be a class index, 'top' or 'label', got {target!r}")
        if labels is None:
            raise ValueError("target='label' needs labels=: one class index per image")
        target = labels
    t = torch.as_tensor(target, device=images.device).long()
    t = t.expand(B) if t.ndim == 0 else t
    if t.shape != (B,):
        raise ValueError(f"{t.numel()} targets for {B} images: give one class index per image, or one for all")
    k = num_classes(model)
    if k and bool(((t < 0) | (t >= k)).any()):
        raise ValueError(f"target classes {sorted(set(t[(t < 0) | (t >= k)].tolist()))} out of range for a model "
                         f"with {k} classes")
    return t


@contextmanager
def this_thread_hook(module: nn.Module, hook: Callable[[nn.Module, Any, Any], Any]) -> Iterator[None]:
    """A forward hook on ``module`` that acts only in the thread that opened it (two app sessions may run one shared
    model at once: the other's forward passes must neither feed nor be changed by this one's hook)."""
    owner = threading.get_ident()
    handle = module.register_forward_hook(
        lambda m, args, out: hook(m, args, out) if threading.get_ident() == owner else None)
    try:
        yield
    finally:
        handle.remove()


# ---- the methods: each (model, B images, B targets, **options) -> raw B x h x w maps ----------------------------
def _attention(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, *, layer: int = -1,
               head_fusion: HeadFusion = "mean") -> torch.Tensor:
    with torch.no_grad(), capture(model, layers=[layer]) as rec:
        model(x)
    return cls_map(fuse_heads(rec.attentions[0], head_fusion), token_layout(model, x.shape[-2:]))


def _rollout(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, *, head_fusion: HeadFusion = "mean",
             discard_ratio: float = 0.0, start_layer: int = 0) -> torch.Tensor:
    layout = token_layout(model, x.shape[-2:])
    with torch.no_grad(), capture(model) as rec:
        model(x)
    joint = attention_rollout(rec.attentions, head_fusion=head_fusion, discard_ratio=discard_ratio,
                              start_layer=start_layer, num_prefix_tokens=layout.num_prefix_tokens)
    return cls_map(joint, layout)


def _gradient_rollout(model: nn.Module, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return cls_map(gradient_rollout(model, x, targets), token_layout(model, x.shape[-2:])).detach()


def _vit_gradcam(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, layer: nn.Module | None) -> torch.Tensor:
    """Grad-CAM on a ViT's patch tokens, laid out on the patch grid (prefix tokens dropped).

    Written out rather than through captum's ``LayerGradCam``: captum averages the gradient over every axis after
    the second, which for a B x N x D token tensor is the embedding, not the patches; a token layout it cannot take.
    """
    layout = token_layout(model, x.shape[-2:])
    layer = layer if layer is not None else blocks_of(model)[-1].norm1
    seen: list[torch.Tensor] = []
    with torch.enable_grad(), this_thread_hook(layer, lambda _m, _a, out: seen.append(out)):
        logits = model(x.detach().requires_grad_(True))  # an input that needs grad: frozen weights still work
        (grad,) = torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), seen[-1])
    tokens, grad = layout.patches(seen[-1].detach(), dim=1), layout.patches(grad, dim=1)  # B x patches x D
    alpha = grad.mean(dim=1, keepdim=True)  # alpha_k: the gradient's mean over the map's positions
    return layout.to_grid((alpha * tokens).sum(dim=-1).clamp(min=0))


def _gradcam(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, *,
             layer: nn.Module | None = None) -> torch.Tensor:
    if is_vit(model):
        return _vit_gradcam(model, x, targets, layer)
    from .attribution import grad_cam  # captum, imported when used: the command line stays quick to start

    return grad_cam(model, x, targets, layer=layer, upsample=False)


def ig_baseline(model: nn.Module, x: torch.Tensor, baseline: str | float | torch.Tensor) -> torch.Tensor | float:
    """Integrated Gradients' x' in the model's input space: ``"black"`` (a black image through the model's
    normalisation), ``"mean"`` (0: the normalisation's mean), or a number / tensor given as is."""
    if isinstance(baseline, str):
        if baseline == "black":
            return prepare(torch.zeros(1, 1, *x.shape[-2:]), data_config_of(model)).to(x)
        if baseline == "mean":
            return 0.0
        raise ValueError(f"baseline must be 'black', 'mean', a number or a tensor, got {baseline!r}")
    return baseline


def _integrated_gradients(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, *, steps: int = 32,
                          baseline: str | float | torch.Tensor = "black",
                          internal_batch_size: int | None = None) -> torch.Tensor:
    from .attribution import integrated_gradients

    attributions = integrated_gradients(model, x, targets, baseline=ig_baseline(model, x, baseline), steps=steps,
                                        internal_batch_size=max(internal_batch_size or 0, x.shape[0]))
    return attributions.sum(dim=1)  # signed sum over channels: evidence for the class counts, against it subtracts


def _input_x_gradient(model: nn.Module, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    from captum.attr import InputXGradient

    with torch.enable_grad():
        return InputXGradient(model).attribute(x.detach().requires_grad_(True), target=targets).detach().sum(dim=1)


_METHODS: dict[str, Callable[..., torch.Tensor]] = {
    "attention": _attention, "rollout": _rollout, "gradient_rollout": _gradient_rollout, "gradcam": _gradcam,
    "integrated_gradients": _integrated_gradients, "input_x_gradient": _input_x_gradient}


def _checked(model: nn.Module, images: torch.Tensor, method: str, options: dict[str, Any]) -> None:
    """A clear ValueError for an unknown method, a token method on a CNN, an option the method does not take."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; methods: {', '.join(METHODS)}")
    if method not in methods_for(model):
        raise ValueError(f"{method} reads attention maps: it needs a ViT, got {type(model).__name__} (methods for "
                         f"it: {', '.join(methods_for(model))})")
    if images.ndim != 4:
        raise ValueError(f"images must be B x C x H x W, got shape {tuple(images.shape)}")
    takes = ["seed"] if method == "random" else list(inspect.signature(_METHODS[method]).parameters)[3:]
    if unknown := sorted(set(options) - set(takes)):
        raise ValueError(f"{method} takes the options {takes or 'none'}, got {unknown}")


def _random(images: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Uniform noise per pixel, from its own generator (the global random state is left alone)."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(images.shape[0], *images.shape[-2:], generator=g).to(images.device)


def explain(model: nn.Module, images: torch.Tensor, method: str, target: Target = None, *,
            labels: Sequence[int] | torch.Tensor | None = None, batch_size: int = 64,
            upsample: Literal["bilinear", "nearest"] = "bilinear", **options: Any) -> Explanation:
    """One attribution method's maps of a batch of images, at the input resolution and at the method's own.

    Grad-CAM on a ViT reads the patch tokens of ``blocks[-1].norm1``, the normalised input of the last block's
    attention, as pytorch-grad-cam's ViT example does: the last block's *output* patch tokens no longer reach a
    class-token head (only the class token is read after them), so their gradient is zero; one block earlier they
    still reach it through the last attention. A ViT's Grad-CAM map is laid out on the patch grid of
    :func:`vitlens.token_layout` (prefix tokens dropped), so no model needs a hand-written ``reshape_transform``.
    Integrated Gradients and Input x Gradient attribute every input channel; the map is their signed sum over
    channels (negative where a pixel speaks against the class). Coarse maps are brought to the input size by
    ``upsample`` (bilinear by default, as Grad-CAM does; ``Explanation.resize`` says which).

    Args:
        model: a ViT :func:`vitlens.capture` supports, or a CNN (timm, or any model returning logits for the
            pixel methods), in eval mode.
        images: B x C x H x W in the model's input space.
        method: one of :data:`METHODS` (:func:`methods_for` says which apply to ``model``).
        target: ``"top"`` or None (the predicted class), ``"label"`` (``labels``), or class indices (one for all
            images, or one per image).
        labels: the images' labels, for ``target="label"``.
        batch_size: images per forward (and backward) pass; for Integrated Gradients, rows (image x step) per pass.
        upsample: ``"bilinear"`` or ``"nearest"``, for raw maps coarser than the input.
        **options: the method's own. ``attention``: ``layer`` (-1), ``head_fusion`` (``"mean"``). ``rollout``:
            ``head_fusion``, ``discard_ratio`` (0), ``start_layer`` (0). ``gradcam``: ``layer`` (a module).
            ``integrated_gradients``: ``steps`` (32), ``baseline`` (``"black"``, ``"mean"``, a number or a tensor),
            ``internal_batch_size``. ``random``: ``seed`` (0).

    Example:
        >>> e = explain(model, x, "gradcam", target="label", labels=y)
        >>> e.maps.shape, e.raw.shape        # B x H x W, B x gh x gw
    """
    _checked(model, images, method, options)
    targets = resolve_targets(model, images, target, labels, batch_size=batch_size)
    if method == "integrated_gradients":  # rows (image x step) per pass, however few images a chunk holds
        options = {"internal_batch_size": batch_size, **options}
    if method == "random":
        raw = _random(images, **options)
    else:
        fn = _METHODS[method]
        raw = torch.cat([fn(model, x, t, **options).detach()
                         for x, t in zip(images.split(batch_size), targets.split(batch_size))])
    size = tuple(images.shape[-2:])
    if tuple(raw.shape[-2:]) == size:
        return Explanation(method, raw, raw, targets, "none")
    if upsample not in ("bilinear", "nearest"):
        raise ValueError(f"upsample must be 'bilinear' or 'nearest', got {upsample!r}")
    align = {"align_corners": False} if upsample == "bilinear" else {}
    maps = F.interpolate(raw[:, None], size=size, mode=upsample, **align)[:, 0]
    return Explanation(method, maps, raw, targets, f"{upsample} from {raw.shape[-2]} x {raw.shape[-1]}")
