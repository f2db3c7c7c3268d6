"""Per-layer linear probes and the paper's few-shot linear evaluation, ViT and CNN on Fashion-MNIST."""
import pandas as pd
import streamlit as st

from kit import inputs, models, show
from vitlens.analysis import linear_probe, probe_finding
from vitlens.analysis.figures import probe_figure
from vitlens.data.fashion_mnist import CLASSES

st.title("Linear probe")
st.write("Frozen features of every layer (ViT: class token; CNN: pooled stage) into a logistic regression on "
         "Fashion-MNIST, and the paper's closed-form few-shot regression (section 4.1).")
vit_source, _ = models.current_model(needs_vit="probes the ViT in the sidebar beside the CNN named on this page")
c1, c2, c3 = st.columns(3)
n_train = c1.select_slider("Training images", [250, 1000, 2000, 5000], 1000, key="probe_train")
n_test = c2.select_slider("Test images", [100, 500, 1000], 500, key="probe_test")
shots = c3.multiselect("Few-shot (per class)", [1, 5, 10, 25], [1, 5, 10, 25], key="probe_shots")
sources = {"ViT": vit_source, "CNN": st.text_input("CNN", models.default_cnn(), key="probe_cnn", help=models.CNN_HELP)}


@st.cache_data(show_spinner=False, max_entries=16)
def probe(source: str, n_train: int, n_test: int, shots: tuple[int, ...]) -> dict:
    model = models.load(source)
    train, test = inputs.fashion_batches("train", n_train), inputs.fashion_batches("test", n_test)
    with models.hook_lock(source):
        return linear_probe(model, show.with_progress(train, len(train), f"{show.literal(source)}: training features"),
                            show.with_progress(test, len(test), f"{show.literal(source)}: test features"),
                            shots=shots, progress=False)


if st.button("Run the probes", key="probe_run", type="primary") or st.session_state.get("probe_done"):
    st.session_state.probe_done = True
    for kind, source in sources.items():  # one under the other: the layer names need the main column's width
        if models.try_load(source) is None:
            continue
        r = probe(source, n_train, n_test, tuple(sorted(shots)))
        fig = probe_figure(r["layers"], r["logistic"], r["fewshot"],
                           show.title_text(f"{kind} {source}: {n_train} train / {n_test} test Fashion-MNIST images"))
        rows = [{"layer": n, "logistic": r["logistic"][n],
                 **{f"{k}-shot": r["fewshot"][n][k]["mean"] for k in (r["fewshot"] or {}).get(n, {})}}
                for n in r["layers"]]
        table = pd.DataFrame(rows)
        if out := r["shots_left_out"]:
            st.info(f"{', '.join(f'{k}-shot' for k in out['shots'])} left out: the first {n_train} training "
                    f"images hold only {out['count']} of class {out['scarcest_class']} "
                    f"({CLASSES[out['scarcest_class']]}), so no draw of {out['shots'][0]} per class exists.")
        show.show(fig, f"probe_{kind.lower()}", table, f"probe_fig_{kind}")
        st.dataframe(table.style.format(precision=3, subset=table.columns[1:]), hide_index=True)
        show.finding(probe_finding(r["layers"], r["logistic"], r["fewshot"])["text"])
else:
    st.info("Features of every layer for both models, then one probe per layer: about a minute on two CPU cores "
            "for the bundled models at 1,000 images.")
