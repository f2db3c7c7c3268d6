"""ViT vs CNN on one image: predictions, rollout / gradient rollout beside Grad-CAM and Integrated Gradients, and
every map's deletion and insertion curves with their AUC (Petsiuk et al. 2018)."""
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import torch
from plotly.subplots import make_subplots

import appkit
from vitlens.analysis import (attention_rollout, cls_map, grad_cam, gradient_rollout, integrated_gradients,
                              perturbation_curve, prepare)
from vitlens.analysis.figures import rollout_figure

st.title("ViT vs CNN")
vit_source, vit = appkit.current_model()
cnn_source, cnn = appkit.cnn_picker("cnn_source")
inp = appkit.image_input("cmp")
if inp is None:
    st.stop()
appkit.domain_note(vit, inp)
steps = st.select_slider("Deletion / insertion steps", [8, 16, 32], 16, key="cmp_steps",
                         help="Points on each curve; every point is one forward pass of the perturbed image.")
ig_steps = 32

xv, xc = appkit.model_input(vit_source, inp), appkit.model_input(cnn_source, inp)
logits_v = appkit.vit_forward(vit_source, inp.digest, xv)["logits"]
logits_c = appkit.cnn_forward(cnn_source, inp.digest, xc)
left, right = st.columns(2)
for col, name, logits, model in ((left, vit_source, logits_v, vit), (right, cnn_source, logits_c, cnn)):
    col.subheader(name)
    col.dataframe(appkit.top_k(logits, appkit.class_names(model)).style.format({"probability": "{:.3f}"}),
                  hide_index=True)


@st.cache_resource(show_spinner="Computing the maps (gradients through both models)...", max_entries=16)
def maps_for(vit_source: str, cnn_source: str, digest: str, _xv: torch.Tensor, _xc: torch.Tensor) -> dict:
    """Each method's map for its own model's predicted class, and that class."""
    vit, cnn = appkit.load(vit_source), appkit.load(cnn_source)
    tv = int(appkit.vit_forward(vit_source, digest, _xv)["logits"].argmax())
    tc = int(appkit.cnn_forward(cnn_source, digest, _xc).argmax())
    attn = appkit.vit_forward(vit_source, digest, _xv)["attentions"]
    grid, prefix = vit.grid_size, vit.num_prefix_tokens
    # IG from a black image, expressed in each model's input space
    black_v, black_c = (prepare(torch.zeros(1, 1, *x.shape[-2:]), m.data_config) for x, m in ((_xv, vit), (_xc, cnn)))
    with appkit.hook_lock(cnn_source):
        cam = grad_cam(cnn, _xc, tc)
    return {
        "ViT rollout": ("vit", tv, cls_map(attention_rollout(attn, num_prefix_tokens=prefix), grid, prefix)[0]),
        "ViT gradient rollout": ("vit", tv, cls_map(gradient_rollout(vit, _xv, tv), grid, prefix)[0]),
        "ViT IG": ("vit", tv, integrated_gradients(vit, _xv, tv, baseline=black_v, steps=ig_steps)[0].sum(0)),
        "CNN Grad-CAM": ("cnn", tc, cam[0]),
        "CNN IG": ("cnn", tc, integrated_gradients(cnn, _xc, tc, baseline=black_c, steps=ig_steps)[0].sum(0)),
    }


@st.cache_resource(show_spinner="Deleting and inserting pixels...", max_entries=16)
def curves_for(vit_source: str, cnn_source: str, digest: str, steps: int, _maps: dict, _xv: torch.Tensor,
               _xc: torch.Tensor) -> dict:
    models = {"vit": (appkit.load(vit_source), _xv), "cnn": (appkit.load(cnn_source), _xc)}
    return {f"{name} {mode}": perturbation_curve(models[which][0], models[which][1], sal, target, mode=mode,
                                                 steps=steps)
            for name, (which, target, sal) in _maps.items() for mode in ("deletion", "insertion")}


maps = maps_for(vit_source, cnn_source, inp.digest, xv, xc)
shown = appkit.view(vit_source, inp)
st.subheader("Maps (each for its model's top class)")
fig = rollout_figure([shown], {name: m[None].clamp(min=0) for name, (_, _, m) in maps.items()},
                     f"ViT {vit_source} vs CNN {cnn_source} on {inp.label}")
appkit.show(fig, "vit_vs_cnn_maps", {name: m for name, (_, _, m) in maps.items()}, "maps_fig")
st.caption("Alpha masks (positive part of each map / its max). Rollout, gradient rollout and Grad-CAM are coarse "
           "(patch grid or last stage); Integrated Gradients is per pixel, summed over channels.")

curves = curves_for(vit_source, cnn_source, inp.digest, steps, maps, xv, xc)
fig = make_subplots(rows=1, cols=2, subplot_titles=["Deletion (lower AUC is better)", "Insertion (higher AUC is better)"])
for key, c in curves.items():
    name, mode = key.rsplit(" ", 1)
    fig.add_trace(go.Scatter(x=c["fractions"], y=c["scores"], mode="lines", name=name,
                             legendgroup=name, showlegend=mode == "deletion"), row=1, col=1 if mode == "deletion" else 2)
fig.update_xaxes(title_text="fraction of pixels")
fig.update_yaxes(title_text="probability of the class", range=[0, 1])
fig.update_layout(title=f"Deletion / insertion: ViT {vit_source} vs CNN {cnn_source} on {inp.label}", height=460,
                  width=1000)
table = pd.DataFrame([{"map": name, "model": which, "class": target,
                       "deletion AUC": curves[f"{name} deletion"]["auc"],
                       "insertion AUC": curves[f"{name} insertion"]["auc"]} for name, (which, target, _) in maps.items()])
appkit.show(fig, "deletion_insertion", {k: {"fractions": c["fractions"], "scores": c["scores"], "auc": c["auc"]}
                                        for k, c in curves.items()}, "curves_fig")
st.dataframe(table.style.format({"deletion AUC": "{:.3f}", "insertion AUC": "{:.3f}"}), hide_index=True)
st.download_button("AUC table (CSV)", table.to_csv(index=False), file_name="auc.csv", mime="text/csv",
                   on_click="ignore")
st.caption("Deletion replaces the most salient pixels with the normalisation mean; insertion adds them to a blurred "
           "copy (RISE). Maps are compared on their own model's probability, so compare methods within a model "
           "more than across models.")
