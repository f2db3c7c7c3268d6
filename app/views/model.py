"""The chosen model: architecture, parameter count, resolution and preprocessing."""
import json

import pandas as pd
import streamlit as st

from kit import models
from vitlens import token_layout
from vitlens.analysis.figures import jsonable
from vitlens.data import knows_only_fashion_mnist
from vitlens.models.loading import model_card

st.title("Model")
source, model = models.current_model()
info = models.describe(model)
card = model_card(source)
columns = st.columns(5 if card else 4)
columns[0].metric("Kind", info["kind"])
columns[1].metric("Parameters", f"{info['parameters'] / 1e6:.2f} M")
columns[2].metric("Input", " x ".join(map(str, model.data_config["input_size"])))
columns[3].metric("Classes", info["classes"])
if card:
    columns[4].metric("Test accuracy", f"{100 * card['test_accuracy']:.2f} %",
                      help=f"On the {card['test_images']:,} {card['data']['dataset']} test images, from the model "
                           f"card: {card['command']}")
READS = dict(token="the class token", avg="the mean of the patch tokens", map="an attention pool",
             none="no pooled token")
if models.is_vit(model):
    layout = token_layout(model)
    prefix = ", ".join(f"`{t}`" for t in layout.prefix) or "none"
    st.write(f"Patches of {layout.patch_size[0]} x {layout.patch_size[1]} px on a {layout.grid[0]} x "
             f"{layout.grid[1]} grid; prefix tokens: {prefix} ({layout.num_tokens} tokens in all); "
             f"{len(model.blocks)} blocks of {model.blocks[0].attn.num_heads} heads; the head reads "
             f"{READS[layout.pool]}.")
if knows_only_fashion_mnist(model):
    st.info("Trained on Fashion-MNIST only (10 clothing classes, 28 x 28 grayscale): photos are outside its domain. "
            f"Online, `timm:{models.PAPER_CHECKPOINT}` loads the paper's ViT-B/16.")
left, right = st.columns(2)
left.subheader("Architecture")
# tables, not dataframes: every row shows, none hidden behind a scroll box
left.table(pd.DataFrame({"field": list(info["architecture"]), "value": [str(v) for v in
                                                                        info["architecture"].values()]}))
right.subheader("Preprocessing (eval)")
right.table(pd.DataFrame({"field": list(info["preprocessing"]),
                          "value": [str(v) for v in info["preprocessing"].values()]}))
right.caption("Images are resized and centre-cropped with timm's eval transform, then normalised with this mean "
              "and std; RGB photos are converted to grayscale for 1-channel models.")
st.download_button("Model description (JSON)", json.dumps(jsonable(info), indent=1),
                   file_name="model.json", mime="application/json", on_click="ignore")
