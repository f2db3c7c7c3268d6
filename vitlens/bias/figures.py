"""Plotly figures for the inductive-bias probes and the data-size sweep (write them with
``vitlens.analysis.figures.write_outputs``: HTML, PNG via kaleido, JSON)."""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from ..analysis.figures import SCREEN_WIDTH, finish, panels, panels_layout

COLORS = qualitative.D3
ARCH_NAMES = {"vit": "ViT", "cnn": "CNN"}


def _finish(fig: go.Figure, title: str, width: int, height: int, **kw: Any) -> go.Figure:
    """vitlens' layout (:func:`vitlens.analysis.figures.finish`) on a white template, as the probes' lines read
    best."""
    return finish(fig, title, width, height, template="plotly_white", **kw)


def translation_figure(results: Mapping[str, Mapping[str, Any]], title: str) -> go.Figure:
    """Consistency and last-layer equivariance error against shift size; filled markers are whole-patch
    (whole-stride) shifts, open markers sub-patch ones.

    Args:
        results: model label -> :func:`vitlens.bias.translation_probe` output.
        title: which models and data.
    """
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1, subplot_titles=(
        "Prediction consistency (top-1 unchanged)", "Equivariance error of the last layer (cosine distance)"))
    for k, (label, r) in enumerate(results.items()):
        color = COLORS[k % len(COLORS)]
        symbols = ["circle" if whole else "circle-open" for whole in r["whole_patch"]]
        last = list(r["equivariance"])[-1]
        for col, y in ((1, r["consistency"]), (2, r["equivariance"][last])):
            fig.add_trace(go.Scatter(x=r["shifts"], y=y, mode="lines+markers", name=f"{label} (stride {r['stride']:g})",
                                     legendgroup=label, showlegend=col == 1, line=dict(color=color),
                                     marker=dict(symbol=symbols, size=8, color=color)), row=1, col=col)
    fig.update_xaxes(title_text="diagonal circular shift (pixels)")
    fig.update_yaxes(range=[0, 1.02], row=1, col=1)
    fig.update_yaxes(rangemode="tozero", row=1, col=2)
    return _finish(fig, title, SCREEN_WIDTH, 430)


def occlusion_figure(results: Mapping[str, Mapping[str, Any]], title: str) -> go.Figure:
    """Accuracy under random PatchDrop and under patch shuffling (Naseer et al. 2021, Fig. 3 and 10 style).

    Args:
        results: model label -> :func:`vitlens.bias.occlusion_probe` output.
        title: which models and data.
    """
    patch = next(iter(results.values()))["patch_size"]
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1, subplot_titles=(
        f"Random PatchDrop ({patch} x {patch} patches)", "Patch shuffling"))
    for k, (label, r) in enumerate(results.items()):
        color = COLORS[k % len(COLORS)]
        fig.add_trace(go.Scatter(x=[100 * f for f in r["drop"]["fraction"]], y=r["drop"]["accuracy"], name=label,
                                 legendgroup=label, mode="lines+markers", line=dict(color=color)), row=1, col=1)
        fig.add_trace(go.Scatter(x=[f"{g} x {g}" for g in r["shuffle"]["grid"]], y=r["shuffle"]["accuracy"],
                                 name=label, legendgroup=label, showlegend=False, mode="lines+markers",
                                 line=dict(color=color)), row=1, col=2)
    fig.update_xaxes(title_text="patches dropped (%)", row=1, col=1)
    fig.update_xaxes(title_text="shuffle grid (pieces per side)", type="category", row=1, col=2)
    fig.update_yaxes(title_text="accuracy", range=[0, 1.02])
    return _finish(fig, title, SCREEN_WIDTH, 430)


def erf_figure(results: Mapping[str, Mapping[str, Any]], title: str,
               attention_distance: Mapping[str, Sequence[float]] | None = None) -> go.Figure:
    """ERF radii (50 % and 90 % of the mass) per layer against relative depth, beside each ViT's mean attention
    distance (mean over heads), all in pixels.

    Args:
        results: model label -> :func:`vitlens.bias.erf_probe` output.
        title: which models and data.
        attention_distance: model label -> per-layer mean attention distance (ViTs only).
    """
    fig = go.Figure()
    for k, (label, r) in enumerate(results.items()):
        color = COLORS[k % len(COLORS)]
        depth = np.arange(1, len(r["layers"]) + 1) / len(r["layers"])
        for q, dash in zip(r["radius"], ("solid", "dash", "dot")):
            fig.add_trace(go.Scatter(x=depth, y=r["radius"][q], mode="lines+markers", line=dict(color=color, dash=dash),
                                     name=f"{label}: ERF radius, {float(q):.0%} of mass", text=r["layers"],
                                     hovertemplate="%{text}: %{y:.1f} px"))
        if attention_distance and label in attention_distance:
            fig.add_trace(go.Scatter(x=depth, y=attention_distance[label], mode="markers",
                                     marker=dict(symbol="diamond", size=10, color=color),
                                     name=f"{label}: mean attention distance", text=r["layers"]))
    return _finish(fig, title, 900, 450, xaxis_title="relative depth (layer / number of layers)",
                   yaxis_title="pixels", yaxis_rangemode="tozero", legend=dict(font=dict(size=10)))


def erf_maps_figure(results: Mapping[str, Mapping[str, Any]], title: str, columns: int = 3) -> go.Figure:
    """ERF heat maps (each normalised to its maximum) of evenly spaced layers, a row of panels per model.

    Args:
        results: model label -> :func:`vitlens.bias.erf_probe` output (with its ``erf`` maps).
        title: which models and data.
        columns: layers shown per model (the first, the last and evenly spaced ones between).
    """
    blocks, picked = [], []
    for label, r in results.items():
        n = len(r["layers"])
        layers = [r["layers"][i] for i in sorted({round(j * (n - 1) / max(1, columns - 1)) for j in range(columns)})]
        picked.append(layers)
        blocks.append([f"{label} {layer}" for layer in layers])
    fig, cells, size = panels(blocks)
    for i, (r, layers, at) in enumerate(zip(results.values(), picked, cells)):
        for j, (layer, (row, col)) in enumerate(zip(layers, at)):
            erf = np.asarray(r["erf"][layer], dtype=float)
            fig.add_trace(go.Heatmap(z=erf / max(erf.max(), 1e-30), colorscale="Viridis", zmin=0, zmax=1,
                                     showscale=i == 0 and j == 0, colorbar=dict(title=dict(text="ERF / max",
                                                                                           side="right"))), row, col)
    return panels_layout(fig, title, size)


def sweep_figure(summary: Mapping[str, Mapping[str, Sequence[float]]], title: str,
                 budget_images: int | None = None) -> go.Figure:
    """Test accuracy against training-set size (log axis), mean over seeds with one-standard-deviation error bars.

    Args:
        summary: :func:`vitlens.bias.sweep.summarise` output.
        title: the budget and data.
        budget_images: steps x batch; marked, since from that size on each image is seen at most once and the
            budget, not the data, limits accuracy.
    """
    fig = go.Figure()
    if budget_images:
        fig.add_vline(x=budget_images, line=dict(dash="dot", color="grey"))
        # on a log axis annotations take log10 coordinates (add_vline's own annotation lands off the plot)
        fig.add_annotation(x=math.log10(budget_images), y=0.02, yref="paper", xanchor="right", showarrow=False,
                           text=f"steps x batch = {budget_images:,} images ", font=dict(color="grey"))
    for k, (arch, s) in enumerate(summary.items()):
        seeds = f"{min(s['n'])}-{max(s['n'])}" if min(s["n"]) != max(s["n"]) else f"{s['n'][0]}"
        fig.add_trace(go.Scatter(x=s["size"], y=s["mean"], error_y=dict(array=s["std"], width=4), mode="lines+markers",
                                 name=f"{ARCH_NAMES.get(arch, arch)} (mean ± std over {seeds} seeds)",
                                 line=dict(color=COLORS[k % len(COLORS)])))
    return _finish(fig, title, 800, 450, xaxis=dict(type="log", title="training images (log scale)", dtick="D2"),
                   yaxis_title="test accuracy")
