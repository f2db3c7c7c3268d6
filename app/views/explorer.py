"""Attention explorer (issue #15): the layer x head grid of class-token maps over the image, and the patch view
(hover or click a patch: what it attends to in every layer, and in every head of a chosen layer)."""
import streamlit as st
import torch

from kit import inputs, models, show
from vitlens import TokenLayout, token_layout
from vitlens.analysis.explore import FRAME_HEIGHT, NUMBERING, ExplorerMaps, explorer_html, explorer_maps
from vitlens.analysis.figures import attention_grid_figure

st.title("Attention explorer")
source, model = models.current_model(needs_vit="draws a ViT's attention, layer by layer and head by head")
inp = inputs.image_input("explore")
inputs.domain_note(model, inp)

x = inputs.model_input(source, inp)
out = models.vit_forward(source, inp.digest, x)
shown = inputs.view(source, inp)
about = show.title_text(f"{source} on {inp.label}")
left, right = st.columns(2)
fusion = left.selectbox("Head fusion (per-layer maps of the patch view)", ["mean", "max", "min"],
                        key="explore_fusion", help="How each layer's heads become one map (the paper uses the mean).")
shared = right.toggle("One colour scale for the whole grid", True, key="explore_shared",
                      help="Off: each thumbnail runs from 0 to its own maximum.")


@st.cache_resource(show_spinner=False, max_entries=4)
def maps_of(source: str, digest: str, fusion: str, _attentions: list[torch.Tensor],
            _layout: TokenLayout) -> ExplorerMaps:
    return explorer_maps(_attentions, _layout, head_fusion=fusion)


maps = maps_of(source, inp.digest, fusion, out["attentions"], token_layout(model, x.shape[-2:]))
L, H = maps.num_layers, maps.num_heads
who = "Class-token attention" if maps.layout.has_class_token else "Mean attention of the patch queries"
st.subheader(f"{who}, every layer and head")
fig = attention_grid_figure(shown, maps.class_maps, f"{who}, every layer (rows) and head (columns)<br><sup>{about}"
                            f"</sup>", shared=shared)
show.show(fig, "attention_grid", {
    "numbering": NUMBERING, "layers": list(range(1, L + 1)), "heads": list(range(1, H + 1)),
    "grid": maps.layout.grid, "prefix": maps.layout.prefix, "maps": maps.class_maps,
    "prefix_shares": {name: maps.query_prefix[:, 1:, i] for i, name in enumerate(maps.layout.prefix)},
}, "grid_fig")
st.caption(f"{L} layers x {H} heads: each thumbnail is one head's attention from the "
           f"{'class token' if maps.layout.has_class_token else 'patch queries (their mean; no class token)'} to the "
           f"patches, over the image in grayscale; hover a thumbnail for its name and maximum. The prefix tokens' "
           f"shares ({', '.join(maps.layout.prefix) or 'none'}) are in the JSON.")

st.subheader("Patch view: what a patch attends to, layer by layer and head by head")


@st.cache_resource(show_spinner="Writing the patch view...", max_entries=4)
def page_of(source: str, digest: str, fusion: str, about: str, _maps: ExplorerMaps, _shown: torch.Tensor) -> str:
    return explorer_html(_maps, _shown, f"Attention explorer: {about}", grid=False)


page = page_of(source, inp.digest, fusion, about, maps, shown)
st.iframe(page, height=FRAME_HEIGHT)
st.download_button("The explorer as one HTML file (with the grid; works offline)", lambda: explorer_html(
    maps, shown, f"Attention explorer: {about}"), file_name="explorer.html", mime="text/html", key="explore_html",
    icon=":material/download:", on_click="ignore")
