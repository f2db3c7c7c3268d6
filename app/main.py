"""vitlens app: `vitlens app` (or `streamlit run app/main.py`). Sidebar model picker, one page per analysis."""
from __future__ import annotations

import streamlit as st

from kit import models

st.set_page_config(page_title="vitlens", page_icon=":material/visibility:", layout="wide")

pages = [
    st.Page("views/model.py", title="Model", icon=":material/memory:", default=True),
    st.Page("views/attention.py", title="Attention", icon=":material/visibility:"),
    st.Page("views/explorer.py", title="Attention explorer", icon=":material/grid_view:"),
    st.Page("views/posembed.py", title="Position embeddings", icon=":material/grid_on:"),
    st.Page("views/distance.py", title="Attention distance", icon=":material/straighten:"),
    st.Page("views/norms.py", title="High-norm tokens", icon=":material/bolt:"),
    st.Page("views/compare.py", title="ViT vs CNN", icon=":material/compare:"),
    st.Page("views/probe.py", title="Linear probe", icon=":material/query_stats:"),
    st.Page("views/bias.py", title="Inductive biases", icon=":material/science:"),
]
nav = st.navigation(pages)
models.pickers()
st.sidebar.caption("vitlens: see what a Vision Transformer learned. The bundled models are small and know only "
                   "Fashion-MNIST; the paper's checkpoints load by timm name when online.")
nav.run()
