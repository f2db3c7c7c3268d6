"""Principal components of the patch-embedding filters (paper Fig. 7 left)."""
from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def patch_embedding_components(model: nn.Module, k: int = 28) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``k`` principal components of E, as images.

    E (conv weight D x C x P x P) is read as D filters of C*P*P values, centred over the D filters and
    decomposed by SVD (scikit-learn's PCA, exact solver).

    Args:
        model: a plain (non-hybrid) ViT, vitlens's or timm's; the hybrid's E acts on ResNet features, not pixels.
        k: number of components (the paper shows 28); at most min(D, C*P*P).

    Returns:
        components k x C x P x P (unit norm, sign as PCA returns it) and the explained-variance ratio (k).
    """
    if hasattr(model.patch_embed, "backbone"):
        raise ValueError("the hybrid's patch embedding is a 1x1 projection of ResNet features, not pixel "
                         "filters; patch_embedding_components needs a plain ViT")
    weight = model.patch_embed.proj.weight.detach().double().cpu()  # D x C x P x P
    filters = weight.flatten(1).numpy()
    k_max = min(filters.shape)
    if not 1 <= k <= k_max:
        raise ValueError(f"k must be in 1..{k_max} for a {tuple(weight.shape)} patch embedding, got {k}")
    from sklearn.decomposition import PCA  # on first use, like probe.py's scikit-learn: the CLI imports this module

    pca = PCA(n_components=k, svd_solver="full").fit(filters)
    components = torch.from_numpy(pca.components_).reshape(k, *weight.shape[1:]).float()
    return components, torch.from_numpy(pca.explained_variance_ratio_).float()
