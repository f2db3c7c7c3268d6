"""Position embeddings (paper Fig. 7 centre) and patch-embedding filters (Fig. 7 left), before and after a
resolution change; for one model, or two side by side."""
import streamlit as st

from kit import models, show
from vitlens import token_layout
from vitlens.analysis import patch_embedding_components, posembed_finding, position_embedding_similarity
from vitlens.analysis.figures import HALF_WIDTH, filters_figure, posembed_figure

st.title("Position embeddings")
NEEDS_VIT = "shows a ViT's position embeddings and patch-embedding filters (a CNN has neither)"
shown = [models.current_model(needs_vit=NEEDS_VIT)]
if second := models.second_model(NEEDS_VIT):
    shown.append(second)
c1, c2 = st.columns(2)
factor = c1.select_slider("New grid (x the trained one)", [0.5, 1.5, 2.0], 2.0, key="res_factor",
                          help="The patch size is kept, so the sequence gets longer (paper section 3.2).")
mode = c2.selectbox("Interpolation", ["bicubic", "bilinear"], key="res_mode",
                    help="timm interpolates bicubic, the official code linear (timm's own models: bicubic).")


def similarity_section(source: str, model, key: str, width: int | None) -> None:
    """The table's similarity at the trained grid and after the resolution change, with the finding."""
    about = show.title_text(source)
    similarity = position_embedding_similarity(model)
    grid = tuple(similarity.shape[:2])
    st.subheader(f"Cosine similarity ({grid[0]} x {grid[1]} patches)")
    show.show(posembed_figure(similarity, f"Position embedding similarity: {about}"), "posembed",
              {"grid": grid, "similarity": similarity}, f"pos_fig{key}", width=width)
    show.finding(posembed_finding(similarity)["text"])
    patch = token_layout(model).square_patch
    size = max(1, round(grid[0] * factor)) * patch
    resized = models.load_resized(source, size, mode)
    st.subheader(f"After moving to {size} px")
    show.show(posembed_figure(position_embedding_similarity(resized),
                              f"Position embedding similarity at {size} px ({mode}): {about}"),
              f"posembed_{size}", {"img_size": size, "mode": mode,
                                   "similarity": position_embedding_similarity(resized)}, f"pos_resized_fig{key}",
              width=width)


def filters_section(source: str, model, key: str, width: int | None) -> None:
    if hasattr(model.patch_embed, "backbone"):
        st.info("A hybrid's patch embedding acts on ResNet features, not pixels: it has no filters to draw.")
        return
    st.subheader("Principal components of the patch-embedding filters")
    k = min(28, *model.patch_embed.proj.weight.flatten(1).shape)
    comps, explained = patch_embedding_components(model, k=k)
    show.show(filters_figure(comps, explained, f"Patch-embedding PCs: {show.title_text(source)}",
                             wrap=2 if width else 4), "filters",
              {"components": comps, "explained_variance_ratio": explained}, f"filters_fig{key}", width=width)


for key, column, (source, model) in zip(("", "2"), st.columns(len(shown)), shown):
    with column:
        if len(shown) > 1:
            st.header(show.literal(source))
        try:
            similarity_section(source, model, key, width=HALF_WIDTH if len(shown) > 1 else None)
        except ValueError as e:  # no absolute table: RoPE-only ViTs, BEiT's relative position bias
            st.info(f"{e}: there is no table of position embeddings to compare.")
        filters_section(source, model, key, width=HALF_WIDTH if len(shown) > 1 else None)
st.caption("Tile (r, c) is the similarity of patch (r, c)'s embedding with every other patch's, on one colour scale "
           "from -1 to 1 for every model; prefix slots (class, distillation, registers) are left out. A learned 1-D "
           "table that has found the 2-D grid shows a bright spot at each tile's own position and row/column "
           "stripes. A resolution change keeps E (the patch size), so the filters do not change with it; only the "
           "position table is interpolated.")
