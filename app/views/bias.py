"""Inductive biases, ViT against CNN: translation (Zhang 2019), occlusion and shuffling (Naseer et al. 2021),
effective receptive fields (Luo et al. 2016), and the committed data-size sweep (paper section 4.3 in miniature)."""
import json
from pathlib import Path

import streamlit as st

from kit import inputs, models, show
from vitlens.bias import PROBES, compare_models, comparison_figures, comparison_numbers
from vitlens.bias.figures import sweep_figure
from vitlens.bias.sweep import crossover

SWEEP = Path(__file__).resolve().parents[2] / "analyses" / "results" / "bias" / "sweep.json"
NAMES = {"translation": "Translation", "occlusion": "Occlusion and shuffling", "erf": "Receptive fields"}

st.title("Inductive biases")
st.write("The paper's argument (section 3.1): a CNN builds locality, the 2-D neighbourhood and translation "
         "equivariance into every layer; in a ViT only the MLPs are local and translation-equivariant, self-attention "
         "is global, and the 2-D structure is used only to cut the patches, so the rest must be learned from data. "
         "These probes measure both models on the same Fashion-MNIST test images.")
vit_source, _ = models.current_model(needs_vit="probes the ViT in the sidebar against the CNN chosen below")
cnn_source, _ = models.cnn_picker("bias_cnn")
c1, c2 = st.columns(2)
n = c1.select_slider("Fashion-MNIST test images", [64, 256, 1000], 256, key="bias_n",
                     help="Occlusion uses all of them; translation (every shift of every image through both models) "
                          "and receptive fields the first 64.")
probes = c2.multiselect("Probes", list(PROBES), list(PROBES), format_func=NAMES.get, key="bias_probes")


@st.cache_data(show_spinner=False, max_entries=8)
def run_probes(vit_source: str, cnn_source: str, n: int, probes: tuple[str, ...]) -> dict:
    pair = {vit_source: models.load(vit_source), cnn_source: models.load(cnn_source)}
    x, y = inputs.fashion_batches("test", n, batch_size=n)[0]
    with st.status("Probing both models", expanded=True) as status:
        # hooks (feature maps, ERF gradients) go on the shared models: one session at a time per model
        with models.hook_lock(vit_source), models.hook_lock(cnn_source):
            result = compare_models(pair, x, y, probes=probes, translation_images=64, on_step=status.write)
        status.update(label="Probes done", state="complete", expanded=False)
    return result


if not probes:
    st.info("Pick at least one probe.")
elif st.button("Run the probes", key="bias_run", type="primary") or st.session_state.get("bias_done"):
    st.session_state.bias_done = True
    result = run_probes(vit_source, cnn_source, n, tuple(p for p in PROBES if p in probes))
    figs = comparison_figures(result, show.title_text(f"{vit_source} vs {cnn_source}; the first Fashion-MNIST test "
                                                      f"images"))
    numbers = comparison_numbers(result)
    for name, fig in figs.items():
        show.show(fig, f"bias_{name}", numbers, f"bias_fig_{name}")
    if "translation" in figs:
        st.caption("Consistency: share of images whose prediction survives the shift. Equivariance error: how far "
                   "the last layer's feature map is from the shifted original (filled markers: whole-patch shifts, "
                   "which a ViT's patch grid can follow; open: sub-patch shifts).")
    if "occlusion" in figs:
        st.caption("Naseer et al. found ViTs far more robust than CNNs to dropping and shuffling patches.")
    if "erf" in figs:
        st.caption("A CNN's receptive field grows layer by layer; a ViT's attention can reach the whole image in "
                   "layer 1: compare the ERF radii with the ViT's mean attention distance.")
else:
    st.info("Three probes on both models: about a minute on two CPU cores for the bundled models at 256 images.")

st.header("Data-size sweep")
if SWEEP.exists():
    sweep = json.loads(SWEEP.read_text())
    vit_cfg, cnn_cfg = sweep["models"]["vit"], sweep["models"]["cnn"]
    title = (f"Fashion-MNIST test accuracy against training-set size<br><sup>committed run: ViT dim "
             f"{vit_cfg['embed_dim']}, depth {vit_cfg['depth']} vs ResNet widths {cnn_cfg['channels']}; both "
             f"{sweep['steps']} steps x batch {sweep['batch_size']}</sup>")
    show.show(sweep_figure(sweep["summary"], title, budget_images=sweep["steps"] * sweep["batch_size"]),
                "bias_sweep", sweep, "bias_fig_sweep")
    at = crossover(sweep["summary"])
    st.caption("Made by `python analyses/bias_sweep.py` (the README says what it shows). "
               + (f"Here the ViT reaches the CNN from {at:,.0f} training images on." if at else
                  "Here the ViT stays below the CNN at every size: the paper's crossover needed ImageNet-21k-sized "
                  "data (14M images), far beyond Fashion-MNIST's 60,000."))
else:
    st.info("No committed sweep found beside the app; run `python analyses/bias_sweep.py` to make one.")
