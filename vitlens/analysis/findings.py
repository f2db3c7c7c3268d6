"""The paper's findings set against what the model on screen shows, computed from the same numbers the figures draw,
so the words follow the model (the bundled Fashion-MNIST ViT does not reproduce every finding, and says so).

Each function returns the numbers it judged by and ``text``: what the paper found, then what this model shows.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch


def distance_finding(mean: torch.Tensor, uniform: float, *, local: float = 0.5) -> dict[str, Any]:
    """Mean attention distance per layer against uniform attention (paper Fig. 7 right: in ViT-L/16 some heads of the
    lowest layers attend locally, others globally, and deeper layers attend globally).

    Args:
        mean: L x H distances in pixels (:func:`vitlens.analysis.attention_distance`'s ``mean``).
        uniform: the distance of uniform attention over the grid (the dashed line).
        local: a head counts as local below this fraction of ``uniform``.
    """
    per_layer = mean.double().mean(dim=1)
    local_heads = (mean < local * uniform).sum(dim=1).tolist()
    spread = (per_layer.min().item() / uniform, per_layer.max().item() / uniform)
    paper = ("The paper (Fig. 7 right, ViT-L/16): some heads of the lowest layers attend locally, others across "
             "the image, and attention distance grows with depth.")
    if not any(local_heads):
        shows = (f"This model: every layer's mean is {spread[0]:.0%}-{spread[1]:.0%} of the {uniform:.1f} px of "
                 f"uniform attention and no head is below {local:.0%} of it: its heads attend almost uniformly at "
                 f"every depth, with no local heads early.")
    else:
        layers = ", ".join(f"{l + 1} ({n})" for l, n in enumerate(local_heads) if n)
        grows = per_layer[-1] > per_layer[0]
        shows = (f"This model: local heads (below {local:.0%} of uniform attention's {uniform:.1f} px) in layers "
                 f"{layers}; the layer mean {'grows' if grows else 'does not grow'} with depth "
                 f"({per_layer[0]:.1f} px in layer 1, {per_layer[-1]:.1f} px in layer {len(per_layer)}).")
    return dict(layer_mean=per_layer.tolist(), local_heads=local_heads, uniform=uniform, text=f"{paper} {shows}")


def posembed_finding(similarity: torch.Tensor) -> dict[str, Any]:
    """Where each patch's position embedding is most similar to another's (paper Fig. 7 centre: closer patches have
    more similar embeddings, and the row-column structure appears), and whether a left-right mirror pattern shows
    (patch (r, c) most like (r, gw - 1 - c), the trace horizontal flips leave in training).

    Args:
        similarity: gh x gw x gh x gw cosine similarities (:func:`position_embedding_similarity`).
    """
    gh, gw = similarity.shape[:2]
    flat = similarity.reshape(gh * gw, gh * gw).clone()
    flat.fill_diagonal_(-float("inf"))  # every tile peaks at its own position: look at the next best
    best = flat.argmax(dim=1)
    rows, cols = torch.arange(gh * gw) // gw, torch.arange(gh * gw) % gw
    neighbour = ((best // gw - rows).abs() <= 1) & ((best % gw - cols).abs() <= 1)
    off_centre = cols != gw - 1 - cols
    mirror = (best == rows * gw + (gw - 1 - cols)) & off_centre
    same_row_or_col = (best // gw == rows) | (best % gw == cols)
    n_off = int(off_centre.sum())
    numbers = dict(neighbour_share=neighbour.double().mean().item(),
                   row_or_column_share=same_row_or_col.double().mean().item(),
                   mirror_share=mirror.double().sum().item() / max(n_off, 1))
    paper = ("The paper (Fig. 7 centre): each tile peaks at its own patch, closer patches have more similar "
             "embeddings, and patches in the same row or column are alike.")
    shows = (f"This model: the most similar other patch is a grid neighbour for {numbers['neighbour_share']:.0%} of "
             f"the patches and in the same row or column for {numbers['row_or_column_share']:.0%}")
    if numbers["mirror_share"] >= 0.25:
        shows += (f"; for {numbers['mirror_share']:.0%} of the off-centre patches it is the left-right mirror "
                  f"position (r, {gw} - 1 - c), a symmetry horizontal flips in training leave")
    return dict(**numbers, text=f"{paper} {shows}.")


def probe_finding(layers: Sequence[str], logistic: Mapping[str, float] | None,
                  fewshot: Mapping[str, Mapping[int, Mapping[str, float]]] | None) -> dict[str, Any]:
    """The layer whose frozen features a linear probe reads best (paper section 4.1 evaluates the final
    representation, pre-logits)."""
    out: dict[str, Any] = {}
    parts = []
    if logistic:
        best = max(layers, key=lambda n: logistic[n])
        out["best_logistic"] = best
        parts.append(f"logistic regression peaks at {best} ({logistic[best]:.3f}; pre-logits "
                     f"{logistic.get('pre_logits', float('nan')):.3f})")
    if fewshot:
        k = max(next(iter(fewshot.values())))
        best = max(layers, key=lambda n: fewshot[n][k]["mean"])
        out["best_fewshot"] = {k: best}
        parts.append(f"{k}-shot ridge peaks at {best} ({fewshot[best][k]['mean']:.3f})")
    paper = "The paper (section 4.1) evaluates the final representation (pre-logits)."
    return dict(**out, text=f"{paper} This model: {'; '.join(parts)}." if parts else paper)


def norms_finding(found: Mapping[str, Any], layers: Sequence[int]) -> dict[str, Any]:
    """Which layers hold high-norm tokens and how much of the class token's attention they take (Darcet et al. 2024:
    large ViTs trained long grow a few tokens with ~10x the usual norm, from the middle layers on, in background
    patches, and they draw much of the class token's attention).

    Args:
        found: :func:`vitlens.analysis.high_norm_tokens` output.
        layers: the block index of each of its layers (numbered from 1 in the text).
    """
    with_outliers = [i for i, n in enumerate(found["count"]) if n > 0]
    paper = ("Darcet et al. (2024): large ViTs trained long (DINOv2, OpenCLIP, DeiT-III) grow a few tokens with about "
             "10x the usual norm, from the middle layers on, in low-information patches, and these take much of the "
             "class token's attention; register tokens give them a place of their own.")
    if not with_outliers:
        return dict(layers_with=[], text=f"{paper} This model: no high-norm tokens in any layer (the patch-token "
                                         f"norms are unimodal), as the paper finds for small or briefly trained ViTs.")
    peak = max(with_outliers, key=lambda i: found["attention_share"][i])
    shows = (f"This model: high-norm tokens in layer{'s' if len(with_outliers) > 1 else ''} "
             f"{', '.join(str(layers[i] + 1) for i in with_outliers)}; in layer {layers[peak] + 1}, "
             f"{found['count'][peak]:.2f} per image on average (in {found['images_with'][peak]:.0%} of the images), "
             f"taking {found['attention_share'][peak]:.0%} of the class token's attention.")
    return dict(layers_with=[layers[i] for i in with_outliers], peak_layer=layers[peak], text=f"{paper} {shows}")
