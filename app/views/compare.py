"""ViT vs CNN on one image: predictions, rollout / gradient rollout beside Grad-CAM and Integrated Gradients, and
every map's deletion and insertion curves (Petsiuk et al. 2018) in most- and least-relevant-first order with their
AUC and symmetric relevance gain, beside a random map's: what `vitlens.analysis.explain` and the batched
`faithfulness` compute (the `vitlens analyze explain` benchmark, on one image)."""
import pandas as pd
import streamlit as st
import torch

from kit import inputs, models, show
from vitlens.analysis import auc_table, deletion_insertion, saliency_maps
from vitlens.analysis.figures import faithfulness_curves_figure, rollout_figure
from vitlens.analysis.saliency import RANDOM, SET
from vitlens.data import class_names, knows_only_fashion_mnist

st.title("ViT vs CNN")
NEEDS_VIT = ("needs the ViT in the sidebar; the CNN to compare goes in the box below")
vit_source, vit = models.current_model(needs_vit=NEEDS_VIT)
cnn_source, cnn = models.cnn_picker("cnn_source")
inp = inputs.image_input("cmp")
inputs.domain_note(vit, inp)
steps = st.select_slider("Deletion / insertion steps", [8, 16, 32], 16, key="cmp_steps",
                         help="Points on each curve; all of them, for every map, go through the model together.")

xv, xc = inputs.model_input(vit_source, inp), inputs.model_input(cnn_source, inp)
logits_v = models.vit_forward(vit_source, inp.digest, xv)["logits"]
logits_c = models.cnn_forward(cnn_source, inp.digest, xc)
names = class_names(vit)
if class_names(cnn) != names:
    st.error(f"{show.literal(vit_source)} and {show.literal(cnn_source)} do not have the same classes, so they "
             f"cannot explain the same one: pick a CNN trained on the ViT's data.")
    st.stop()
# common ground: one class for both models, by default the image's true class where the models know it
known = inp.true_class if inp.true_class is not None and knows_only_fashion_mnist(vit) else None
target = st.selectbox("Explain class (both models)", range(len(names)), format_func=lambda i: f"{i}: {names[i]}",
                      index=int(logits_v.argmax()) if known is None else known,
                      key=f"cmp_class:{vit_source}:{cnn_source}:{inp.digest}",  # a new model or image, a new default
                      help="Every map and curve explains this class in both models. Default: the true class of a "
                           "Fashion-MNIST test image, else the ViT's top class.")
left, right = st.columns(2)
for col, name, logits in ((left, vit_source, logits_v), (right, cnn_source, logits_c)):
    col.subheader(show.literal(name))
    col.metric(f"Probability of {names[target]}", f"{float(logits.softmax(-1)[0, target]):.3f}")
    col.dataframe(show.top_k(logits, names).style.format({"probability": "{:.3f}"}), hide_index=True)


@st.cache_resource(show_spinner="Computing the maps (gradients through both models)...", max_entries=16)
def maps_for(vit_source: str, cnn_source: str, digest: str, target: int, _xv: torch.Tensor,
             _xc: torch.Tensor) -> dict:
    """Each method's map for ``target`` in its model, and a random map for each model."""
    with models.hook_lock(cnn_source):  # Grad-CAM hooks the shared CNN
        return saliency_maps(models.load(vit_source), _xv, models.load(cnn_source), _xc, methods={**SET, **RANDOM},
                             vit_target=target, cnn_target=target)


@st.cache_resource(show_spinner="Deleting and inserting pixels...", max_entries=16)
def curves_for(vit_source: str, cnn_source: str, digest: str, target: int, steps: int, _maps: dict, _xv: torch.Tensor,
               _xc: torch.Tensor) -> dict:
    return deletion_insertion(_maps, {"vit": (models.load(vit_source), _xv), "cnn": (models.load(cnn_source), _xc)},
                              steps=steps)


every = maps_for(vit_source, cnn_source, inp.digest, target, xv, xc)
maps = {name: every[name] for name in SET}
shown = inputs.view(vit_source, inp)
st.subheader(f"Maps of class {names[target]} in both models")
about = show.title_text(f"ViT {vit_source} vs CNN {cnn_source} on {inp.label}, class {names[target]}")
fig = rollout_figure([shown], {name: s.map[None].clamp(min=0) for name, s in maps.items()}, about)
show.show(fig, "vit_vs_cnn_maps", {name: s.map for name, s in maps.items()}, "maps_fig")
st.caption("Alpha masks (positive part of each map / its max). Rollout, gradient rollout and Grad-CAM are coarse "
           "(patch grid or last stage); Integrated Gradients is per pixel, summed over channels.")

curves = curves_for(vit_source, cnn_source, inp.digest, target, steps, every, xv, xc)
by_order = {name: {mode: {"morf": c["scores"], "lerf": c["lerf_scores"]} for mode, c in by_mode.items()}
            for name, by_mode in curves.items()}
fractions = {mode: c["fractions"] for mode, c in next(iter(curves.values())).items()}
fig = faithfulness_curves_figure(fractions, by_order, f"Deletion (to the mean image) / insertion (from a blurred copy)"
                                 f"<br><sup>{about}</sup>")
show.show(fig, "deletion_insertion", curves, "curves_fig")
table = pd.DataFrame(auc_table(maps, curves))
st.dataframe(table.style.format({c: "{:.3f}" for c in table.columns if "AUC" in c or "SRG" in c}), hide_index=True)
st.download_button("AUC table (CSV)", table.to_csv(index=False), file_name="auc.csv", mime="text/csv",
                   on_click="ignore")
rand = {row["map"]: row for row in auc_table({k: every[k] for k in RANDOM}, curves)}
st.caption("Deletion replaces the most salient pixels (solid; dotted: the least salient first) with the "
           "normalisation mean; insertion adds them to a blurred copy (RISE). SRG = AUC of the least-relevant-first "
           "deletion minus the most-relevant-first one (Blücher et al. 2024): 0 is no better than the map's reverse. "
           "A random map, the baseline to beat: " + "; ".join(
               f"{name}: deletion AUC {r['deletion AUC']:.3f}, insertion AUC {r['insertion AUC']:.3f}, "
               f"SRG (mean) {r['SRG (mean)']:+.3f}" for name, r in rand.items()) +
           ". Maps are compared on their own model's probability, so compare methods within a model more than across "
           "models; one image is an anecdote: `vitlens analyze explain` runs the same over a dataset.")
