"""Position embeddings (paper Fig. 7 centre) and patch-embedding filters (Fig. 7 left), before and after a
resolution change."""
import streamlit as st

from kit import models, show
from vitlens.analysis import patch_embedding_components, posembed_finding, position_embedding_similarity
from vitlens.analysis.figures import filters_figure, posembed_figure

st.title("Position embeddings")
NEEDS_VIT = ("shows a ViT's position embeddings and patch-embedding filters (a CNN has neither)")
source, model = models.current_model(needs_vit=NEEDS_VIT)
about = show.title_text(source)  # for figure titles
if model.is_hybrid:
    st.info("A hybrid's patch embedding acts on ResNet features: only the position embeddings are shown.")
similarity = position_embedding_similarity(model)
grid = model.grid_size
st.subheader(f"Cosine similarity of the position embeddings ({grid[0]} x {grid[1]} patches)")
show.show(posembed_figure(similarity, f"Position embedding similarity: {about}"), "posembed",
            {"grid": grid, "similarity": similarity}, "pos_fig")
st.caption("Tile (r, c) is the similarity of patch (r, c)'s embedding with every other patch's; the class slot is "
           "excluded. A learned 1-D table that has found the 2-D grid shows a bright spot at each tile's own "
           "position and row/column stripes.")
show.finding(posembed_finding(similarity)["text"])

st.subheader("After a resolution change")
p = model.patch_size
c1, c2 = st.columns(2)
factor = c1.select_slider("New grid (x the trained one)", [0.5, 1.5, 2.0], 2.0, key="res_factor",
                          help="The patch size is kept, so the sequence gets longer (paper section 3.2).")
mode = c2.selectbox("Interpolation", ["bicubic", "bilinear"], key="res_mode",
                    help="timm interpolates bicubic, the official code linear.")
size = max(1, round(model.img_size[0] / p * factor)) * p
resized = models.load_resized(source, size, mode)
sim2 = position_embedding_similarity(resized)
show.show(posembed_figure(sim2, f"Position embedding similarity at {size} px ({mode}): {about}"),
            f"posembed_{size}", {"img_size": size, "mode": mode, "similarity": sim2}, "pos_fig2")

if not model.is_hybrid:
    st.subheader("Principal components of the patch-embedding filters")
    k = min(28, *model.patch_embed.proj.weight.flatten(1).shape)
    comps, explained = patch_embedding_components(model, k=k)
    show.show(filters_figure(comps, explained, f"Patch-embedding PCs: {about}"), "filters",
                {"components": comps, "explained_variance_ratio": explained}, "filters_fig")
    same = (patch_embedding_components(resized, k=k)[0] - comps).abs().max().item()
    st.caption(f"A resolution change keeps E (the patch size is unchanged), so the components at {size} px are the "
               f"same (largest difference {same:.1e}); only the position table is interpolated.")
