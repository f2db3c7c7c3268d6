"""ViT vs CNN on one image: predictions, rollout / gradient rollout beside Grad-CAM and Integrated Gradients, and
every map's deletion and insertion curves with their AUC (Petsiuk et al. 2018)."""
import pandas as pd
import streamlit as st
import torch

from kit import inputs, models, show
from vitlens.analysis import auc_table, deletion_insertion, saliency_maps
from vitlens.analysis.figures import deletion_insertion_figure, rollout_figure
from vitlens.data import class_names

st.title("ViT vs CNN")
NEEDS_VIT = ("needs the ViT in the sidebar; the CNN to compare goes in the box below")
vit_source, vit = models.current_model(needs_vit=NEEDS_VIT)
cnn_source, cnn = models.cnn_picker("cnn_source")
inp = inputs.image_input("cmp")
if inp is None:
    st.stop()
inputs.domain_note(vit, inp)
steps = st.select_slider("Deletion / insertion steps", [8, 16, 32], 16, key="cmp_steps",
                         help="Points on each curve; every point is one forward pass of the perturbed image.")

xv, xc = inputs.model_input(vit_source, inp), inputs.model_input(cnn_source, inp)
logits_v = models.vit_forward(vit_source, inp.digest, xv)["logits"]
logits_c = models.cnn_forward(cnn_source, inp.digest, xc)
left, right = st.columns(2)
for col, name, logits, model in ((left, vit_source, logits_v, vit), (right, cnn_source, logits_c, cnn)):
    col.subheader(show.literal(name))
    col.dataframe(show.top_k(logits, class_names(model)).style.format({"probability": "{:.3f}"}), hide_index=True)


@st.cache_resource(show_spinner="Computing the maps (gradients through both models)...", max_entries=16)
def maps_for(vit_source: str, cnn_source: str, digest: str, _xv: torch.Tensor, _xc: torch.Tensor) -> dict:
    """Each method's map for its own model's predicted class."""
    forward = models.vit_forward(vit_source, digest, _xv)
    with models.hook_lock(cnn_source):  # Grad-CAM hooks the shared CNN
        return saliency_maps(models.load(vit_source), _xv, models.load(cnn_source), _xc,
                             vit_target=int(forward["logits"].argmax()),
                             cnn_target=int(models.cnn_forward(cnn_source, digest, _xc).argmax()),
                             attentions=forward["attentions"])


@st.cache_resource(show_spinner="Deleting and inserting pixels...", max_entries=16)
def curves_for(vit_source: str, cnn_source: str, digest: str, steps: int, _maps: dict, _xv: torch.Tensor,
               _xc: torch.Tensor) -> dict:
    return deletion_insertion(_maps, {"vit": (models.load(vit_source), _xv), "cnn": (models.load(cnn_source), _xc)},
                              steps=steps)


maps = maps_for(vit_source, cnn_source, inp.digest, xv, xc)
shown = inputs.view(vit_source, inp)
st.subheader("Maps (each for its model's top class)")
about = show.title_text(f"ViT {vit_source} vs CNN {cnn_source} on {inp.label}")  # for figure titles
fig = rollout_figure([shown], {name: s.map[None].clamp(min=0) for name, s in maps.items()}, about)
show.show(fig, "vit_vs_cnn_maps", {name: s.map for name, s in maps.items()}, "maps_fig")
st.caption("Alpha masks (positive part of each map / its max). Rollout, gradient rollout and Grad-CAM are coarse "
           "(patch grid or last stage); Integrated Gradients is per pixel, summed over channels.")

curves = curves_for(vit_source, cnn_source, inp.digest, steps, maps, xv, xc)
fig = deletion_insertion_figure(curves, f"Deletion / insertion: {about}")
table = pd.DataFrame(auc_table(maps, curves))
show.show(fig, "deletion_insertion", curves, "curves_fig")
st.dataframe(table.style.format({"deletion AUC": "{:.3f}", "insertion AUC": "{:.3f}"}), hide_index=True)
st.download_button("AUC table (CSV)", table.to_csv(index=False), file_name="auc.csv", mime="text/csv",
                   on_click="ignore")
st.caption("Deletion replaces the most salient pixels with the normalisation mean; insertion adds them to a blurred "
           "copy (RISE). Maps are compared on their own model's probability, so compare methods within a model "
           "more than across models.")
