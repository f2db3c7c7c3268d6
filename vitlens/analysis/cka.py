"""Linear CKA (Kornblith et al. 2019) and minibatch CKA (Nguyen, Raghu & Kornblith 2021), and the layer-by-layer
similarity of two networks (ViT blocks against ViT blocks or CNN stages)."""
from __future__ import annotations

from typing import Iterable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from ..images import prepare
from ..models.timm_convert import data_config_of
from .features import layer_features, layer_names


def gram(x: torch.Tensor) -> torch.Tensor:
    """Linear kernel K = X X^T of n examples (any trailing shape is flattened), float64."""
    x = x.flatten(1).double()
    return x @ x.T


def hsic(k: torch.Tensor, l: torch.Tensor) -> torch.Tensor:
    """Biased HSIC of Gram matrices: tr(K H L H) / (n - 1)^2, H = I - 11^T/n."""
    n = k.shape[0]
    kc = k - k.mean(dim=0, keepdim=True) - k.mean(dim=1, keepdim=True) + k.mean()
    return (kc * l).sum() / (n - 1) ** 2  # tr(HKH L) with K, L symmetric


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) with linear kernels.

    Args:
        x: n x p representations (or n x ...; flattened).
        y: n x q representations of the same n examples.
    """
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"CKA needs the same examples in both: {x.shape[0]} vs {y.shape[0]}")
    k, l = gram(x), gram(y)
    return hsic(k, l) / (hsic(k, k) * hsic(l, l)).sqrt()


def unbiased_hsic(ks: torch.Tensor, ls: torch.Tensor) -> torch.Tensor:
    """Unbiased HSIC (Song et al. 2012) between every pair of A x n x n and B x n x n Gram matrices: A x B.

    HSIC_1 = [tr(K~ L~) + 1^T K~ 1 1^T L~ 1 / ((n-1)(n-2)) - 2/(n-2) 1^T K~ L~ 1] / (n (n-3)), K~ = K with a
    zero diagonal.
    """
    n = ks.shape[-1]
    if n < 4:
        raise ValueError(f"unbiased HSIC needs at least 4 examples per minibatch, got {n}")
    ks = ks * (1 - torch.eye(n, dtype=ks.dtype, device=ks.device))
    ls = ls * (1 - torch.eye(n, dtype=ls.dtype, device=ls.device))
    trace = torch.einsum("aij,bij->ab", ks, ls)
    sums = torch.outer(ks.sum(dim=(1, 2)), ls.sum(dim=(1, 2))) / ((n - 1) * (n - 2))
    cross = ks.sum(dim=2) @ ls.sum(dim=2).T * (2 / (n - 2))
    return (trace + sums - cross) / (n * (n - 3))


def _minibatch_cka_matrix(pairs: Iterable[tuple[Sequence[torch.Tensor], Sequence[torch.Tensor]]]) -> torch.Tensor:
    """Minibatch CKA between every representation of side A and of side B: sums of unbiased HSIC over
    minibatches, then CKA = sum HSIC(K, L) / sqrt(sum HSIC(K, K) sum HSIC(L, L))."""
    xy = xx = yy = None
    for xs, ys in pairs:
        ka, kb = torch.stack([gram(x) for x in xs]), torch.stack([gram(y) for y in ys])
        terms = (unbiased_hsic(ka, kb), unbiased_hsic(ka, ka).diagonal(), unbiased_hsic(kb, kb).diagonal())
        xy, xx, yy = terms if xy is None else (xy + terms[0], xx + terms[1], yy + terms[2])
    if xy is None:
        raise ValueError("minibatch CKA got no minibatches")
    return xy / torch.outer(xx, yy).sqrt()


def minibatch_cka(x_batches: Iterable[torch.Tensor], y_batches: Iterable[torch.Tensor]) -> torch.Tensor:
    """Minibatch linear CKA of two representations given as matching minibatches (each n >= 4 examples).

    Args:
        x_batches: minibatches of representation X (n_i x ...).
        y_batches: the same examples' representation Y, batch for batch.
    """
    return _minibatch_cka_matrix(([x], [y]) for x, y in zip(x_batches, y_batches, strict=True))[0, 0]


@torch.no_grad()
def layer_similarity(model_a: nn.Module, model_b: nn.Module, loader: Iterable, *,
                     max_batches: int | None = None, progress: bool = True) -> dict[str, object]:
    """Minibatch CKA between every layer of ``model_a`` and every layer of ``model_b``: La x Lb.

    Each model sees the images through its own preprocessing (``prepare`` with its ``data_config``), so a
    1-channel 28 x 28 CNN and a 3-channel 224 x 224 ViT can be compared on the same examples. Layers are the
    ViT block outputs (all tokens) and the CNN's ``feature_info`` stages (all positions), flattened.

    Args:
        model_a: a vitlens ViT or a timm CNN.
        model_b: a vitlens ViT or a timm CNN (may be ``model_a`` itself).
        loader: batches of images in [0, 1] (or (images, labels)); batches of fewer than 4 are skipped.
        max_batches: stop after this many batches.
        progress: show a tqdm bar.

    Returns:
        ``cka`` (La x Lb float64 tensor), ``layers_a``, ``layers_b`` (names), ``count`` (examples used).
    """
    seen = 0

    def pairs():
        nonlocal seen
        for i, item in enumerate(tqdm(loader, desc="CKA", unit="batch", disable=not progress,
                                      total=max_batches)):
            if max_batches is not None and i >= max_batches:
                break
            x = item[0] if isinstance(item, (tuple, list)) else item
            if len(x) < 4:  # the unbiased HSIC estimator is undefined below 4 examples
                continue
            seen += len(x)
            fa = layer_features(model_a, prepare(x, data_config_of(model_a)))
            fb = layer_features(model_b, prepare(x, data_config_of(model_b)))
            yield list(fa.values()), list(fb.values())

    cka = _minibatch_cka_matrix(pairs())
    return dict(cka=cka, layers_a=layer_names(model_a), layers_b=layer_names(model_b), count=seen)
