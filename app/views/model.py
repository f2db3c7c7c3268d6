"""The chosen model: architecture, parameter count, resolution and preprocessing."""
import json

import pandas as pd
import streamlit as st

from kit import models
from vitlens.analysis.figures import jsonable
from vitlens.data import knows_only_fashion_mnist

st.title("Model")
source, model = models.current_model(require_vit=False)
info = models.describe(model)
c1, c2, c3, c4 = st.columns(4)
c1.metric("Kind", info["kind"])
c2.metric("Parameters", f"{info['parameters'] / 1e6:.2f} M")
c3.metric("Input", " x ".join(map(str, model.data_config["input_size"])))
c4.metric("Classes", info["classes"])
if models.is_vit(model):
    st.write(f"Patch size {model.patch_size}, grid {model.grid_size[0]} x {model.grid_size[1]} patches, "
             f"{len(model.blocks)} blocks, {model.blocks[0].attn.num_heads} heads, pool `{model.pool}`.")
if knows_only_fashion_mnist(model):
    st.info("Trained on Fashion-MNIST only (10 clothing classes, 28 x 28 grayscale): photos are outside its domain. "
            f"Online, `timm:{models.PAPER_CHECKPOINT}` loads the paper's ViT-B/16.")
left, right = st.columns(2)
left.subheader("Architecture")
left.dataframe(pd.DataFrame({"field": list(info["architecture"]), "value": [str(v) for v in
                                                                            info["architecture"].values()]}),
               hide_index=True)
right.subheader("Preprocessing (eval)")
right.dataframe(pd.DataFrame({"field": list(info["preprocessing"]),
                              "value": [str(v) for v in info["preprocessing"].values()]}), hide_index=True)
right.caption("Images are resized and centre-cropped with timm's eval transform, then normalised with this mean "
              "and std; RGB photos are converted to grayscale for 1-channel models.")
st.download_button("Model description (JSON)", json.dumps(jsonable(info), indent=1),
                   file_name="model.json", mime="application/json", on_click="ignore")
