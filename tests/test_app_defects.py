"""The app's defects a new user found (issue 15), each checked as a user meets it: the page's defaults, then the
control the user moves."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from test_app import cnn_run, ok, open_page, widget

import vitlens
from vitlens.data import load_tensors
from vitlens.data.fashion_mnist import CLASSES as FASHION_CLASSES
from vitlens.images import preprocess, sample_image
from vitlens.models.loading import WEIGHTS_DIR


def test_explain_class_follows_a_model_change():
    at = open_page("attention")
    other = (int(at.dataframe[0].value["index"][0]) + 3) % 10
    ok(widget(at, "selectbox", "Explain class").set_value(other).run())
    at.sidebar.selectbox(key="bundled").set_value("demo:vit-fashion-ft")
    ok(at.run())
    top = int(at.dataframe[0].value["index"][0])
    assert widget(at, "selectbox", "Explain class").value == top  # the new model's own top class, not the old pick


def test_a_cnn_in_the_sidebar_gets_a_message_for_the_page_it_is_on(tmp_path, monkeypatch):
    cnn_run(tmp_path, monkeypatch)
    at = open_page("model")
    at.sidebar.radio(key="source_kind").set_value("Runs folder").run()
    said = {}
    for page in ("attention", "posembed", "distance", "compare", "probe", "bias", "explorer"):
        at.switch_page(f"views/{page}.py")
        at.run()
        assert not at.exception
        said[page] = at.warning[0].value
    assert "attention" in said["attention"] and "position embeddings" in said["posembed"]
    assert "attention distance" in said["distance"]
    assert "ViT vs CNN page" not in said["compare"] and "box below" in said["compare"]  # not sent to itself
    assert len(set(said.values())) == len(said)  # no page repeats another's text


def test_the_input_panel_shows_what_the_model_sees():
    """The bundled ViT sees a 28 x 28 grayscale image: the panel is that image, magnified by whole pixels (no
    smoothing, no colour), not a colour photo."""
    at = open_page("attention")
    at.radio(key="attn_kind").set_value("Sample photo").run()
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    source = next(t["source"] for t in spec["data"] if t.get("type") == "image" and t.get("name") == "input")
    import base64
    import io

    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1]))).convert("RGB"))
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()  # grayscale
    scale = pixels.shape[0] // 28
    assert pixels.shape[:2] == (28 * scale, 28 * scale) and scale >= 8
    blocks = pixels[..., 0].reshape(28, scale, 28, scale)
    assert (blocks == blocks[:, :1, :, :1]).all()  # every model pixel a flat square: no smoothing


def test_model_page_shows_every_architecture_row_and_the_cards_test_accuracy():
    at = open_page("model")
    card = json.loads((WEIGHTS_DIR / "vit-fashion.json").read_text())
    shown = {m.label: m.value for m in at.metric}
    assert shown["Test accuracy"] == f"{100 * card['test_accuracy']:.2f} %"
    fields = at.table[0].value  # a table shows every row; a dataframe scrolls past the last ones
    assert len(fields) == len(vitlens.load_model("demo:vit-fashion").config)


def test_inductive_bias_figures_have_their_own_titles_and_say_how_many_images_each_probe_used():
    at = open_page("bias")
    at.select_slider(key="bias_n").set_value(256)
    ok(at.button(key="bias_run").click().run())
    titles = [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]
    assert len(set(titles)) == len(titles), titles  # the two receptive-field figures shared one title
    translation = next(t for t in titles if t.startswith("Translation"))
    assert "the first 64 of the 256 images" in translation, translation
    occlusion = next(t for t in titles if t.startswith("Occlusion"))
    assert "256 images" in occlusion and "of the" not in occlusion


def test_pages_say_what_the_paper_found_and_what_this_model_shows():
    """The distance plot draws the uniform-attention line on an axis from 0 (12.5-15.5 px made uniform attention look
    structured), and each page states its finding from the numbers on screen."""
    at = open_page("distance")
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert spec["layout"]["yaxis"]["range"][0] == 0
    assert any(shape.get("line", {}).get("dash") == "dash" for shape in spec["layout"]["shapes"])
    assert any("This model:" in c.value and "uniform attention" in c.value for c in at.markdown), at.markdown
    at = open_page("posembed")
    assert any("This model:" in c.value and "grid neighbour" in c.value for c in at.markdown)
    at = open_page("probe")
    at.select_slider(key="probe_test").set_value(100)
    at.multiselect(key="probe_shots").set_value([1])
    ok(at.button(key="probe_run").click().run())
    assert sum("This model:" in c.value and "peaks at" in c.value for c in at.markdown) == 2  # ViT and CNN


def test_side_by_side_shows_two_models_with_the_same_settings_and_one_distance_scale():
    at = open_page("attention")
    at.sidebar.toggle(key="side_by_side").set_value(True)
    ok(at.run())
    assert [h.value for h in at.main.header] == ["`demo:vit-fashion`", "`demo:vit-fashion-ft`"]
    assert len(at.get("plotly_chart")) == 8  # rollout, gradient rollout, heads, patch per layer: twice
    ok(widget(at, "selectbox", "Head fusion").set_value("max").run())  # one control, both models
    assert sum("(max over heads)" in s.value for s in at.subheader) == 2
    at.switch_page("views/distance.py")
    ok(at.run())
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")][:2]
    assert specs[0]["layout"]["yaxis"]["range"] == specs[1]["layout"]["yaxis"]["range"]
    at.switch_page("views/posembed.py")
    ok(at.run())
    assert len([c for c in at.get("plotly_chart")]) == 6  # similarity, after the resolution change, filters: twice


def _probabilities(source: str, x: torch.Tensor | Image.Image) -> torch.Tensor:
    """The model's class probabilities for a 28 x 28 image in [0, 1] (normalised with the model's mean and std by
    hand), or for a photo (through the model's eval transform)."""
    model = vitlens.load_model(source).eval()
    mean, std = (torch.tensor(model.data_config[k]).view(-1, 1, 1) for k in ("mean", "std"))
    x = ((x - mean) / std)[None] if isinstance(x, torch.Tensor) else preprocess(x, model.data_config)
    with torch.no_grad():
        return model(x).softmax(-1)[0]


def test_vit_vs_cnn_explains_one_class_in_both_models_chosen_by_the_user():
    """Issue 15, point 5: on test image 17 (a coat) both models' maps and curves explain its true class by default,
    then the class picked; each model's probability of it is shown; a photo starts at the ViT's top class."""
    x, y = load_tensors("test", 18)
    truth = int(y[17])
    probs = {s: _probabilities(s, x[17]) for s in ("demo:vit-fashion", "demo:cnn-fashion")}
    at = open_page("compare")
    at.radio(key="cmp_kind").set_value("Fashion-MNIST test image").run()
    at = ok(at.number_input(key="cmp_fashion").set_value(17).run())
    for chosen in (truth, (truth + 3) % 10):
        if chosen != truth:
            at = ok(widget(at, "selectbox", "Explain class (both models)").set_value(chosen).run())
        assert widget(at, "selectbox", "Explain class (both models)").value == chosen
        assert set(at.dataframe[-1].value["class"]) == {chosen}  # every map of both models, and its curves
        shown = [float(m.value) for m in at.metric]
        assert [m.label for m in at.metric] == [f"Probability of {FASHION_CLASSES[chosen]}"] * 2
        assert shown == pytest.approx([float(probs[s][chosen]) for s in probs], abs=1e-3)
    at.radio(key="cmp_kind").set_value("Sample photo").run()
    top = int(_probabilities("demo:vit-fashion", sample_image(at.selectbox(key="cmp_photo").value)).argmax())
    assert widget(at, "selectbox", "Explain class (both models)").value == top
    assert set(at.dataframe[-1].value["class"]) == {top}
