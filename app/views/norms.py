"""High-norm tokens (Darcet et al. 2024, "Vision Transformers Need Registers"): one image's token norms per layer
over the image with the outliers marked, and over a dataset the norm distribution per layer with the threshold that
splits it, how many outliers there are, where they sit and how much of the class token's attention they take."""
import pandas as pd
import streamlit as st
import torch

from kit import inputs, models, show
from vitlens.analysis import high_norm_tokens, token_norms
from vitlens.analysis.figures import norm_maps_figure, norm_profile_figure, norms_figure, positions_figure
from vitlens.analysis.findings import norms_finding
from vitlens.images import unnormalize

st.title("High-norm tokens")
source, model = models.current_model(needs_vit="reads a ViT's token norms (a CNN has no tokens)")
inp = inputs.image_input("norms")
inputs.domain_note(model, inp)
c1, c2 = st.columns(2)
n = c1.select_slider("Fashion-MNIST test images for the norm distribution", [32, 64, 128, 512], 64, key="norms_n",
                     help="The threshold that splits each layer's norms is derived from these images' tokens.")
fixed = c2.number_input("Fixed outlier norm (0: split each layer's norms where they are bimodal)", 0.0, None, 0.0,
                        key="norms_threshold", help="The paper splits DINOv2 ViT-g's norms at 150 by hand.")


@st.cache_data(show_spinner=False, max_entries=8)
def dataset_norms(source: str, n: int) -> dict:
    batches = inputs.fashion_batches("test", n)
    return token_norms(models.load(source), show.with_progress(batches, len(batches), "Token norms"), progress=False)


@st.cache_data(show_spinner=False, max_entries=16)
def image_norms(source: str, digest: str, _x: torch.Tensor) -> dict:
    model = models.load(source)  # token_norms prepares [0, 1] images: give it the model's input back in [0, 1]
    return token_norms(model, unnormalize(_x, model.data_config), progress=False)


@st.cache_data(show_spinner=False, max_entries=16)
def split(source: str, n: int, fixed: float) -> dict:
    """The outliers of the dataset's norms: one mixture fit per layer, not redone when only the image changes."""
    return high_norm_tokens(dataset_norms(source, n), threshold=fixed or None)


data = dataset_norms(source, n)
found = split(source, n, fixed)
layout, layers = data["layout"], data["layers"]
one = image_norms(source, inp.digest, inputs.model_input(source, inp))
thresholds = torch.tensor(found["thresholds"]).view(-1, 1)
patch_norms = layout.patches(one["norms"][0])  # layers x patches
outliers = patch_norms > thresholds
how = f"norm above {fixed:g}" if fixed else "each layer's norms split where bimodal"
fig = norm_maps_figure(inputs.view(source, inp), layout.to_grid(patch_norms), layout.to_grid(outliers), layers,
                       show.title_text(f"Token norms per layer ({how}): {source}, {inp.label}"))
show.show(fig, "token_norms", pd.DataFrame(patch_norms.numpy().T, columns=[f"layer {l + 1}" for l in layers]),
          "norm_maps")
st.caption(f"Each panel: the norm of every patch token's block output, on one log colour scale over the "
           f"{layout.grid[0]} x {layout.grid[1]} grid; a red x marks a high-norm token. Prefix tokens "
           f"({', '.join(layout.prefix) or 'none'}) are left out of the maps and drawn below.")
profile = norm_profile_figure(one["norms"][0], layout.prefix, layers,
                              show.title_text(f"Token norms against depth: {source}, {inp.label}"))
show.show(profile, "token_norm_profile", {"layers": [l + 1 for l in layers], "norms": one["norms"][0]},
          "norm_profile")
label = f"{n} Fashion-MNIST test images"
show.show(norms_figure(layout.patches(data["norms"]), layers, found,
                       show.title_text(f"High-norm tokens ({how}): {source}, {label}")), "norm_distribution",
          {k: v for k, v in found.items() if k != "outliers"}, "norm_hist")
if any(found["count"]):
    show.show(positions_figure(found["positions"], layers, show.title_text(
        f"Where the high-norm tokens sit ({layout.grid[0]} x {layout.grid[1]} patches): {source}, {label}")),
        "norm_positions", {"positions": found["positions"]}, "norm_pos")
show.finding(norms_finding(found, layers)["text"])
