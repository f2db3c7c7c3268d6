"""The attention explorer (issue #15): every layer's and head's class-token map over the image, and what any patch
attends to in every layer and head, computed once per image (:func:`explorer_maps`)."""
from __future__ import annotations

import base64
import io
import json
import re
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision.transforms.v2.functional import to_pil_image

from ..capture import capture
from ..images import display_view, model_view, photo, prepare
from ..io import atomic_write
from ..models.layout import TokenLayout, token_layout
from ..models.loading import load_model
from ..models.timm_convert import data_config_of
from .rollout import HeadFusion, fuse_heads

# One numbering in everything the explorer shows and writes (controls, labels, JSON).
NUMBERING = "layers 1..L and heads 1..H; patches by (row, column) from (1, 1) at the top left"
MAX_EMBEDDED = 2**25  # attention values (one byte each) a page may hold: 32 MiB, 43 MiB as base64


@dataclass(frozen=True)
class ExplorerMaps:
    """The attention the explorer shows for one image. On the head axis, index 0 is the heads fused
    (``head_fusion``) and 1..H the heads themselves, so head h of the figures is index h.

    Attributes:
        layout: the token layout the maps were read with (``layout.prefix`` names the prefix tokens).
        query: L x (1+H) x gh x gw: the class token's row over the patches; without a class token the mean of the
            patch queries' rows (:meth:`TokenLayout.query`).
        query_prefix: L x (1+H) x K: the same row at the K prefix tokens (class, distillation, registers), in
            ``layout.prefix`` order: the share of attention that never lands on the image.
        rows: L x (1+H') x P x gh x gw: what each patch query (row-major, P = gh * gw) attends to over the
            patches; H' = H, or 0 when only the fused rows were kept (``per_head=False``).
        rows_prefix: L x (1+H') x P x K: the same rows at the prefix tokens.
        head_fusion: how the heads were fused into index 0.
    """

    layout: TokenLayout
    query: torch.Tensor
    query_prefix: torch.Tensor
    rows: torch.Tensor
    rows_prefix: torch.Tensor
    head_fusion: HeadFusion

    @property
    def num_layers(self) -> int:
        return self.query.shape[0]

    @property
    def num_heads(self) -> int:
        return self.query.shape[1] - 1

    @property
    def per_head(self) -> bool:
        """Whether every head's patch rows are kept (not only the fused ones)."""
        return self.rows.shape[1] > 1

    @property
    def class_maps(self) -> torch.Tensor:
        """The layer x head grid: L x H x gh x gw class-token (query) maps."""
        return self.query[:, 1:]


def explorer_maps(attentions: Sequence[torch.Tensor], layout: TokenLayout, *, head_fusion: HeadFusion = "mean",
                  per_head: bool = True) -> ExplorerMaps:
    """Every layer's class-token map per head and heads fused, and the rows of every patch query (Abnar & Zuidema
    2020 look at single layers' rows the same way; DINO, Caron et al. 2021, at each head's class-token map).

    Args:
        attentions: per layer 1 x H x N x N post-softmax attention of one image (``recorder.attentions``).
        layout: ``vitlens.token_layout(model, img_size)``.
        head_fusion: how heads become one map per layer (see :func:`vitlens.analysis.fuse_heads`); the matrix is
            fused first, then its rows are read, as :func:`vitlens.analysis.patch_maps` does.
        per_head: keep every head's patch rows (L x H x P x P values); False keeps only the fused rows, for models
            whose per-head rows would be too large to embed.
    """
    if not attentions:
        raise ValueError("no attention layers given")
    if attentions[0].shape[0] != 1:
        raise ValueError(f"the explorer shows one image at a time; got a batch of {attentions[0].shape[0]}")
    maps, patches = 1 + (attentions[0].shape[1] if per_head else 0), layout.num_patches
    if len(attentions) * maps * patches**2 > MAX_EMBEDDED:
        raise ValueError(
            f"{len(attentions)} layers x {maps} maps x {patches} x {patches} patches is "
            f"{len(attentions) * maps * patches**2 / 2**20:.0f} MiB of attention rows, more than one page holds "
            f"({MAX_EMBEDDED / 2**20:.0f} MiB): " + ("pass per_head=False (vitlens analyze explore --no-per-head) to "
                                                      "keep only the heads-fused rows" if per_head else
                                                      "use a model input with fewer patches"))
    full = torch.stack([torch.cat([fuse_heads(a, head_fusion), a[0]]) for a in attentions]).float()  # L x 1+H x N x N
    query = layout.query(full)
    rows = layout.patches(full if per_head else full[:, :1], dim=-2)
    k = layout.num_prefix_tokens  # the layout puts the prefix tokens first
    # copies, not views: a view would keep the whole L x (1+H) x N x N stack alive in every cache holding the maps
    return ExplorerMaps(layout, layout.to_grid(layout.patches(query)), query[..., :k].clone(),
                        layout.to_grid(layout.patches(rows)), rows[..., :k].clone(), head_fusion)


def explorer_data(model: nn.Module, x: torch.Tensor, *, head_fusion: HeadFusion = "mean",
                  per_head: bool = True) -> ExplorerMaps:
    """:func:`explorer_maps` of one prepared image: a forward pass capturing every layer's attention.

    Args:
        model: a ViT :func:`vitlens.capture` supports, in eval mode.
        x: 1 x C x H x W in the model's input space (:func:`vitlens.images.prepare`).
        head_fusion, per_head: as in :func:`explorer_maps`.
    """
    with torch.no_grad(), capture(model) as rec:
        model(x)
    return explorer_maps(rec.attentions, token_layout(model, x.shape[-2:]), head_fusion=head_fusion,
                         per_head=per_head)


# ---- the page -----------------------------------------------------------------------------------------------
COLORSCALE = "Viridis"  # the app's colour for attention maps (heads_figure, patch views)
OVERLAY_ALPHA = 0.6  # heat over the grayscale image: out = (1 - alpha) * gray + alpha * colour
VIEW_SIDE = 448  # pixels of the image drawn under the maps (its longer side)
FRAME_HEIGHT = 900  # pixels of the frame in Jupyter and the app; the page scrolls inside it


def colour_lut() -> np.ndarray:
    """256 x 3 uint8: :data:`COLORSCALE` sampled at 0..1, the same colours in the page and in the app's grid."""
    from plotly.colors import sample_colorscale, unlabel_rgb

    return np.array([unlabel_rgb(c) for c in sample_colorscale(COLORSCALE, np.linspace(0, 1, 256))]).round()\
        .astype(np.uint8)


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode("ascii")


def _quantised(x: torch.Tensor) -> dict[str, str]:
    """Rows (last axis) as bytes of each row's own maximum: value = byte / 255 * scale, off by at most scale / 510.
    By hand, as base64 of uint8 and float32, because a page reads those with atob and typed arrays alone."""
    x = x.detach().cpu().float()
    scale = x.amax(-1, keepdim=True)
    q = torch.where(scale > 0, x / scale.clamp_min(torch.finfo(x.dtype).tiny) * 255, 0).round().to(torch.uint8)
    return {"q": _b64(q.numpy()), "s": _b64(scale.squeeze(-1).numpy().astype("<f4"))}


def _shares(x: torch.Tensor) -> str:
    """Shares of attention in [0, 1] as bytes of 1/255."""
    return _b64((x.detach().cpu().float() * 255).round().clamp(0, 255).to(torch.uint8).numpy())


def _png(view: torch.Tensor, gray: bool = False) -> str:
    """C x H x W in [0, 1] as a PNG data URI (in colour, or the grayscale the maps are drawn over)."""
    img = to_pil_image((view.detach().cpu().clamp(0, 1) * 255).round().byte())
    buf = io.BytesIO()
    (img.convert("L") if gray else img.convert("RGB")).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _payload(maps: ExplorerMaps, view: torch.Tensor, title: str, grid: bool) -> dict[str, Any]:
    """What the page reads: sizes and names, the images, the colour table and the maps as bytes."""
    layout = maps.layout
    cls = layout.has_class_token
    return dict(
        title=title.splitlines(), numbering=NUMBERING, grid=list(layout.grid), patch_size=list(layout.patch_size),
        prefix=list(layout.prefix), layers=maps.num_layers, heads=maps.num_heads, per_head=maps.per_head,
        head_fusion=maps.head_fusion, show_grid=grid, alpha=OVERLAY_ALPHA, lut=_b64(colour_lut()),
        query_label="the class token" if cls else "the mean patch query (no class token)",
        grid_label=("Class-token attention" if cls else "Mean attention of the patch queries (no class token)")
        + " in every layer (rows) and head (columns)",
        image=_png(view), gray=_png(view, gray=True), query=_quantised(maps.query.flatten(-2)),
        rows=_quantised(maps.rows.flatten(-2)), query_prefix=_shares(maps.query_prefix),
        rows_prefix=_shares(maps.rows_prefix))


def explorer_html(maps: ExplorerMaps, view: torch.Tensor, title: str, *, grid: bool = True) -> str:
    """The explorer as one self-contained HTML page: no server, no internet, no plotly.js (canvas drawing).

    Hovering a patch (on the image or any map) shows what it attends to in every layer, heads fused, and in every
    head of the layer chosen; a click keeps that patch; a button returns to the class token. Below, the layer x
    head grid of class-token maps. Maps are drawn over the grayscale image in :data:`COLORSCALE`, one colour scale
    per section (a checkbox scales each map to its own maximum); captions give each map's maximum and the share
    of attention on each prefix token. Attention rows travel as bytes of their own maximum (:func:`_quantised`).

    Args:
        maps: :func:`explorer_maps` of the image.
        view: C x H x W in [0, 1], the image as the model sees it (:func:`vitlens.images.display_view`).
        title: what and which model on which image; one line per line.
        grid: include the layer x head grid (the app draws its own).
    """
    parts = {"TITLE": escape(title.splitlines()[0] if title else "Attention explorer"),
             "DATA": json.dumps(_payload(maps, view, title, grid)).replace("</", "<\\/")}  # no "</script>" in it
    return re.sub("__(TITLE|DATA)__", lambda m: parts[m.group(1)], _PAGE)  # one pass: a title may hold either


class Explorer:
    """The attention explorer of one image: Jupyter shows it inline (:meth:`_repr_html_`), :meth:`save` writes it.

    Attributes:
        maps: the numbers it shows (:class:`ExplorerMaps`).
        html: the self-contained page (:func:`explorer_html`).
        height: pixels of the inline frame; the page scrolls inside it.
    """

    def __init__(self, maps: ExplorerMaps, html: str, height: int = FRAME_HEIGHT) -> None:
        self.maps, self.html, self.height = maps, html, height

    def _repr_html_(self) -> str:
        # an iframe's srcdoc keeps the page's script and styles apart from the notebook's (sandboxed: scripts only)
        return (f'<iframe srcdoc="{escape(self.html, quote=True)}" sandbox="allow-scripts" '
                f'title="vitlens attention explorer" style="width: 100%; height: {self.height}px; border: 0">'
                f'</iframe>')

    def save(self, path: str | Path) -> Path:
        """Write the page to ``path`` atomically (a failed write leaves any earlier file whole); returns the path."""
        return atomic_write(path, lambda tmp: Path(tmp).write_text(self.html, encoding="utf-8"))


def _image01(image: str | Path | Image.Image | torch.Tensor, config: Mapping[str, Any]) -> tuple[torch.Tensor, str]:
    """The image cut as the model's preprocessing cuts it, C x H x W in [0, 1], and a name for the title."""
    if isinstance(image, (str, Path)):
        return photo(image, config), Path(image).name
    if isinstance(image, Image.Image):
        return torch.from_numpy(model_view(image, config)).permute(2, 0, 1), "an image"
    if isinstance(image, torch.Tensor):
        x = image[0] if image.ndim == 4 and image.shape[0] == 1 else image
        if x.ndim != 3 or not x.is_floating_point():
            raise ValueError(f"an image tensor must be one float image, C x H x W in [0, 1]; got {tuple(image.shape)} "
                             f"{image.dtype}")
        if x.min() < 0 or x.max() > 1:
            raise ValueError(f"an image tensor must hold values in [0, 1] (got {x.min():.3g} to {x.max():.3g}): pass "
                             f"the image, not the normalised model input; the model's data_config prepares it")
        return x.detach().cpu().float(), "a tensor"
    raise TypeError(f"image must be a path, a sample photo name, a PIL image or a tensor; got {type(image).__name__}")


def explore(model: nn.Module | str, image: str | Path | Image.Image | torch.Tensor, *, head_fusion: HeadFusion = "mean",
            per_head: bool = True, title: str | None = None, grid: bool = True) -> Explorer:
    """The attention explorer of one image (issue #15): in Jupyter it shows inline, ``.save(path)`` writes the
    self-contained HTML page (what ``vitlens analyze explore`` writes).

    Args:
        model: a ViT :func:`vitlens.capture` supports (in eval mode), or a ``vitlens.load_model`` source.
        image: a path, a sample photo name (:data:`vitlens.images.SAMPLE_PHOTOS`), a PIL image, or a C x H x W
            tensor in [0, 1]; files, names and PIL images are cut as the model's preprocessing cuts them, a tensor
            is resized whole.
        head_fusion, per_head: as in :func:`explorer_maps`.
        title: the page's title (lines); by default the model and the image.
        grid: include the layer x head grid of class-token maps.

    Example:
        >>> vitlens.explore("demo:vit-fashion", "astronaut")  # the last expression of a notebook cell
    """
    if isinstance(model, str):
        name, model = model, load_model(model).eval()
    else:
        name = type(model).__name__
    config = data_config_of(model)
    view, image_name = _image01(image, config)
    x = prepare(view, config).to(next(model.parameters()).device)
    maps = explorer_data(model, x, head_fusion=head_fusion, per_head=per_head)
    shown = display_view(view, config, side=VIEW_SIDE)
    return Explorer(maps, explorer_html(maps, shown, title or f"Attention explorer: {name} on {image_name}", grid=grid))


# The page: plain HTML, CSS and a script that draws on canvases (no library, nothing fetched). The script reads the
# JSON of _payload; every number it draws comes from there.
_PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body { font: 14px/1.35 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 12px; color: #1f2328; }
h1 { font-size: 18px; margin: 0 0 2px; }
h2 { font-size: 15px; margin: 16px 0 8px; }
.sub { color: #57606a; font-size: 13px; }
.page { display: flex; flex-wrap: wrap; gap: 20px; align-items: flex-start; }
.side { position: sticky; top: 8px; width: min(336px, 26vw); flex: none; }
.side canvas#main { width: 100%; display: block; cursor: crosshair; }
.side p { font-size: 13px; margin: 6px 0; }
.maps { flex: 1; min-width: 212px; }
.row { display: flex; flex-wrap: wrap; gap: 12px; }
.panel { width: 200px; }
.panel canvas { width: 200px; display: block; cursor: crosshair; }
.cap { font-size: 12px; margin-top: 3px; overflow-wrap: anywhere; }
.grid { display: grid; gap: 3px; align-items: center; justify-content: start; }
.grid canvas { width: 100%; display: block; cursor: pointer; }
.lab { font-size: 12px; text-align: center; white-space: nowrap; padding: 0 4px; }
#legend { vertical-align: middle; width: 120px; height: 10px; }
#status { font-weight: 600; }
</style></head><body>
<header><h1 id="title"></h1><div class="sub" id="subtitle"></div></header>
<div class="page">
<div class="side">
<canvas id="main"></canvas>
<p id="status" aria-live="polite"></p>
<p>Hover a patch, here or on any map, to see what it attends to; click to keep it.</p>
<p><button id="back" type="button"></button></p>
<p><label><input type="checkbox" id="shared" checked> one colour scale per section</label><br>
<span class="sub">off: each map runs from 0 to its own maximum</span></p>
<p>colour <canvas id="legend" width="256" height="1"></canvas> from 0 to the maximum named</p>
</div>
<div class="maps">
<h2 id="layers-title"></h2><div class="row" id="layers"></div>
<h2><label for="layer" id="heads-title"></label> <select id="layer"></select> <span id="heads-scale"></span></h2>
<p id="heads-note" hidden></p><div class="row" id="heads"></div>
<section id="grid-section"><h2 id="grid-title"></h2><div class="grid" id="grid"></div></section>
</div></div>
<script type="application/json" id="vitlens-explorer-data">__DATA__</script>
<script>
"use strict";
(() => {
const $ = id => document.getElementById(id), D = JSON.parse($("vitlens-explorer-data").textContent);
function bytes(s) {
  const b = atob(s), a = new Uint8Array(b.length);
  for (let i = 0; i < b.length; i++) a[i] = b.charCodeAt(i);
  return a;
}
const floats = s => new Float32Array(bytes(s).buffer);
const [gh, gw] = D.grid, P = gh * gw, L = D.layers, H = D.heads, K = D.prefix.length;
const HQ = H + 1, HR = D.per_head ? H + 1 : 1, dpr = Math.min(2, Math.max(1, window.devicePixelRatio || 1));
const lut = bytes(D.lut), preQ = bytes(D.query_prefix), preR = bytes(D.rows_prefix);
const query = {q: bytes(D.query.q), s: floats(D.query.s)}, rows = {q: bytes(D.rows.q), s: floats(D.rows.s)};
const state = {pinned: -1, hover: null, layer: L - 1, shared: true};  // query -1: the class token's row
const img = new Image(), gray = new Image(), heat = document.createElement("canvas");
const layerPanels = [], headPanels = [], gridPanels = [];
heat.width = gw; heat.height = gh;

// What query p (-1: the class token) attends to in layer l, head k (0: the heads fused): P values back from bytes
// (byte / 255 * the row's maximum) and the shares of the prefix tokens.
function map(l, k, p) {
  const [src, pre, at] = p < 0 ? [query, preQ, l * HQ + k] : [rows, preR, (l * HR + k) * P + p];
  const v = new Float32Array(P), s = src.s[at] / 255;
  for (let i = 0; i < P; i++) v[i] = src.q[at * P + i] * s;
  return {v, max: src.s[at], shares: D.prefix.map((_, j) => pre[at * K + j] / 255)};
}
const fmt = x => x === 0 || x >= 0.01 ? x.toFixed(3) : x.toExponential(1);
const where = p => `patch (${Math.floor(p / gw) + 1}, ${p % gw + 1})`;
const scale = top => state.shared ? `(colour 0 to ${fmt(top)})` : "(each map from 0 to its own maximum)";

function sized(c, width) {
  c.width = Math.round(width * dpr);
  c.height = Math.round(c.width * img.naturalHeight / img.naturalWidth);
  return c;
}
function mark(ctx, c, p) {
  if (p < 0) return;
  const w = c.width / gw, h = c.height / gh, x = (p % gw) * w, y = Math.floor(p / gw) * h;
  const t = Math.max(2, c.width / 120);
  ctx.lineWidth = t + 2; ctx.strokeStyle = "white"; ctx.strokeRect(x, y, w, h);
  ctx.lineWidth = t; ctx.strokeStyle = "#e0115f"; ctx.strokeRect(x, y, w, h);
}
// The map over the grayscale image: colour = lut[value / vmax], laid on with D.alpha; one cell per patch.
function draw(c, m, vmax, p) {
  const ctx = c.getContext("2d"), px = new ImageData(gw, gh);
  for (let i = 0; i < P; i++) {
    const j = 3 * Math.min(255, Math.round(vmax > 0 ? m.v[i] / vmax * 255 : 0));
    px.data.set([lut[j], lut[j + 1], lut[j + 2], 255], 4 * i);
  }
  heat.getContext("2d").putImageData(px, 0, 0);
  ctx.imageSmoothingEnabled = false;  // the model's pixels and its patches as flat squares
  ctx.globalAlpha = 1;
  ctx.drawImage(gray, 0, 0, c.width, c.height);
  ctx.globalAlpha = D.alpha;
  ctx.drawImage(heat, 0, 0, c.width, c.height);
  ctx.globalAlpha = 1;
  mark(ctx, c, p);
  c.values = m.v; c.dataset.max = m.max;
}
function caption(label, m) {
  const shares = D.prefix.map((n, j) => `${n} ${m.shares[j].toFixed(2)}`).join(", ");
  return `${label}: max ${fmt(m.max)}` + (K ? `; to ${shares}` : "");
}
function section(panels, maps, p, label) {
  const top = Math.max(...maps.map(m => m.max));
  panels.forEach((x, i) => {
    draw(x.c, maps[i], state.shared ? top : maps[i].max, p);
    x.cap.textContent = caption(label(i), maps[i]);
    x.c.setAttribute("aria-label", x.cap.textContent);
  });
  return top;
}

function render() {
  const p = state.hover ?? state.pinned, who = p < 0 ? D.query_label : where(p);
  const how = state.hover !== null && state.hover !== state.pinned ? " (hovered; click to keep it)" :
    p >= 0 ? " (kept)" : "";
  $("status").textContent = `Query: ${who}${how}`;
  const main = $("main"), ctx = main.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(img, 0, 0, main.width, main.height);
  mark(ctx, main, p);
  let top = section(layerPanels, layerPanels.map((_, l) => map(l, 0, p)), p, l => `layer ${l + 1}`);
  $("layers-title").textContent = `What ${who} attends to in every layer, heads fused (${D.head_fusion}) ` +
    scale(top);
  $("heads-title").textContent = `What ${who} attends to in every head of`;
  const kept = p < 0 || D.per_head;
  $("heads-note").hidden = kept;
  $("heads-note").textContent = kept ? "" : "This page keeps the patches' rows with the heads fused only " +
    "(per_head=False); each head's map is shown for the class token.";
  $("heads").hidden = !kept;
  if (kept) {
    top = section(headPanels, headPanels.map((_, h) => map(state.layer, h + 1, p)), p,
                  h => `layer ${state.layer + 1}, head ${h + 1}`);
    $("heads-scale").textContent = scale(top);
  }
}
function renderGrid() {
  const maps = gridPanels.map(x => map(x.l, x.h + 1, -1)), top = Math.max(...maps.map(m => m.max));
  gridPanels.forEach((x, i) => {
    draw(x.c, maps[i], state.shared ? top : maps[i].max, -1);
    x.c.title = caption(`layer ${x.l + 1}, head ${x.h + 1}`, maps[i]);
  });
  $("grid-title").textContent = `${D.grid_label} ${scale(top)}; click a map to show its layer's heads above`;
}

let queued = false;
function later() {
  if (!queued) { queued = true; requestAnimationFrame(() => { queued = false; render(); }); }
}
function patchAt(c, e) {
  const b = c.getBoundingClientRect();
  const col = Math.min(gw - 1, Math.max(0, Math.floor((e.clientX - b.left) / b.width * gw)));
  const row = Math.min(gh - 1, Math.max(0, Math.floor((e.clientY - b.top) / b.height * gh)));
  return row * gw + col;
}
function hoverable(c) {
  c.addEventListener("mousemove", e => {
    const p = patchAt(c, e);
    if (p !== state.hover) { state.hover = p; later(); }
  });
  c.addEventListener("mouseleave", () => { state.hover = null; later(); });
  c.addEventListener("click", e => { state.pinned = patchAt(c, e); state.hover = null; later(); });
  return c;
}
function panel(parent, list) {
  const div = document.createElement("div"), c = hoverable(sized(document.createElement("canvas"), 200));
  c.setAttribute("role", "img");
  const cap = document.createElement("div");
  div.className = "panel"; cap.className = "cap";
  div.append(c, cap); parent.append(div); list.push({c, cap});
}
function label(text) {
  const div = document.createElement("div");
  div.className = "lab"; div.textContent = text;
  return div;
}
function buildGrid() {
  const g = $("grid");
  g.style.gridTemplateColumns = `max-content repeat(${H}, minmax(40px, 112px))`;
  g.append(label(""), ...Array.from({length: H}, (_, h) => label(`head ${h + 1}`)));
  for (let l = 0; l < L; l++) {
    g.append(label(`layer ${l + 1}`));
    for (let h = 0; h < H; h++) {
      const c = sized(document.createElement("canvas"), 112);
      c.addEventListener("click", () => { state.layer = l; $("layer").value = l; later(); });
      g.append(c); gridPanels.push({c, l, h});
    }
  }
}
function build() {
  $("title").textContent = D.title[0] || "Attention explorer";
  const prefix = K ? D.prefix.join(", ") : "none";
  const lines = [...D.title.slice(1), `${L} layers, ${H} heads; ${gh} x ${gw} patches of ` +
    `${D.patch_size[0]} x ${D.patch_size[1]} px; tokens before the patches: ${prefix}. Numbering: ${D.numbering}.`];
  $("subtitle").append(...lines.map(t => { const d = document.createElement("div"); d.textContent = t; return d; }));
  hoverable(sized($("main"), 336));
  for (let l = 0; l < L; l++) panel($("layers"), layerPanels);
  for (let h = 0; h < H; h++) panel($("heads"), headPanels);
  const select = $("layer");
  select.append(...Array.from({length: L}, (_, l) => new Option(`layer ${l + 1}`, l)));
  select.value = state.layer;
  select.addEventListener("change", () => { state.layer = +select.value; render(); });
  $("back").textContent = `Back to ${D.query_label}`;
  $("back").addEventListener("click", () => { state.pinned = -1; state.hover = null; render(); });
  $("shared").addEventListener("change", e => { state.shared = e.target.checked; render(); renderGrid(); });
  const legend = $("legend").getContext("2d"), px = new ImageData(256, 1);
  for (let i = 0; i < 256; i++) px.data.set([lut[3 * i], lut[3 * i + 1], lut[3 * i + 2], 255], 4 * i);
  legend.putImageData(px, 0, 0);
  $("grid-section").hidden = !D.show_grid;
  if (D.show_grid) buildGrid();
}
img.src = D.image; gray.src = D.gray;
Promise.all([img.decode(), gray.decode()]).then(() => {
  build(); render();
  if (D.show_grid) renderGrid();
  document.body.dataset.ready = "true";
});
})();
</script></body></html>
"""
