"""Every inductive-bias probe on several models and the same images: what ``vitlens analyze bias probes`` and the
app's Inductive biases page both run, so the two show the same numbers."""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import plotly.graph_objects as go
import torch
from torch import nn

from ..analysis.distance import attention_distance
from ..images import prepare
from ..models.layout import is_vit, token_layout
from ..models.timm_convert import data_config_of
from . import figures
from .erf import erf_probe
from .occlusion import occlusion_probe
from .translation import translation_probe

PROBES = ("translation", "occlusion", "erf")


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    device = next(model.parameters()).device
    return torch.cat([model(b.to(device)).argmax(-1).cpu() for b in x.split(batch_size)])


def compare_models(models: Mapping[str, nn.Module], images: torch.Tensor, labels: torch.Tensor, *,
                   probes: Sequence[str] = PROBES, patch_size: int | None = None,
                   shifts: Sequence[int] | None = None, translation_images: int = 256, erf_images: int = 64,
                   agreement: bool = False, seed: int = 0, batch_size: int = 64,
                   on_step: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Translation, occlusion / shuffling and ERF probes of every model on the same images.

    Args:
        models: label -> ViT or timm CNN (eval mode, on their device).
        images: N x C x H x W in [0, 1], before any model's normalisation (each model gets its own
            ``data_config``, so a 1-channel and a 3-channel model can be compared on the same images).
        labels: N class indices.
        probes: which of ``translation``, ``occlusion``, ``erf``.
        patch_size: PatchDrop square side; the first ViT's patch size when None.
        shifts: translation shift sizes in pixels (default 0 .. 2 x stride).
        translation_images: images used by the translation probe (the first ones).
        erf_images: images used by the ERF probe and the ViTs' mean attention distance.
        agreement: score occlusion against each model's clean prediction instead of the labels.
        seed: seeds the drop masks and shuffles (the same for every model).
        batch_size: images per forward pass.
        on_step: called with a short description before each probe of each model (progress display).

    Returns:
        probe -> label -> that probe's output; ``attention_distance`` (ViT label -> per-layer mean over heads, in
        pixels, on the ERF images); ``score`` (what occlusion's accuracy means).
    """
    unknown = set(probes) - set(PROBES)
    if unknown:
        raise ValueError(f"unknown probe(s) {sorted(unknown)}; choose from {list(PROBES)}")
    vits = [m for m in models.values() if is_vit(m)]
    patch_size = patch_size or (token_layout(vits[0]).square_patch if vits else None)
    if "occlusion" in probes and patch_size is None:
        raise ValueError("a patch size is needed when no ViT is compared (it sets the PatchDrop squares)")
    step = on_step or (lambda _: None)
    out: dict[str, Any] = {p: {} for p in probes}
    out["attention_distance"] = {}
    out["score"] = "agreement with the clean prediction" if agreement else "accuracy"
    for label, model in models.items():
        x = prepare(images, data_config_of(model))
        if "translation" in probes:
            step(f"{label}: translation")
            out["translation"][label] = translation_probe(model, x[:translation_images], shifts,
                                                          batch_size=batch_size)
        if "occlusion" in probes:
            step(f"{label}: occlusion and shuffling")
            y = _predict(model, x, batch_size) if agreement else labels
            out["occlusion"][label] = occlusion_probe(model, x, y, patch_size=patch_size, seed=seed,
                                                      batch_size=batch_size)
        if "erf" in probes:
            step(f"{label}: effective receptive field")
            out["erf"][label] = erf_probe(model, x[:erf_images], batch_size=max(1, batch_size // 4))
            if is_vit(model):
                d = attention_distance(model, images[:erf_images], batch_size=batch_size, progress=False)
                out["attention_distance"][label] = d["mean"].mean(dim=-1).tolist()
    return out


def comparison_figures(result: Mapping[str, Any], subtitle: str) -> dict[str, go.Figure]:
    """The figures of :func:`compare_models`' result.

    Args:
        result: :func:`compare_models` output.
        subtitle: the models and the data; each figure adds how many images its probe used.
    """
    total = max(next(iter(result[p].values()))["count"] for p in PROBES if p in result)

    def title(what: str, probe: str) -> str:
        count = next(iter(result[probe].values()))["count"]
        used = f"the first {count} of the {total} images" if count < total else f"{count} images"
        return f"{what}<br><sup>{subtitle}; {used}</sup>"

    figs = {}
    if "translation" in result:
        figs["translation"] = figures.translation_figure(
            result["translation"], title("Translation: consistency and equivariance (Zhang 2019)", "translation"))
    if "occlusion" in result:
        figs["occlusion"] = figures.occlusion_figure(
            result["occlusion"], title(f"Occlusion and shuffling (Naseer et al. 2021): {result['score']}", "occlusion"))
    if "erf" in result:
        figs["erf"] = figures.erf_figure(result["erf"], title(
            "Effective receptive field (Luo et al. 2016): the radius holding its mass, beside the mean attention "
            "distance", "erf"), result["attention_distance"])
        figs["erf_maps"] = figures.erf_maps_figure(result["erf"], title(
            "Effective receptive field of the centre unit, layer by layer (|d output / d input|)", "erf"))
    return figs


def comparison_numbers(result: Mapping[str, Any]) -> dict[str, Any]:
    """The result without the ERF maps (H x W per layer: drawn in the figure, too large for JSON)."""
    numbers = dict(result)
    if "erf" in numbers:
        numbers["erf"] = {label: {k: v for k, v in r.items() if k != "erf"} for label, r in numbers["erf"].items()}
    return numbers
