"""High-norm tokens (Darcet, Oquab, Mairal & Bojanowski 2024, "Vision Transformers Need Registers").

Large ViTs trained long (DINOv2, OpenCLIP, DeiT-III) grow a few output tokens whose norm is ~10x the others', in
low-information background patches, from the middle layers on; they hold global rather than local information and
draw much of the class token's attention (the artifacts in attention maps). The paper finds the norms bimodal and
splits them by hand (norm 150 for DINOv2 ViT-g). Here the split is derived from each layer's norms the same way,
from a two-component mixture fitted to the log norms (:func:`split_threshold`), and kept only where the two
components are far apart (mean norms at least ``min_ratio`` apart): a layer whose norms are unimodal has no
outliers. A fixed ``threshold`` (the paper's 150) overrides it.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..capture import capture
from ..images import batches, prepare
from ..models.layout import TokenLayout, token_layout
from ..models.timm_convert import data_config_of


@torch.no_grad()
def token_norms(model: nn.Module, data: torch.Tensor | Iterable, *, layers: Sequence[int] | None = None,
                batch_size: int = 32, progress: bool = True) -> dict[str, object]:
    """The L2 norm of every token of every chosen block's output, and the class token's attention to each token,
    over a batch or a stream of images (memory: two small numbers per image, layer and token).

    Args:
        model: a ViT :func:`vitlens.capture` supports.
        data: N x C x H x W images in [0, 1], or an iterable of such batches (or of (images, labels)); each batch
            is prepared with the model's data config.
        layers: block indices; all when None.
        batch_size: batch size when ``data`` is a tensor.
        progress: show a tqdm bar.

    Returns:
        ``norms``: images x layers x tokens (float32); ``attention``: images x layers x tokens, the class token's
        attention (mean over heads; the mean patch query's without a class token); ``layers``; ``layout``.
    """
    device, config = next(model.parameters()).device, data_config_of(model)
    norms, attention, layout, chosen = [], [], None, None
    for x in tqdm(batches(data, batch_size), desc="token norms", unit="batch", disable=not progress):
        x = prepare(x, config).to(device)
        with capture(model, tokens=True, layers=layers) as rec:
            model(x)
        layout, chosen = token_layout(model, x.shape[-2:]), rec.layers
        norms.append(torch.stack([t.float().norm(dim=-1) for t in rec.tokens], dim=1).cpu())
        attention.append(torch.stack([layout.query(a.float().mean(dim=1)) for a in rec.attentions], dim=1).cpu())
    if layout is None:
        raise ValueError("token_norms got no images")
    return dict(norms=torch.cat(norms), attention=torch.cat(attention), layers=chosen, layout=layout)


def split_threshold(norms: torch.Tensor, min_ratio: float = 4.0, max_samples: int = 100_000) -> float:
    """The norm that splits a bimodal set of token norms, or inf when the set is not bimodal enough.

    A two-component Gaussian mixture is fitted to the log norms (scikit-learn; it copes with a small high class,
    where Otsu's split leans into the large one); the split is where a norm becomes likelier to belong to the high
    component. The set counts as bimodal when the components' mean norms are at least ``min_ratio`` apart.

    Args:
        norms: token norms, any shape.
        min_ratio: how far apart (as a ratio of norms) the two components must be.
        max_samples: fit on at most this many norms (evenly strided), for speed.
    """
    from sklearn.mixture import GaussianMixture

    logs = norms.double().clamp_min(1e-12).log().flatten()
    logs = logs[::max(1, len(logs) // max_samples)].numpy().reshape(-1, 1)
    if len(logs) < 4 or logs.max() - logs.min() < 1e-9:
        return math.inf
    gmm = GaussianMixture(2, random_state=0).fit(logs)
    lo, hi = sorted(gmm.means_.ravel())
    if math.exp(hi - lo) < min_ratio:
        return math.inf
    grid = np.linspace(lo, hi, 2001).reshape(-1, 1)
    high = int(np.argmax(gmm.means_.ravel()))
    likelier_high = gmm.predict_proba(grid)[:, high] > 0.5
    return float(math.exp(grid[np.argmax(likelier_high), 0]))


def high_norm_tokens(result: dict[str, object], threshold: float | None = None,
                     min_ratio: float = 4.0) -> dict[str, object]:
    """Per layer: which patch tokens are outliers, how many, where they sit, and what share of the class token's
    attention they absorb.

    Args:
        result: :func:`token_norms` output.
        threshold: a fixed norm above which a token is an outlier, for every layer (the paper's 150 for DINOv2
            ViT-g); None derives one per layer from the norms (:func:`split_threshold`).
        min_ratio: with a derived threshold, how far apart the two classes must be (see the module's docstring).

    Returns:
        ``thresholds`` (per layer); ``count`` (per layer, mean outliers per image); ``images_with`` (per layer,
        the fraction of images with at least one); ``positions`` (layers x gh x gw: how often each patch is one);
        ``attention_share`` (per layer, the mean share of the class token's attention that lands on outliers);
        ``outliers`` (images x layers x patches, bool). Only patch tokens are judged: prefix tokens (class,
        registers) hold global information by design.
    """
    layout: TokenLayout = result["layout"]
    norms, attention = layout.patches(result["norms"]), layout.patches(result["attention"])
    thresholds = [threshold if threshold is not None else split_threshold(norms[:, l], min_ratio)
                  for l in range(norms.shape[1])]
    outliers = norms > torch.tensor(thresholds, dtype=norms.dtype).view(1, -1, 1)
    return dict(thresholds=thresholds, count=outliers.float().sum(-1).mean(0).tolist(),
                images_with=outliers.any(-1).float().mean(0).tolist(),
                positions=layout.to_grid(outliers.float().mean(0)),
                attention_share=(attention * outliers).sum(-1).mean(0).tolist(), outliers=outliers)
