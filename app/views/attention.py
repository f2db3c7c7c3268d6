"""Attention: top-5, rollout (paper style and heatmap), gradient rollout, every head of a layer, and what a clicked
patch attends to in each layer; for one model, or two one under the other with the same image and settings."""
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import torch

from kit import inputs, models, show
from vitlens import token_layout
from vitlens.analysis import attention_rollout, cls_map, gradient_rollout, head_maps, patch_maps
from vitlens.analysis.figures import heads_figure, maps_figure, rollout_figure
from vitlens.data import class_names

st.title("Attention")
NEEDS_VIT = "reads a ViT's attention maps (a CNN has none; the ViT vs CNN page sets the two side by side)"
shown = [models.current_model(needs_vit=NEEDS_VIT)]
if second := models.second_model(NEEDS_VIT):
    shown.append(second)
inp = inputs.image_input("attn")
c1, c2 = st.columns(2)
fusion = c1.selectbox("Head fusion", ["mean", "max", "min"], key="fusion",
                      help="How each layer's heads become one matrix (the paper uses the mean).")
discard = c2.slider("Discard ratio", 0.0, 0.95, 0.0, 0.05, key="discard",
                    help="Zero this fraction of the weakest fused attention per layer (prefix tokens kept).")


@st.cache_resource(show_spinner="Backpropagating to every layer's attention...", max_entries=32)
def grad_map(source: str, digest: str, target: int, _x: torch.Tensor) -> torch.Tensor:
    return cls_map(gradient_rollout(models.load(source), _x, target), token_layout(models.load(source), _x.shape[-2:]))


def rollout_section(source: str, model, x: torch.Tensor, out: dict, about: str, key: str) -> int:
    """Top-5 and rollout; returns the clicked patch (row-major index on the grid)."""
    layout, depth = token_layout(model, x.shape[-2:]), len(model.blocks)
    grid, shown_image = layout.grid, inputs.view(source, inp)
    left, right = st.columns(2)
    left.subheader("Top-5")
    left.dataframe(show.top_k(out["logits"], class_names(model)).style.format({"probability": "{:.3f}"}),
                   hide_index=True)
    right.subheader("Attention rollout")
    start = right.slider("Start layer", 1, depth, 1, key=f"start_layer:{source}")  # keyed: range is per model
    # the figure under both columns, in the main column's width: its panels readable at 1400 x 1000
    rollout = cls_map(attention_rollout(out["attentions"], head_fusion=fusion, discard_ratio=discard,
                                        start_layer=start - 1, num_prefix_tokens=layout.num_prefix_tokens), layout)
    fig = rollout_figure([shown_image], {"rollout": rollout}, f"Attention rollout: {about}")
    # clickable patch centres over the heatmap (Plotly selection events need points, not heatmap cells)
    rows, cols = np.meshgrid(np.arange(grid[0]), np.arange(grid[1]), indexing="ij")
    fig.add_trace(go.Scatter(x=cols.ravel(), y=rows.ravel(), mode="markers",
                             marker=dict(size=max(4, 200 // grid[1]), opacity=0.01, color="white"),
                             customdata=np.stack([rows.ravel() + 1, cols.ravel() + 1], axis=1),  # numbered from 1
                             hovertemplate="patch (row %{customdata[0]}, column %{customdata[1]})<extra>click</extra>",
                             showlegend=False),
                  row=1, col=3)
    fig.update_xaxes(range=[-0.5, grid[1] - 0.5], row=1, col=3)  # the markers must not widen the heatmap's axes
    fig.update_yaxes(range=[grid[0] - 0.5, -0.5], row=1, col=3)
    event = show.show(fig, "rollout", pd.DataFrame(rollout[0].numpy()), f"rollout_fig{key}", on_select="rerun",
                      selection_mode="points")
    st.caption("Left to right: what the model sees, rollout as the paper draws it (map / max as an alpha mask), "
               "and as a heatmap. Click a patch on the heatmap to see what it attends to below.")
    points = event.selection.points if event and event.selection else []
    if points:
        st.session_state[f"patch{key}"] = int(points[0]["point_index"])
    return min(st.session_state.get(f"patch{key}", grid[0] // 2 * grid[1] + grid[1] // 2), grid[0] * grid[1] - 1)


def heads_section(source: str, model, x: torch.Tensor, out: dict, about: str, key: str, patch: int) -> None:
    """Gradient rollout for a chosen class, every head of a chosen layer, and the clicked patch per layer."""
    layout, depth, names = token_layout(model, x.shape[-2:]), len(model.blocks), class_names(model)
    shown_image = inputs.view(source, inp)
    st.subheader("Gradient rollout (Chefer et al. 2021)")
    # keyed by model and image, so that each new model or image starts from its own top class
    target = st.selectbox("Explain class", range(len(names)), index=int(out["logits"].argmax()),
                          key=f"grad_class:{source}:{inp.digest}", format_func=lambda i: f"{i}: {names[i]}")
    relevance = grad_map(source, inp.digest, target, x)
    show.show(rollout_figure([shown_image], {f"gradient rollout, class {names[target]}": relevance},
                             f"Gradient rollout: {about}"), "gradient_rollout", pd.DataFrame(relevance[0].numpy()),
              f"grad_fig{key}")
    st.subheader("Class-token attention of every head")
    layer = st.slider("Layer", 1, depth, depth, key=f"head_layer:{source}")
    maps = head_maps(out["attentions"], layout, layer=layer - 1)[0]
    show.show(heads_figure(shown_image, maps, f"Layer {layer}, each head's class-token attention: {about}"),
              f"heads_layer{layer}", {"layer": layer, "maps": maps}, f"heads_fig{key}")
    r, c = (i + 1 for i in divmod(patch, layout.grid[1]))  # rows and columns numbered from 1, as layers and heads
    st.subheader(f"What patch (row {r}, column {c}) attends to, per layer ({fusion} over heads)")
    rows_q = patch_maps(out["attentions"], patch, layout, head_fusion=fusion)[0]
    fig = maps_figure(shown_image, rows_q, [f"layer {l}" for l in range(1, depth + 1)],
                      f"Attention from patch (row {r}, column {c}): {about}", shared=True, scale_title="attention")
    show.show(fig, f"patch_{r}_{c}", {"patch": [r, c], "numbering": "rows, columns and layers from 1",
                                          "fusion": fusion, "per_layer": rows_q}, f"patch_fig{key}")


for key, (source, model) in zip(("", "2"), shown):
    if len(shown) > 1:
        st.header(show.literal(source))
    inputs.domain_note(model, inp)
    x = inputs.model_input(source, inp)
    out = models.vit_forward(source, inp.digest, x)
    about = show.title_text(f"{source} on {inp.label}")  # for figure titles
    patch = rollout_section(source, model, x, out, about, key)
    heads_section(source, model, x, out, about, key, patch)
