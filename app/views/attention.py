"""Attention: top-5, rollout (paper style and heatmap), gradient rollout, every head per layer, and what a clicked
patch attends to in each layer."""
import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st
import torch

from kit import inputs, models, show
from vitlens.analysis import attention_rollout, cls_map, gradient_rollout, head_maps, patch_maps
from vitlens.analysis.figures import heads_figure, rollout_figure
from vitlens import token_layout
from vitlens.data import class_names

st.title("Attention")
NEEDS_VIT = ("reads a ViT's attention maps (a CNN has none; the ViT vs CNN page sets the two side by side)")
source, model = models.current_model(needs_vit=NEEDS_VIT)
inp = inputs.image_input("attn")
if inp is None:
    st.stop()
inputs.domain_note(model, inp)

x = inputs.model_input(source, inp)
out = models.vit_forward(source, inp.digest, x)
attentions, names = out["attentions"], class_names(model)
shown = inputs.view(source, inp)
layout = token_layout(model, x.shape[-2:])
prefix, grid, depth = layout.num_prefix_tokens, layout.grid, len(model.blocks)
about = show.title_text(f"{source} on {inp.label}")  # for figure titles

top5 = show.top_k(out["logits"], names)
left, right = st.columns([1, 2])
with left:
    st.subheader("Top-5")
    st.dataframe(top5.style.format({"probability": "{:.3f}"}), hide_index=True)

# ---- rollout -----------------------------------------------------------------------------------------------
with right:
    st.subheader("Attention rollout")
    c1, c2, c3 = st.columns(3)
    fusion = c1.selectbox("Head fusion", ["mean", "max", "min"], key="fusion",
                          help="How each layer's heads become one matrix (the paper uses the mean).")
    discard = c2.slider("Discard ratio", 0.0, 0.95, 0.0, 0.05, key="discard",
                        help="Zero this fraction of the weakest fused attention per layer (class token kept).")
    start = c3.slider("Start layer", 1, depth, 1, key=f"start_layer:{source}")  # keyed: range is per model
    rollout = cls_map(attention_rollout(attentions, head_fusion=fusion, discard_ratio=discard, start_layer=start - 1,
                                        num_prefix_tokens=prefix), layout)
    fig = rollout_figure([shown], {"rollout": rollout}, f"Attention rollout: {about}")
    # clickable patch centres over the heatmap (Plotly selection events need points, not heatmap cells)
    rows, cols = np.meshgrid(np.arange(grid[0]), np.arange(grid[1]), indexing="ij")
    fig.add_trace(go.Scatter(x=cols.ravel(), y=rows.ravel(), mode="markers",
                             marker=dict(size=max(4, 200 // grid[1]), opacity=0.01, color="white"),
                             hovertemplate="patch (%{y}, %{x})<extra>click</extra>", showlegend=False), row=1, col=3)
    fig.update_xaxes(range=[-0.5, grid[1] - 0.5], row=1, col=3)  # the markers must not widen the heatmap's axes
    fig.update_yaxes(range=[grid[0] - 0.5, -0.5], row=1, col=3)
    event = show.show(fig, "rollout", pd.DataFrame(rollout[0].numpy()), "rollout_fig", on_select="rerun",
                        selection_mode="points")
    st.caption("Left to right: the model's view of the image, rollout as the paper draws it (map / max as an alpha "
               "mask), and as a heatmap. Click a patch on the heatmap to see what it attends to below.")

points = event.selection.points if event and event.selection else []
if points:
    st.session_state.patch = int(points[0]["point_index"])
patch = min(st.session_state.get("patch", grid[0] // 2 * grid[1] + grid[1] // 2), grid[0] * grid[1] - 1)

# ---- gradient rollout ----------------------------------------------------------------------------------------
st.subheader("Gradient rollout (Chefer et al. 2021)")
# keyed by model and image, so that each new model or image starts from its own top class
target = st.selectbox("Explain class", range(len(names)), index=int(top5["index"][0]),
                      key=f"grad_class:{source}:{inp.digest}",
                      format_func=lambda i: f"{i}: {names[i]}")


@st.cache_resource(show_spinner="Backpropagating to every layer's attention...", max_entries=32)
def grad_map(source: str, digest: str, target: int, _x: torch.Tensor) -> torch.Tensor:
    return cls_map(gradient_rollout(models.load(source), _x, target), layout)


relevance = grad_map(source, inp.digest, target, x)
fig = rollout_figure([shown], {f"gradient rollout, class {names[target]}": relevance},
                     f"Gradient rollout: {about}")
show.show(fig, "gradient_rollout", pd.DataFrame(relevance[0].numpy()), "grad_fig")

# ---- every head of one layer ----------------------------------------------------------------------------------
st.subheader("Class-token attention of every head")
layer = st.slider("Layer", 1, depth, depth, key=f"head_layer:{source}")
maps = head_maps(attentions, layout, layer=layer - 1)[0]
fig = heads_figure(shown, maps, f"Layer {layer}, each head's class-token attention: {about}")
show.show(fig, f"heads_layer{layer}", {"layer": layer, "maps": maps}, "heads_fig")

# ---- what one patch attends to, layer by layer ----------------------------------------------------------------
r, c = divmod(patch, grid[1])
st.subheader(f"What patch ({r}, {c}) attends to, per layer ({fusion} over heads)")
rows_q = patch_maps(attentions, patch, layout, head_fusion=fusion)[0]
fig = px.imshow(rows_q.numpy(), facet_col=0, facet_col_wrap=min(depth, 6), color_continuous_scale="Viridis",
                facet_row_spacing=0.06, facet_col_spacing=0.01, title=f"Attention from patch ({r}, {c}): {about}")
fig.for_each_annotation(lambda a: a.update(text=f"layer {int(a.text.split('=')[1]) + 1}"))
fig.update_xaxes(showticklabels=False)
fig.update_yaxes(showticklabels=False)
fig.update_layout(width=140 * min(depth, 6) + 120, height=150 * -(-depth // 6) + 120)
show.show(fig, f"patch_{r}_{c}", {"patch": [r, c], "fusion": fusion, "per_layer": rows_q}, "patch_fig")
