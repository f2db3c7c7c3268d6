"""Mean attention distance per head against depth (paper Fig. 7 right) over a dataset, beside the CNN's effective
receptive field growing with depth."""
import hashlib
import zipfile

import pandas as pd
import streamlit as st
import torch

from kit import inputs, models, show
from vitlens import token_layout
from vitlens.analysis import attention_distance, distance_finding, patch_distances
from vitlens.analysis.figures import HALF_WIDTH, distance_figure
from vitlens.bias import erf_probe
from vitlens.bias.figures import erf_figure
from vitlens.images import prepare, read_zip

st.title("Attention distance")
NEEDS_VIT = "measures a ViT's attention distance (a CNN has none: its receptive field is drawn beside it)"
shown = [models.current_model(needs_vit=NEEDS_VIT)]
if second := models.second_model(NEEDS_VIT):
    shown.append(second)
source, model = shown[0]
c1, c2 = st.columns(2)
dataset = c1.radio("Dataset", ["Fashion-MNIST test subset", "Zip of my images"], key="dist_data", horizontal=True)


if dataset == "Fashion-MNIST test subset":
    n = c2.select_slider("Images", [32, 128, 512, 1000], 128, key="dist_n", help="The paper averaged 128 images.")
    batches, spec = inputs.fashion_batches("test", n), f"fashion:{n}"
    label = f"{n} Fashion-MNIST test images"
else:
    up = c2.file_uploader("A .zip of images", type=["zip"], key="dist_zip", max_upload_size=models.max_upload_mb())
    if up is None:
        st.info("Upload a zip of images (at most 512 are read).")
        st.stop()
    try:
        images, skipped = read_zip(up.getvalue(), model.data_config["input_size"][-1])
    except zipfile.BadZipFile as e:
        st.error(f"{show.literal(up.name)} is not a readable zip file: {show.literal(e)}")
        st.stop()
    if skipped:
        st.warning(f"Skipped {len(skipped)} file(s): {'; '.join(map(show.literal, skipped[:3]))}")
    if not len(images):
        st.error(f"No readable image in {show.literal(up.name)}.")
        st.stop()
    batches = [(b, torch.zeros(len(b))) for b in images.split(64)]
    spec, label = "zip:" + hashlib.sha256(up.getvalue()).hexdigest(), f"{len(images)} images from {up.name}"


@st.cache_data(show_spinner=False, max_entries=16)
def vit_distance(source: str, spec: str, _batches: list) -> dict:
    out = attention_distance(models.load(source), show.with_progress(_batches, len(_batches), "ViT attention"),
                             progress=False)
    return dict(mean=out["mean"], std=out["std"], count=out["count"])


@st.cache_data(show_spinner=False, max_entries=16)
def erf_radii(source: str, spec: str, _batches: list) -> dict:
    cnn = models.load(source)
    x = torch.cat([prepare(b, cnn.data_config) for b, _ in _batches])[:64]  # ERF: 64 images suffice for a mean
    with models.hook_lock(source):
        out = erf_probe(cnn, x)
    return dict(layers=out["layers"], radius=out["radius"], count=out["count"])


def distance_section(source: str, model, d: dict, top: float, key: str) -> None:
    layout = token_layout(model)
    uniform = patch_distances(layout.grid, layout.patch_size).mean().item()  # every query looking everywhere
    fig = distance_figure(d["mean"], show.title_text(f"Mean attention distance: {source}, {label}"), d["std"],
                          uniform, top=top)
    table = pd.DataFrame(d["mean"].numpy(), columns=[f"head {h + 1}" for h in range(d["mean"].shape[1])])
    show.show(fig, "attention_distance", table.assign(layer=range(1, d["mean"].shape[0] + 1)), f"dist_fig{key}",
              width=HALF_WIDTH)
    st.caption(f"Each dot is one head; {layout.patch_size[0]} px patches on a {layout.grid[0]} x {layout.grid[1]} "
               f"grid. The dashed line is uniform attention: every query looking at every patch alike.")
    show.finding(distance_finding(d["mean"], uniform)["text"])


results = [vit_distance(src, spec, batches) for src, _ in shown]
top = 1.1 * max(max(float((d["mean"] + d["std"]).max()) for d in results),  # one scale for models side by side
                *(patch_distances(token_layout(m).grid, token_layout(m).patch_size).mean().item() for _, m in shown))
columns = st.columns(2)
for key, column, (src, m), d in zip(("", "2"), columns, shown, results):
    with column:
        distance_section(src, m, d, top, key)
right = st.container() if len(shown) > 1 else columns[1]
with right:
    cnn_source = models.default_cnn()
    cnn = models.try_load(cnn_source)
    if cnn is not None:
        r = erf_radii(cnn_source, spec, batches)
        fig2 = erf_figure({"CNN": r}, show.title_text(f"CNN effective receptive field (Luo et al. 2016): "
                                                      f"{cnn_source}, {r['count']} images"))
        show.show(fig2, "cnn_erf", r, "erf_fig", width=HALF_WIDTH if len(shown) == 1 else None)
        st.caption("The CNN's field grows stage by stage from a few pixels (locality is built in); the ViT can look "
                   "across the whole image from layer 1.")
