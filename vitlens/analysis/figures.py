"""Plotly figures for every analysis, in the paper's style, and writing them as HTML, PNG and JSON.

Every figure function takes a ``title`` that must say which model and which data produced it: the bundled
models know only Fashion-MNIST, and a rollout of a photo through them is a different thing from the paper's.
"""
from __future__ import annotations

import json
import logging
import math
import re
import textwrap
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import plotly.express as px
import plotly.graph_objects as go
import plotly.io as pio
import torch
from plotly.subplots import make_subplots

from ..io import atomic_write

log = logging.getLogger("vitlens")
SCREEN_WIDTH = 940  # px: the app's main column in a 1400 x 1000 window (wide layout, sidebar open)
HALF_WIDTH = 460  # px: one of two columns there
MAP_PANEL = 250  # px: an image or map panel, readable (200 at least) and three to a row in SCREEN_WIDTH
PER_ROW = 3  # map panels to a row
PANEL_GAP, ROW_GAP = 10, 34  # px between panels, and between rows (the next row's panel titles)
COLORBAR = 110  # px right of the panels: a colour bar, its ticks and its title
TITLE_TOP, TITLE_LINE, TITLE_GAP = 12, 22, 8  # px: above the title, per line of its 17 px font, under it
SUBPLOT_TITLE, TICKS_ON_TOP = 20, 14  # px: a row of panel titles, of tick labels above a plot
TITLE_CHAR, SUP_CHAR, TITLE_SIDE = 9.0, 6.5, 20  # px: mean width of a title's character, of a <sup> one; side margin


def _image_trace(pixels: np.ndarray, name: str = "") -> go.Image:
    """An H x W x 3 uint8 image as an embedded PNG (a few kB in the HTML, not a list of every pixel value)."""
    trace = px.imshow(pixels, binary_string=True).data[0]
    return trace.update(name=name, hovertemplate=f"x %{{x}}, y %{{y}}<extra>{name}</extra>")


def _rgb(image: torch.Tensor) -> np.ndarray:
    """C x H x W in [0, 1] (1 or 3 channels) to H x W x 3 uint8."""
    arr = image.detach().float().clamp(0, 1).cpu().numpy()
    arr = np.repeat(arr, 3, axis=0) if arr.shape[0] == 1 else arr
    return (arr.transpose(1, 2, 0) * 255).round().astype(np.uint8)


def alpha_mask(image: torch.Tensor, heat: torch.Tensor, blur_sigma: float = 1.0) -> np.ndarray:
    """The paper's rendering (App. D.8): map / max, Lanczos resize to the image, light Gaussian blur, then the
    map is the image's alpha (the image multiplied by it on black).

    Args:
        image: C x H x W in [0, 1].
        heat: gh x gw non-negative map (e.g. ``cls_map`` of a rollout).
        blur_sigma: Gaussian blur in pixels of the resized map.

    Returns:
        H x W x 3 uint8.
    """
    from PIL import Image
    from scipy.ndimage import gaussian_filter

    h, w = image.shape[-2:]
    m = heat.detach().double().cpu().numpy()
    m = m / m.max() if m.max() > 0 else m
    m = np.asarray(Image.fromarray(m.astype(np.float32), mode="F").resize((w, h), Image.LANCZOS))
    m = np.clip(gaussian_filter(m, blur_sigma), 0, 1)
    return (_rgb(image) * m[..., None]).round().astype(np.uint8)


def wrap_title(title: str, width: int) -> str:
    """``title`` with each of its lines (``<br>`` apart) broken at spaces to fit a figure ``width`` px wide: Plotly
    never wraps a title, and one wider than its figure is cut at both edges. A ``<sup>`` line stays one on each of
    its pieces."""
    lines = []
    for line in title.split("<br>"):
        sup = re.fullmatch(r"<sup>(.*)</sup>", line)
        text = sup.group(1) if sup else line
        # tags and entities count as text: a line is broken a little early, never too late
        pieces = textwrap.wrap(text, int((width - 2 * TITLE_SIDE) / (SUP_CHAR if sup else TITLE_CHAR)),
                               break_long_words=False, break_on_hyphens=False) or [text]
        lines += [f"<sup>{p}</sup>" if sup else p for p in pieces]
    return "<br>".join(lines)


def finish(fig: go.Figure, title: str, width: int, height: int, header: int | None = None, **kw: Any) -> go.Figure:
    """The layout every vitlens figure shares: ``title`` (model and data) wrapped to the figure's width, above a
    plot area of width x ``height`` pixels, with a top margin of just the title's lines (and the subplot titles'
    row): the same layout on screen and in the exported PNG.

    Args:
        fig: the figure, its traces and axes set.
        title: what, which model, which data; ``<br>`` starts a line, ``<sup>...</sup>`` a smaller one.
        width: the whole figure's width in pixels (:data:`SCREEN_WIDTH` at most to be shown whole in the app).
        height: the plot area's height in pixels (subplots and the spacing between them).
        header: pixels of labels between the title and the plot area (default: a row when there are panel titles).
        **kw: more layout (axis titles, margins other than the top, legend...).
    """
    title = wrap_title(title, width)
    if header is None:  # make_subplots' and facets' panel titles are annotations anchored at their panel's top
        header = SUBPLOT_TITLE * any(a.yanchor == "bottom" and a.yref == "paper" and a.text
                                     for a in fig.layout.annotations)
    lines = title.count("<br>") + 1
    top = TITLE_TOP + TITLE_LINE * lines + header + TITLE_GAP
    # Plotly raises a title of several lines by half a line whatever yanchor says (measured in chromium)
    fig.update_layout(title=dict(text=title, y=1 - (TITLE_TOP + TITLE_LINE / 2 * (lines > 1)) / (height + top),
                                 yanchor="top"), width=width, height=height + top, **kw)
    return fig.update_layout(margin=dict(t=top))


def fit_width(fig: go.Figure, width: int) -> go.Figure:
    """A figure made by :func:`finish` redrawn ``width`` px wide (e.g. :data:`HALF_WIDTH`, a column of two), its
    title wrapped again to fit and its legend under the plot (beside it, it would leave the plot a sliver)."""
    fig.update_layout(legend=dict(orientation="h", yref="container", y=0, yanchor="bottom", x=0, xanchor="left"),
                      margin_r=20)  # a colour bar still pushes the margin out
    top = fig.layout.margin.t
    return finish(fig, fig.layout.title.text, width, fig.layout.height - top,
                  header=top - TITLE_TOP - TITLE_LINE * (fig.layout.title.text.count("<br>") + 1) - TITLE_GAP)


def panels(blocks: Sequence[Sequence[str]], per_row: int = PER_ROW, panel: int = MAP_PANEL
            ) -> tuple[go.Figure, list[list[tuple[int, int]]], tuple[int, int]]:
    """Subplots for blocks of map panels (one block per image), ``per_row`` to a row, each block on rows of its own:
    every panel ``panel`` px square with its title above it, cells left over hidden, pixels square and each map at
    the top left of its cell (so no empty band opens under the titles).

    Args:
        blocks: each block's panel titles ("" for none).

    Returns:
        the figure, each panel's (row, col) per block, and the plot area's (width, height) in pixels.
    """
    cols = min(per_row, max(map(len, blocks)))
    spans = [math.ceil(len(b) / cols) for b in blocks]
    rows = sum(spans)
    size = (cols * panel + (cols - 1) * PANEL_GAP, rows * panel + (rows - 1) * ROW_GAP)
    cells, titles, first = [], [""] * rows * cols, 1
    for b, span in zip(blocks, spans):
        cells.append([(first + i // cols, i % cols + 1) for i in range(len(b))])
        for i, name in enumerate(b):
            titles[(first - 1) * cols + i] = name
        first += span
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, horizontal_spacing=PANEL_GAP / size[0],
                        vertical_spacing=ROW_GAP / size[1] if rows > 1 else 0)
    used = {cell for b in cells for cell in b}
    for r in range(1, rows + 1):
        for c in range(1, cols + 1):
            n = (r - 1) * cols + c
            fig.update_xaxes(constrain="domain", constraintoward="left", visible=(r, c) in used, row=r, col=c)
            fig.update_yaxes(scaleanchor="x" if n == 1 else f"x{n}", constrain="domain", constraintoward="top",
                             visible=(r, c) in used, autorange="reversed", row=r, col=c)
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False)
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False)
    fig.update_annotations(font_size=13)
    return fig, cells, size


def panels_layout(fig: go.Figure, title: str, size: tuple[int, int], left: int = 10, colorbar: bool = True
                   ) -> go.Figure:
    """:func:`finish` for :func:`panels`: margins of just the row labels (``left``) and the colour bar."""
    right = COLORBAR if colorbar else 10
    return finish(fig, title, left + size[0] + right, size[1], plot_bgcolor="white",
                  margin=dict(l=left, r=right, b=10))


def rollout_figure(images: Sequence[torch.Tensor], maps: Mapping[str, torch.Tensor], title: str,
                   row_labels: Sequence[str] | None = None) -> go.Figure:
    """One row per image: the input, each map as the paper's alpha mask, and the first map as a heatmap.

    Args:
        images: C x H x W in [0, 1], as shown (not normalised).
        maps: method name -> B x gh x gw maps (B = len(images)), e.g. ``{"rollout": ..., "gradient rollout": ...}``.
        title: which model, which data.
        row_labels: a label per image.
    """
    names = list(maps)
    cols = ["input"] + names + [f"{names[0]}, heatmap"]
    fig, cells, size = panels([cols] + [[""] * len(cols)] * (len(images) - 1))  # titles on the first image's
    for i, (image, at) in enumerate(zip(images, cells)):
        fig.add_trace(_image_trace(_rgb(image), "input"), *at[0])
        for name, (r, c) in zip(names, at[1:]):
            fig.add_trace(_image_trace(alpha_mask(image, maps[name][i]), name), r, c)
        heat = maps[names[0]][i]
        fig.add_trace(go.Heatmap(z=(heat / heat.max()).numpy(), colorscale="Inferno", showscale=i == 0, zmin=0, zmax=1,
                                 colorbar=dict(title=dict(text="map / max", side="right"))), *at[-1])
        if row_labels:
            fig.update_yaxes(title_text=row_labels[i], visible=True, row=at[0][0], col=1)
    return panels_layout(fig, title, size, left=40 if row_labels else 10)


def maps_figure(image: torch.Tensor, maps: torch.Tensor, labels: Sequence[str], title: str, shared: bool = False,
                scale_title: str = "attention / max") -> go.Figure:
    """The input, then one map per panel (N x gh x gw), three to a row.

    Args:
        image: C x H x W in [0, 1], as shown.
        maps: N x gh x gw non-negative maps, e.g. a layer's heads or what one patch attends to in each layer.
        labels: each map's panel title.
        title: which model, which image.
        shared: one colour scale from 0 to the largest value of all maps; False scales each map to its own maximum.
        scale_title: the colour bar's title.
    """
    fig, (at,), size = panels([["input", *labels]])
    fig.add_trace(_image_trace(_rgb(image), "input"), *at[0])
    top = float(maps.max()) if shared else 1.0
    for k, (m, (r, c)) in enumerate(zip(maps, at[1:])):
        z = m if shared or m.max() <= 0 else m / m.max()
        fig.add_trace(go.Heatmap(z=z.numpy(), colorscale="Viridis", zmin=0, zmax=top, showscale=k == 0,
                                 name=labels[k], colorbar=dict(title=dict(text=scale_title, side="right"))), r, c)
    return panels_layout(fig, title, size)


def heads_figure(image: torch.Tensor, maps: torch.Tensor, title: str) -> go.Figure:
    """The input and each head's class-token map (H x gh x gw) of one layer, each over its maximum, DINO-style."""
    return maps_figure(image, maps, [f"head {h + 1}" for h in range(maps.shape[0])], title)


def distance_figure(mean: torch.Tensor, title: str, std: torch.Tensor | None = None,
                    uniform: float | None = None, top: float | None = None) -> go.Figure:
    """Paper Fig. 7 right: mean attention distance (pixels) of every head against network depth (layer).

    Args:
        mean: L x H distances.
        title: which model, which data, how many images.
        std: L x H spread over images, drawn as error bars.
        uniform: the distance of uniform attention over the grid, drawn as a dashed reference line.
        top: the y axis's upper end, to share one scale between models drawn side by side (default: this model's).
    """
    L, H = mean.shape
    fig = go.Figure()
    for h in range(H):
        fig.add_trace(go.Scatter(
            x=np.arange(1, L + 1), y=mean[:, h].numpy(), mode="markers", name=f"head {h + 1}",
            error_y=dict(array=std[:, h].numpy(), thickness=0.8, width=2) if std is not None else None))
    if uniform is not None:
        fig.add_hline(y=uniform, line_dash="dash", line_color="gray", annotation_text="uniform attention",
                      annotation_position="bottom right")
    # from 0: on a range of a few pixels around the uniform line, uniform attention would look structured
    top = top or 1.1 * max(uniform or 0.0, float((mean + (std if std is not None else 0)).max()))
    fig.update_yaxes(range=[0, top])
    fig.update_xaxes(dtick=1)
    return finish(fig, title, 760, 480, xaxis_title="Network depth (layer)",
                  yaxis_title="Mean attention distance (pixels)", legend=dict(font=dict(size=9)))


def posembed_figure(similarity: torch.Tensor, title: str) -> go.Figure:
    """Paper Fig. 7 centre: tile (r, c) is the cosine similarity of patch (r, c)'s embedding with all others."""
    gh, gw = similarity.shape[:2]
    big = np.full((gh * (gh + 1) - 1, gw * (gw + 1) - 1), np.nan)  # one blank row/column between tiles
    for r in range(gh):
        for c in range(gw):
            big[r * (gh + 1):r * (gh + 1) + gh, c * (gw + 1):c * (gw + 1) + gw] = similarity[r, c].numpy()
    fig = go.Figure(go.Heatmap(z=big, zmin=-1, zmax=1, colorscale="Viridis", colorbar=dict(title="Cosine similarity"),
                               hoverongaps=False))
    fig.update_xaxes(title="Input patch column", tickvals=[c * (gw + 1) + (gw - 1) / 2 for c in range(gw)],
                     ticktext=[str(c + 1) for c in range(gw)], showgrid=False, zeroline=False)
    fig.update_yaxes(title="Input patch row", tickvals=[r * (gh + 1) + (gh - 1) / 2 for r in range(gh)],
                     ticktext=[str(r + 1) for r in range(gh)], autorange="reversed", showgrid=False, zeroline=False,
                     scaleanchor="x")
    return finish(fig, title, 760, 640, plot_bgcolor="white")


def filters_figure(components: torch.Tensor, explained: torch.Tensor, title: str, wrap: int = 4) -> go.Figure:
    """Paper Fig. 7 left: principal components of the patch-embedding filters (k x C x P x P), each scaled to
    its own min..max, grayscale for 1-channel models."""
    lo = components.flatten(1).min(1).values.view(-1, 1, 1, 1)
    hi = components.flatten(1).max(1).values.view(-1, 1, 1, 1)
    fig, (at,), size = panels([[f"PC{i + 1} ({100 * explained[i]:.1f}%)" for i in range(len(components))]],
                               per_row=wrap, panel=210)
    for c, (r, col) in zip((components - lo) / (hi - lo).clamp(min=1e-12), at):
        fig.add_trace(_image_trace(_rgb(c)), r, col)
    return panels_layout(fig, title, size, colorbar=False)


def cka_figure(cka: torch.Tensor, layers_a: Sequence[str], layers_b: Sequence[str], title: str, name_a: str = "A",
               name_b: str = "B") -> go.Figure:
    """Layer-by-layer minibatch CKA as a heatmap (Raghu et al. 2021 style), layer 1 at the bottom left."""
    fig = go.Figure(go.Heatmap(z=cka.numpy(), x=list(layers_b), y=list(layers_a), zmin=0, zmax=1,
                               colorscale="Magma", colorbar=dict(title="CKA")))
    return finish(fig, title, 760, 600, xaxis_title=f"{name_b} layer", yaxis_title=f"{name_a} layer")


def probe_figure(layers: Sequence[str], logistic: Mapping[str, float] | None,
                 fewshot: Mapping[str, Mapping[int, Mapping[str, Any]]] | None, title: str) -> go.Figure:
    """Test accuracy of linear probes per layer: logistic regression on all data, and few-shot ridge per shots."""
    fig = go.Figure()
    if logistic:
        fig.add_trace(go.Scatter(x=list(layers), y=[logistic[n] for n in layers], mode="lines+markers",
                                 name="logistic regression (full train)"))
    if fewshot:
        for k in next(iter(fewshot.values())):
            fig.add_trace(go.Scatter(x=list(layers), y=[fewshot[n][k]["mean"] for n in layers], mode="lines+markers",
                                     name=f"{k}-shot ridge", error_y=dict(array=[fewshot[n][k]["std"] for n in layers])))
    return finish(fig, title, 860, 480, xaxis_title="layer (pooled representation)", yaxis_title="test accuracy",
                  yaxis_range=[0, 1])


def _interval(v: Mapping[str, float]) -> str:
    return f"{v['mean']:.3f} [{v['low']:.3f}, {v['high']:.3f}]"


def faithfulness_table_figure(rows: Sequence[Mapping[str, Any]], metrics: Mapping[str, str], title: str,
                              reference: str = "random") -> go.Figure:
    """The explanation benchmark as a table: one row per (method, baseline), each metric's mean over the images with
    its 95 % interval, and the SRG's paired difference from the ``reference`` method.

    Args:
        rows: :func:`vitlens.analysis.faithfulness.faithfulness_table` output.
        metrics: metric name -> ``"lower"`` / ``"higher"`` (which is better), as
            :data:`vitlens.analysis.faithfulness.METRICS`.
        title: which model and which data.
        reference: the method the differences are against.
    """
    diff = f"vs {reference}"
    header = ["method", "baseline"] + [f"{m} ({'↓' if better == 'lower' else '↑'})" for m, better in metrics.items()]
    header.append(f"SRG - SRG of {reference}")
    columns = [[r["method"] for r in rows], [r["baseline"] for r in rows]]
    columns += [[_interval(r[m]) for r in rows] for m in metrics]
    columns.append([_interval(r[diff]["SRG"]) if diff in r else "" for r in rows])
    fig = go.Figure(go.Table(columnwidth=[1.4, 0.8] + [1.6] * (len(header) - 2),
                             header=dict(values=header, align="left", font_size=12),
                             cells=dict(values=columns, align="left", font_size=11, height=26)))
    return finish(fig, title, 1300, 90 + 30 * len(rows))


def faithfulness_curves_figure(fractions: Mapping[str, np.ndarray],
                               curves: Mapping[str, Mapping[str, Mapping[str, np.ndarray]]], title: str,
                               unit: str = "pixels", score: str = "probability of the class") -> go.Figure:
    """Mean deletion and insertion curves per method under one baseline: most relevant first (solid) and least
    relevant first (dotted), in one colour per method.

    Args:
        fractions: ``"deletion"`` / ``"insertion"`` -> steps + 1 fractions switched
            (:attr:`vitlens.analysis.faithfulness.Faithfulness.fractions`).
        curves: method -> ``"deletion"`` / ``"insertion"`` -> ``"morf"`` / ``"lerf"`` -> steps + 1 mean scores.
        title: which model, which data, which baseline.
        unit: what is switched (``"pixels"``, ``"patches"``).
        score: what the curves follow.
    """
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.08, subplot_titles=[
        "Deletion (MoRF: lower is better)", "Insertion (MoRF: higher is better)"])
    colours = px.colors.qualitative.Plotly
    for i, (method, by_mode) in enumerate(curves.items()):
        for col, mode in enumerate(("deletion", "insertion"), start=1):
            for order, dash in (("morf", "solid"), ("lerf", "dot")):
                fig.add_trace(go.Scatter(
                    x=fractions[mode], y=by_mode[mode][order], mode="lines", line=dict(color=colours[i % len(colours)],
                                                                                  dash=dash),
                    name=f"{method} ({'MoRF' if order == 'morf' else 'LeRF'})", legendgroup=method,
                    showlegend=col == 1), row=1, col=col)
    fig.update_xaxes(title_text=f"fraction of {unit} switched", range=[0, 1])
    fig.update_yaxes(title_text=score)
    return finish(fig, title, SCREEN_WIDTH, 460)


def explanation_maps_figure(images: Sequence[torch.Tensor], maps: Mapping[str, torch.Tensor], title: str,
                            row_labels: Sequence[str] | None = None) -> go.Figure:
    """One row per image: the input, then each method's map at the input resolution, scaled by its largest absolute
    value (non-negative maps 0..1 on Inferno; signed ones, such as Integrated Gradients, -1..1 on a diverging scale).

    Args:
        images: C x H x W in [0, 1], as shown.
        maps: method -> B x H x W (B = len(images)).
        title: which model, which data.
        row_labels: a label per image (e.g. its class; ``<br>`` breaks a line).
    """
    names = list(maps)
    fig, cells, size = panels([["input", *names]] + [[""] * (len(names) + 1)] * (len(images) - 1))
    for i, (image, at) in enumerate(zip(images, cells)):
        fig.add_trace(_image_trace(_rgb(image), "input"), *at[0])
        for name, (r, c) in zip(names, at[1:]):
            m = maps[name][i].detach().double().cpu()
            signed = bool(m.min() < 0)
            z = (m / m.abs().max().clamp(min=1e-12)).numpy().astype(np.float32)  # half the HTML of float64
            fig.add_trace(go.Heatmap(z=z, zmin=-1 if signed else 0, zmax=1, showscale=False, name=name,
                                     colorscale="RdBu_r" if signed else "Inferno"), r, c)
        if row_labels:
            fig.update_yaxes(title_text=row_labels[i], title_font_size=11, visible=True, row=at[0][0], col=1)
    return panels_layout(fig, title, size, left=50 if row_labels else 10, colorbar=False)


def norms_figure(norms: torch.Tensor, layers: Sequence[int], found: Mapping[str, Any], title: str) -> go.Figure:
    """High-norm tokens per layer (Darcet et al. 2024): the distribution of patch-token norms (a histogram per
    layer, log scale, the outlier threshold marked) beside the outliers per image and their share of the class
    token's attention.

    Args:
        norms: images x layers x patches token norms (prefix tokens left out).
        layers: the block index of each layer (numbered from 1 in the figure).
        found: :func:`vitlens.analysis.norms.high_norm_tokens` output.
        title: which model, which data.
    """
    logs = norms.double().clamp_min(1e-12).log10()
    edges = torch.linspace(float(logs.min()), float(logs.max()) + 1e-9, 61, dtype=torch.float64)
    hist = torch.stack([torch.histogram(logs[:, l].flatten(), edges).hist for l in range(logs.shape[1])])
    names = [f"layer {l + 1}" for l in layers]
    right = ("Outliers per image and their share of the class attention" if any(found["count"]) else
             "No high-norm tokens: the norms are unimodal in every layer")
    fig = make_subplots(rows=1, cols=2, column_widths=[0.6, 0.4], horizontal_spacing=0.12, subplot_titles=(
        "Patch-token norms per layer (share of tokens)", right))
    centres = 10 ** ((edges[1:] + edges[:-1]) / 2)
    fig.add_trace(go.Heatmap(z=(hist / hist.sum(1, keepdim=True)).numpy(), x=centres.numpy(), y=names,
                             colorscale="Viridis", colorbar=dict(title="share", x=0.52)), row=1, col=1)
    cut = [(t, n) for t, n in zip(found["thresholds"], names) if math.isfinite(t)]
    if cut:
        fig.add_trace(go.Scatter(x=[t for t, _ in cut], y=[n for _, n in cut], mode="markers", name="threshold",
                                 marker=dict(symbol="line-ns-open", size=16, color="red", line_width=3)), row=1, col=1)
    fig.add_trace(go.Bar(x=names, y=found["count"], name="outliers per image"), row=1, col=2)
    fig.add_trace(go.Scatter(x=names, y=found["attention_share"], name="share of class attention",
                             mode="lines+markers"), row=1, col=2)
    fig.update_xaxes(type="log", title_text="token norm", row=1, col=1)
    fig.update_yaxes(rangemode="tozero", row=1, col=2)
    return finish(fig, title, SCREEN_WIDTH, 80 + 28 * len(names) + 200, legend=dict(orientation="h", y=-0.15))


def positions_figure(positions: torch.Tensor, layers: Sequence[int], title: str) -> go.Figure:
    """How often each patch holds a high-norm token, one grid per layer that has any (layers x gh x gw)."""
    keep = [i for i in range(len(layers)) if positions[i].max() > 0] or list(range(len(layers)))
    fig, (cells,), size = panels([[f"layer {layers[i] + 1}" for i in keep]])
    for i, at in zip(keep, cells):  # rows and columns numbered from 1, as layers are
        fig.add_trace(go.Heatmap(z=positions[i].numpy(), x=np.arange(1, positions.shape[2] + 1),
                                 y=np.arange(1, positions.shape[1] + 1), coloraxis="coloraxis",
                                 hovertemplate="patch (row %{y}, column %{x}): %{z:.0%}<extra></extra>"), *at)
    fig.update_layout(coloraxis=dict(colorscale="Magma", cmin=0, cmax=1,
                                     colorbar=dict(title=dict(text="share of images", side="right"))))
    return panels_layout(fig, title, size)


def norm_maps_figure(image: torch.Tensor, norms: torch.Tensor, outliers: torch.Tensor, layers: Sequence[int],
                     title: str) -> go.Figure:
    """One image's patch-token norms per layer, laid over the image on one log colour scale, outliers marked with a
    red x.

    Args:
        image: C x H x W in [0, 1], as shown.
        norms: layers x gh x gw norms of the image's patch tokens.
        outliers: layers x gh x gw bool, the high-norm tokens (:func:`vitlens.analysis.high_norm_tokens`).
        layers: the block index of each layer (numbered from 1 in the figure).
        title: which model, which image.
    """
    (gh, gw), (h, w) = norms.shape[-2:], image.shape[-2:]
    logs = norms.double().clamp_min(1e-12).log10()
    fig, (cells,), size = panels([[f"layer {l + 1}" for l in layers]])
    rgb = _rgb(image)
    for i, at in enumerate(cells):
        fig.add_trace(_image_trace(rgb, "input"), *at)
        # patch (i, j) covers pixels [i h/gh, (i+1) h/gh): the heatmap's cells are centred on those blocks
        fig.add_trace(go.Heatmap(z=logs[i].numpy(), x0=(w / gw - 1) / 2, dx=w / gw, y0=(h / gh - 1) / 2, dy=h / gh,
                                 coloraxis="coloraxis", opacity=0.6, hovertemplate="log10 norm %{z:.2f}"
                                 "<extra></extra>"), *at)
        ys, xs = torch.nonzero(outliers[i], as_tuple=True)
        fig.add_trace(go.Scatter(x=((xs + 0.5) * w / gw - 0.5).tolist(), y=((ys + 0.5) * h / gh - 0.5).tolist(),
                                 mode="markers", name="high-norm token", showlegend=False,
                                 marker=dict(symbol="x-thin-open", size=max(6, 160 // gw), color="red",
                                             line_width=2)), *at)
    fig.update_xaxes(range=[-0.5, w - 0.5])
    fig.update_yaxes(range=[h - 0.5, -0.5])
    fig.update_layout(coloraxis=dict(colorscale="Viridis", cmin=float(logs.min()), cmax=float(logs.max()),
                                     colorbar=dict(title=dict(text="log10 norm", side="right"))))
    return panels_layout(fig, title, size)


def norm_profile_figure(norms: torch.Tensor, prefix: Sequence[str], layers: Sequence[int], title: str) -> go.Figure:
    """One image's token norms against depth: the patch tokens' median and maximum, and each prefix token (class,
    distillation, registers) on its own line, so registers that take the high norms show as such.

    Args:
        norms: layers x tokens, prefix tokens first (the model's order).
        prefix: the prefix tokens' names (:class:`vitlens.TokenLayout`'s ``prefix``).
        layers: the block index of each layer (numbered from 1 in the figure).
        title: which model, which image.
    """
    x = [l + 1 for l in layers]
    patches = norms[:, len(prefix):]
    lines = {"patch tokens, median": patches.median(dim=1).values, "patch tokens, maximum": patches.max(dim=1).values}
    lines.update({name: norms[:, i] for i, name in enumerate(prefix)})
    fig = go.Figure([go.Scatter(x=x, y=v.tolist(), name=name, mode="lines+markers",
                                line=dict(dash="dot") if name.startswith("patch") else None)
                     for name, v in lines.items()])
    fig.update_xaxes(title_text="layer", dtick=1)
    fig.update_yaxes(title_text="token norm", type="log")
    return finish(fig, title, 700, 380)


GRID_SIZE = (900, 1000)  # pixels (height, width) the layer x head grid's thumbnails share: a 1400 x 1000 screen


def _grid_tiles(image: torch.Tensor, maps: torch.Tensor, shared: bool) -> tuple[np.ndarray, torch.Tensor]:
    """L x H x h x w x 3 uint8 thumbnails, each map over the grayscale image as the explorer page draws it (colour
    ``lut[value / vmax]`` laid on with ``OVERLAY_ALPHA``, whole pixels per patch), and the vmax used per map."""
    from PIL import Image

    from .explore import OVERLAY_ALPHA, colour_lut

    L, H, gh, gw = maps.shape
    k = max(1, min(224, GRID_SIZE[0] // L, (GRID_SIZE[1] - 80) // H) // max(gh, gw))  # whole pixels per patch
    gray = np.asarray(Image.fromarray(_rgb(image)).convert("L").resize((gw * k, gh * k), Image.BILINEAR), np.float64)
    m = maps.detach().double().cpu()
    vmax = m.amax(dim=(-2, -1), keepdim=True) if not shared else m.max().expand(L, H, 1, 1)
    level = (m / vmax.clamp_min(1e-30) * 255).round().clamp(0, 255).long().numpy()
    colour = colour_lut()[level].repeat(k, axis=2).repeat(k, axis=3)  # L x H x gh*k x gw*k x 3
    tiles = (1 - OVERLAY_ALPHA) * gray[..., None] + OVERLAY_ALPHA * colour
    return tiles.round().astype(np.uint8), vmax.flatten(1)


def attention_grid_figure(image: torch.Tensor, maps: torch.Tensor, title: str, shared: bool = True) -> go.Figure:
    """The attention explorer's layer x head grid (issue #15): every head's class-token map of every layer over the
    image, thumbnails in one picture (one trace, so ViT-B/16's 144 draw at once), layers as rows and heads as
    columns numbered from 1, and hovering a thumbnail names it.

    Args:
        image: C x H x W in [0, 1], the image as the model sees it.
        maps: L x H x gh x gw (``ExplorerMaps.class_maps``, or :func:`vitlens.analysis.head_maps` per layer).
        title: which model, which image.
        shared: one colour scale, 0 to the largest value of the grid; False scales each map to its own maximum.
    """
    from .explore import COLORSCALE

    tiles, vmax = _grid_tiles(image, maps, shared)
    L, H, th, tw, _ = tiles.shape
    gap = 3
    padded = np.pad(tiles, ((0, 0), (0, 0), (0, gap), (0, gap), (0, 0)), constant_values=255)
    mosaic = padded.transpose(0, 2, 1, 3, 4).reshape(L * (th + gap), H * (tw + gap), 3)[:-gap, :-gap]
    xs, ys = np.arange(H) * (tw + gap) + (tw - 1) / 2, np.arange(L) * (th + gap) + (th - 1) / 2
    layer, head = np.meshgrid(np.arange(1, L + 1), np.arange(1, H + 1), indexing="ij")
    peak = maps.detach().flatten(2).amax(-1).double().cpu().numpy()
    fig = go.Figure(_image_trace(mosaic, "class-token maps").update(hoverinfo="skip", hovertemplate=None))
    fig.add_trace(go.Scatter(  # one invisible point per thumbnail: its name and maximum on hover
        x=np.broadcast_to(xs, (L, H)).ravel(), y=np.broadcast_to(ys[:, None], (L, H)).ravel(), mode="markers",
        marker=dict(size=max(8, tw // 2), opacity=0), customdata=np.stack([layer, head, peak], -1).reshape(-1, 3),
        hovertemplate="layer %{customdata[0]}, head %{customdata[1]}<br>max %{customdata[2]:.4f}<extra></extra>",
        showlegend=False))
    fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", showlegend=False, hoverinfo="skip", marker=dict(
        colorscale=COLORSCALE, cmin=0, cmax=float(vmax.max()) if shared else 1.0, color=[0], showscale=True,
        colorbar=dict(title="attention" if shared else "attention / map max", thickness=14))))
    fig.update_xaxes(tickvals=xs, ticktext=[f"head {h}" for h in range(1, H + 1)], side="top", showgrid=False,
                     zeroline=False, range=[-0.5, mosaic.shape[1] - 0.5], ticklabelstandoff=2, constrain="domain")
    fig.update_yaxes(tickvals=ys, ticktext=[f"layer {l}" for l in range(1, L + 1)], showgrid=False, zeroline=False,
                     range=[mosaic.shape[0] - 0.5, -0.5], scaleanchor="x", ticklabelstandoff=4, constrain="domain")
    return finish(fig, title, mosaic.shape[1] + 170, mosaic.shape[0] + 6, header=TICKS_ON_TOP,
                  margin=dict(l=70, r=100, b=10), plot_bgcolor="white")


def jsonable(obj: Any) -> Any:
    """Tensors and arrays to nested lists, keys to strings, non-finite floats to None (JSON has no NaN),
    recursively."""
    if isinstance(obj, torch.Tensor):
        obj = obj.detach().cpu()
        obj = (obj.float() if obj.dtype == torch.bfloat16 else obj).numpy()
    if isinstance(obj, np.ndarray):  # walked value by value only when one is not finite: a walk of millions is slow
        finite = not np.issubdtype(obj.dtype, np.floating) or np.isfinite(obj).all()
        return obj.tolist() if finite else jsonable(obj.tolist())
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _write_pngs(out: Path, figures: Mapping[str, go.Figure]) -> list[Path]:
    """Every figure's PNG in one kaleido call (one browser start), each written beside its final name, then renamed."""
    pngs = [out / f"{name}.png" for name in figures]
    partial = [p.with_name(f".{p.stem}.partial.png") for p in pngs]  # kaleido takes the format from the suffix
    try:
        figs = list(figures.values())  # write_images ignores layout sizes unless passed explicitly
        pio.write_images(figs, partial, scale=1.5, width=[f.layout.width for f in figs],
                         height=[f.layout.height for f in figs])
        for tmp, path in zip(partial, pngs):
            tmp.replace(path)
    finally:
        for tmp in partial:
            tmp.unlink(missing_ok=True)
    return pngs


def write_outputs(out_dir: str | Path, figures: Mapping[str, go.Figure], numbers: Mapping[str, Any], *,
                  png: bool = True, plotlyjs: str = "directory") -> list[Path]:
    """Write each figure as ``<name>.html`` and ``<name>.png``, and ``numbers`` as ``<first name>.json``.

    ``plotlyjs="directory"`` puts plotly.min.js (4.6 MB) beside the HTML so it opens offline; ``"cdn"`` links it
    (small files for committing, needs internet to view); ``True`` inlines it.

    PNG export goes through kaleido, which drives a Chrome/Chromium (found on PATH, e.g. Debian's
    ``/usr/bin/chromium``, or named by ``BROWSER_PATH``). If none can start, the HTML and JSON are still
    written and a warning says why the PNGs are missing.

    Returns:
        the paths written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    # each file appears whole or not at all (a killed or failed export leaves the previous one, not half a file)
    for name, fig in figures.items():
        written.append(atomic_write(out / f"{name}.html",
                                    lambda tmp, fig=fig: fig.write_html(tmp, include_plotlyjs=plotlyjs)))
    text = json.dumps(jsonable(numbers), indent=1)
    written.append(atomic_write(out / f"{next(iter(figures))}.json", lambda tmp: Path(tmp).write_text(text)))
    if png:
        try:
            written += _write_pngs(out, figures)
        except Exception as e:  # kaleido raises several types when no browser can be started
            log.warning("PNG export failed (%s: %s). kaleido needs Chrome or Chromium: install it (apt-get install "
                        "chromium) or point BROWSER_PATH at it. HTML and JSON were written.", type(e).__name__, e)
            print(f"vitlens: PNG export failed ({type(e).__name__}); wrote HTML and JSON only. kaleido needs "
                  f"Chrome/Chromium: apt-get install chromium, or set BROWSER_PATH.")
    return written
